"""The synthetic table itself: OpenDP's MST over the bounded table, run in a child process.

``synthesize(task)`` is what the job runner hands to a child (``engine/child.py``): it builds
the OpenDP measurement from public inputs only (the columns' declared values and bounds, ``k``
and the epsilon cap), checks its privacy map against the cap, and only then reads the bounded
table. The mechanism is ``mbi.make_contingency_table(..., algorithm=mbi.MST())`` from
``opendp.extras.mbi`` (extra ``enclave-gateway[synth]``: ``opendp[mbi]``, which brings
Private-PGM's ``mbi``, JAX and Polars):

- input: a frame of the chosen columns, every value a text key: a category column's declared
  value (anything else, and NULL, become OpenDP's null key), a numeric column's bin label;
- privacy unit: neighbouring tables differ by one unit's rows, at most ``k`` after the
  gateway's bounding, i.e. symmetric distance ``k`` (``dp.unit_of(contributions=k)``), the same
  unit every query uses;
- output measure: pure DP (``max_divergence``): every key is declared, so no delta;
- half the epsilon measures every one-way marginal (discrete Laplace, one scale); the other
  half selects ``columns - 1`` pairs by a noisy max over how badly the model fits them (10%)
  and measures those two-way marginals (90%); Private-PGM fits a graphical model to the noisy
  marginals and samples ``rows`` rows from it (post-processing).

Numeric columns are binned on their *declared* bounds (public metadata), never on the data:
int ``[L, H]`` into ``min(bins, H - L + 1)`` ranges of whole numbers, float into ``bins``
equal widths, from the gateway's clamped column. A synthetic value is drawn uniformly inside
its bin (post-processing, from a seeded generator; no privacy rests on it).

Any failure here reaches the parent as a fixed text (``ChildPool``): nothing of the data.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLAMPED_SUFFIX = "#clamped"  # engine/bounding.py's clamped copy of a bounded numeric column
RESULT_FILES = {"parquet": "synthetic.parquet", "csv": "synthetic.csv"}
REPORT_FILE = "report.json"


@dataclass(frozen=True)
class SynthColumn:
    name: str
    type: str  # "category" | "int" | "float"
    keys: tuple[str, ...]  # category: declared values; numeric: bin labels
    edges: tuple[float, ...] = ()  # numeric: len(keys) + 1 bin edges (ints: [e_i, e_{i+1}))

    @property
    def source(self) -> str:
        return self.name if self.type == "category" else self.name + CLAMPED_SUFFIX


@dataclass(frozen=True)
class SynthTask:
    bounded: str  # the bounded Parquet file (engine/bounding.py)
    columns: tuple[SynthColumn, ...]
    k: int
    epsilon: float  # the cap: OpenDP's map must not exceed it
    rows: int
    out_dir: str


def numeric_column(name: str, type_: str, low: float, high: float, bins: int) -> SynthColumn:
    """Bins from the declared bounds only."""
    if type_ == "int":
        lo, hi = int(low), int(high)
        n = hi - lo + 1
        b = max(1, min(bins, n))
        edges = tuple(float(lo + (i * n) // b) for i in range(b + 1))
        keys = tuple(f"{int(edges[i])}..{int(edges[i + 1]) - 1}" for i in range(b))
    else:
        width = (float(high) - float(low)) / bins
        edges = tuple(float(low) + i * width for i in range(bins)) + (float(high),)
        keys = tuple(
            f"[{edges[i]:g}, {edges[i + 1]:g}{']' if i == bins - 1 else ')'}" for i in range(bins)
        )
    return SynthColumn(name=name, type=type_, keys=keys, edges=edges)


def build(task: SynthTask) -> tuple[Any, Any, float]:
    """The OpenDP measurement, its ``d_in`` and the one-way marginals' scale (no data)."""
    import opendp.prelude as dp
    from opendp.extras import mbi

    dp.enable_features("contrib")
    unit, d_in = dp.unit_of(contributions=task.k)
    bounds: Any = d_in  # one unit: at most k rows (symmetric distance k)
    domain = dp.lazyframe_domain(
        [
            dp.series_domain(c.name, dp.option_domain(dp.atom_domain(T=dp.String)))
            for c in task.columns
        ]
    )
    meas, scale, _ = mbi.make_contingency_table(
        domain,
        unit,
        dp.max_divergence(),
        bounds,
        task.epsilon,
        keys={c.name: list(c.keys) for c in task.columns},
        algorithm=mbi.MST(),
    )
    return meas, bounds, float(scale or 0.0)


def privacy_map(task: SynthTask) -> float:
    """OpenDP's privacy map of the release at ``k`` (public inputs only)."""
    meas, d_in, _ = build(task)
    return float(meas.map(d_in))


def synthesize(task: SynthTask) -> dict[str, Any]:
    """Build, check the map, read the bounded table, release; write the files and the report
    into ``task.out_dir``; return the report."""
    import numpy as np
    import polars as pl

    meas, d_in, scale = build(task)
    epsilon = float(meas.map(d_in))
    if not epsilon <= task.epsilon:  # never read the data for a release over its cap
        raise ValueError("the release's privacy map exceeds its cap")
    # ---- from here on the bounded table is read ----
    frame = pl.scan_parquet(task.bounded).select(
        [_keyed(pl, c).alias(c.name) for c in task.columns]
    )
    table = meas(frame)
    synthetic = table.synthesize(task.rows)
    rng = np.random.default_rng(secrets.randbits(128))  # post-processing only
    out = pl.DataFrame([_values(pl, np, rng, c, synthetic[c.name]) for c in task.columns]).sample(
        fraction=1.0, shuffle=True, seed=int(rng.integers(2**31))
    )
    folder = Path(task.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out.write_parquet(folder / RESULT_FILES["parquet"])
    write_csv(out, folder / RESULT_FILES["csv"])
    report = _report(task, table, epsilon, scale, out.height)
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=1, allow_nan=False))
    return report


def write_csv(frame: Any, path: Path) -> None:
    """The rows as CSV for a spreadsheet: a text cell it could read as a formula (a declared
    category value ``=…``) gets a leading ``'`` (``neutralise``, as in the audit export); the
    Parquet file, which the release's digest covers, keeps every value as released."""
    import polars as pl

    from enclave.audit.export import neutralise

    text = pl.col(pl.String).map_elements(neutralise, return_dtype=pl.String)
    frame.with_columns(text).write_csv(path)


def _keyed(pl: Any, col: SynthColumn) -> Any:
    """A column's text key: declared categories as they are, numbers by bin label."""
    if col.type == "category":
        return pl.col(col.source).cast(pl.String)
    inner = list(col.edges[1:-1])
    return (
        pl.col(col.source)
        .cast(pl.Float64)
        .cut(inner, labels=list(col.keys), left_closed=True)
        .cast(pl.String)
    )


def _values(pl: Any, np: Any, rng: Any, col: SynthColumn, labels: Any) -> Any:
    """Synthetic values of one column: categories as released; numbers drawn in their bin."""
    if col.type == "category":
        return labels.cast(pl.String).alias(col.name)
    index = {key: i for i, key in enumerate(col.keys)}
    idx = np.array([index.get(v, -1) for v in labels.to_list()], dtype=np.int64)
    missing = idx < 0
    safe = np.where(missing, 0, idx)
    edges = np.asarray(col.edges)
    low, high = edges[safe], edges[safe + 1]
    if col.type == "int":
        drawn = rng.integers(low.astype(np.int64), high.astype(np.int64))  # [e_i, e_{i+1})
        ints = [None if m else int(v) for m, v in zip(missing, drawn, strict=True)]
        return pl.Series(col.name, ints, dtype=pl.Int64)
    drawn = rng.uniform(low, high)
    floats = [None if m else float(v) for m, v in zip(missing, drawn, strict=True)]
    return pl.Series(col.name, floats, dtype=pl.Float64)


def _report(task: SynthTask, table: Any, epsilon: float, scale: float, rows: int) -> dict[str, Any]:
    """The DP marginals the model was fitted to, with their noise (all released values)."""
    marginals = []
    for m in table.marginals.flatten():
        stddev = float(m.stddev)
        marginals.append(
            {
                "columns": list(m.clique),
                "noise": "discrete Laplace",
                "scale": stddev / math.sqrt(2),  # Laplace: stddev = scale * sqrt(2)
                "stddev": stddev,
                "counts": [float(v) for v in m.noisy_measurement],
            }
        )
    return {
        "mechanism": "MST (OpenDP opendp.extras.mbi, Private-PGM)",
        "epsilon": epsilon,
        "delta": 0.0,
        "max_rows_per_unit": task.k,
        "rows": rows,
        "oneway_scale": scale,
        "columns": {
            c.name: {
                "type": c.type,
                "keys": [*c.keys, None],  # None: missing or undeclared values
                **({"bin_edges": list(c.edges)} if c.edges else {}),
            }
            for c in task.columns
        },
        "marginals": marginals,
    }
