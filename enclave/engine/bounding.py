"""Per-unit truncation, done once per dataset version ("bounding").

Every privacy unit keeps at most ``max_rows_per_unit`` rows. Which rows is a random choice,
fixed for the dataset version, independent across units and never influenced by a query:
rows are ranked within their unit by ``md5_number(secret seed | unit | row content)``.

Decisions (measured on 2 cores, DuckDB 2.0; see the engine report for numbers):

- *Why a hash, not* ``random()``: DuckDB refuses a volatile expression in a window's ORDER BY,
  and ``random()`` would not be reproducible across restarts anyway.
- *Why md5, not DuckDB's* ``hash()``: ``hash(a, b, c)`` combines per-argument hashes with a
  cheap non-cryptographic mix, so the seed would shift every row of a unit alike and the order
  inside a unit would barely depend on it. md5 of the concatenated text mixes the secret into
  every bit. It cost ~15% more than ``hash()`` on the window (0.59 s vs 0.50 s for 1M rows;
  sha256 doubled it), which is a once-per-version cost.
- *Why row content, not row position*: the ranking is then the same whatever the source
  format (Parquet, CSV, DuckDB table), read order or thread count. Ties can only happen
  between byte-identical rows of one unit, which are interchangeable; the declared columns
  follow as a deterministic tie-break for the (astronomically unlikely) md5 collision.
- *Only heavy units are ranked*: units with ``<= k`` rows are kept whole through an anti join,
  and only the rows of units with more than ``k`` go through the window. Same result, about
  twice as fast (10M rows: 4.2 s vs 7.8 s).
- Rows whose privacy unit is NULL are dropped: their contributor is unknown, so no bound on
  a person's contribution could hold if they were kept.
- *Clamped columns*: every int/float column with bounds also gets ``<name>#clamped`` (see
  ``clamped_name``), its value clamped to the stored bounds (below), NULL kept NULL, stored exactly:
  ``BIGINT`` for int columns, ``DECIMAL(18,6)`` for float columns whose bounds lie within
  ±1e11 (an int64 underneath: summing it is as fast as a raw ``SUM``), else ``DECIMAL(38,6)``.
  Queries then sum a stored column instead of clamping and casting every row (10M rows:
  ~90 ms instead of ~270 ms). ``WHERE`` still filters on the raw column, so the contract's order
  (truncate, filter, clamp) is kept: clamping is a per-row function, so clamping before or
  after the filter gives the same rows. The bounds are in the fingerprint, and
  ``_FORMAT`` names this schema, so a file from an older layout is never reused. The ``#``
  cannot occur in a declared column name (``[A-Za-z_][A-Za-z0-9_]*``), so no name collides.

*Two connections, so that no source SQL ever meets the seed* (``engine/sandbox.py``): the
source is read in a *source sandbox* (allowed to read the source file and a fresh private work
folder, nothing else), which writes the declared columns, cast and made total (below), to a
staged Parquet file in that work folder. The ranking then runs in a second hardened connection
that reads only the staged file (plain data: Parquet holds no code) and receives the seed as a
bound parameter, never as a variable, a literal or a file a view could read. The bounded table
is written into the work folder and renamed into ``<state_dir>/bounded/``.

*Values made total*: every declared column is read with ``TRY_CAST``; float values that are NaN
or infinite and dates outside years 1..9999 become NULL, in every column (keys and the privacy
unit too), as does any value that does not fit its declared type. Nothing after the data is
read can then fail on a value (sorting keys, digests, Python's ``date``).

*Inward clamping*: float columns are clamped to their bounds rounded inward to the stored
precision (``stored_bounds``: the lower bound up, the upper bound down, to ``STORED_DECIMALS``
decimals), so a stored value never lies outside the declared bounds after rounding.

The secret seed is 32 bytes from ``secrets`` in ``<state_dir>/truncation.key`` (mode 0600),
created once (atomically: written aside, then hard-linked into place) and reused. Only its
SHA-256 "seed id" enters file names and fingerprints. The bounded table is written to
``<state_dir>/bounded/<name>-v<version>-<fingerprint16>.parquet`` by an atomic rename, and is
reused on restart when present. Processes sharing ``state_dir`` (``server.processes`` > 1)
bound a version once: a file lock per version makes the others wait, then reuse the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb

from enclave.engine.layout import clamped_columns_sql, ident, lit
from enclave.engine.sandbox import open_sandbox, open_source
from enclave.errors import DatasetUnavailable
from enclave.models import ColumnSpec, DatasetSpec

log = logging.getLogger(__name__)

KEY_FILE = "truncation.key"
BOUNDED_DIR = "bounded"
WORK_DIR = "prepare"  # private per-preparation work folders (staged data, DuckDB spill)
_KEY_BYTES = 32
_ALGORITHM = "bound-v1:md5-content"  # bump when the ranking changes: old files are not reused
_FORMAT = "bounded-v3:total-values-inward-clamp"  # bump when the bounded table's content changes
_SQL_TYPES = {
    "int": "BIGINT",
    "float": "DOUBLE",
    "category": "VARCHAR",
    "date": "DATE",
    "identifier": "VARCHAR",
}
_FIRST_DATE, _LAST_DATE = "DATE '0001-01-01'", "DATE '9999-12-31'"


@dataclass(frozen=True)
class BoundTarget:
    """Where the bounded table for one dataset version lives, and its fingerprint."""

    path: Path
    fingerprint: str
    #: whether this call bounded it (False: the file existed, or another process made it)
    made: bool = field(default=False, compare=False)


def load_or_create_key(state_dir: Path) -> bytes:
    """Return the secret truncation seed, creating it (mode 0600) on first use."""
    state_dir.mkdir(parents=True, exist_ok=True)
    key_path = state_dir / KEY_FILE
    if not key_path.exists():
        tmp = state_dir / f".{KEY_FILE}.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, key_path)  # atomic, never overwrites a key another process made
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = key_path.read_bytes()
    if len(key) != _KEY_BYTES:
        raise DatasetUnavailable("the truncation key is malformed")
    return key


def seed_id(key: bytes) -> str:
    """A public name for the key: safe to put in file names and logs."""
    return hashlib.sha256(b"enclave-truncation-seed-id:" + key).hexdigest()[:16]


def bounded_target(spec: DatasetSpec, state_dir: Path, key: bytes) -> BoundTarget:
    """Fingerprint ``spec`` and its source file, and name the bounded Parquet file."""
    try:
        st = os.stat(spec.source_path)
    except (OSError, ValueError):
        raise DatasetUnavailable("the dataset source is not readable") from None
    material = {
        "algorithm": _ALGORITHM,
        "format": _FORMAT,
        "name": spec.name,
        "version": spec.version,
        "source": str(spec.source_path),
        "table": spec.source_table,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": [st.st_dev, st.st_ino],
        "unit": spec.privacy_unit,
        "k": spec.max_rows_per_unit,
        "columns": [[c.name, c.type, _bounds_text(c)] for c in _columns(spec)],
        "seed": seed_id(key),
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.name)
    path = state_dir / BOUNDED_DIR / f"{safe}-v{spec.version}-{digest[:16]}.parquet"
    return BoundTarget(path=path, fingerprint=digest)


def new_work_dir(state_dir: Path) -> Path:
    """A fresh private folder (mode 0700) for one preparation; the caller removes it."""
    work = Path(state_dir).resolve() / WORK_DIR / uuid.uuid4().hex
    work.mkdir(parents=True, mode=0o700)
    return work


def bound_dataset(
    spec: DatasetSpec,
    state_dir: Path,
    *,
    key: bytes | None = None,
    threads: int = 2,
    memory_limit: str = "2GB",
    work_dir: Path | None = None,
) -> BoundTarget:
    """Materialize the bounded table for ``spec`` (or reuse it); return where it is.

    ``work_dir``: a folder from ``new_work_dir`` that the caller removes (the warehouse does,
    even when it had to kill the process running this); without it one is made and removed
    here. Raises ``DatasetUnavailable`` with a fixed text on any failure.
    """
    state_dir = Path(state_dir).resolve()
    key = load_or_create_key(state_dir) if key is None else key
    target = bounded_target(spec, state_dir, key)
    if target.path.exists():
        return target
    with preparation_lock(state_dir, target):
        if target.path.exists():  # another process bounded it while this one waited
            return target
        return _bound(spec, state_dir, key, target, threads, memory_limit, work_dir)


@contextlib.contextmanager
def preparation_lock(state_dir: Path, target: BoundTarget) -> Iterator[None]:
    """Hold ``<state_dir>/prepare/<target>.lock`` (``flock``), so that processes sharing the
    state folder (worker processes, replicas on one disk) bound one version once: the others
    wait and then reuse the file. The kernel releases the lock when its holder exits or is
    killed at its deadline. Lock files stay (one empty file per version)."""
    folder = state_dir / WORK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{target.path.stem}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _bound(
    spec: DatasetSpec,
    state_dir: Path,
    key: bytes,
    target: BoundTarget,
    threads: int,
    memory_limit: str,
    work_dir: Path | None,
) -> BoundTarget:
    own_work = work_dir is None
    work = new_work_dir(state_dir) if work_dir is None else work_dir
    staged, out = work / "staged.parquet", work / "bounded.parquet"
    try:
        src, source = open_source(spec, work, threads=threads, memory_limit=memory_limit)
        try:
            src.execute(
                f"COPY ({_staging_sql(spec, source)}) TO {lit(str(staged))} (FORMAT parquet)"
            )
        finally:
            src.close()
        con = open_sandbox(dirs=(work,), temp_dir=work, threads=threads, memory_limit=memory_limit)
        try:
            con.execute(
                f"COPY ({_bounding_sql(spec, staged)}) TO {lit(str(out))} (FORMAT parquet)",
                [key.hex()],
            )
        finally:
            con.close()
        target.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out, target.path)
        target = replace(target, made=True)
    except (duckdb.Error, OSError, ValueError) as exc:
        log.warning(
            "bounding dataset %s v%d failed (%s)", spec.name, spec.version, type(exc).__name__
        )
        raise DatasetUnavailable("the dataset source could not be read") from None
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    return target


def total_value_sql(col: ColumnSpec, source: str) -> str:
    """``source`` cast to ``col``'s type, NULL where it does not fit or cannot round-trip."""
    cast = f"TRY_CAST({source} AS {_SQL_TYPES[col.type]})"
    if col.type == "float":
        return f"CASE WHEN isfinite({cast}) THEN {cast} END"
    if col.type == "date":
        return f"CASE WHEN {cast} BETWEEN {_FIRST_DATE} AND {_LAST_DATE} THEN {cast} END"
    return cast


def _bounds_text(col: ColumnSpec) -> list[str] | None:
    if col.bounds is None:
        return None
    return [repr(b) for b in col.bounds]


def _columns(spec: DatasetSpec) -> list[ColumnSpec]:
    """Declared columns, plus the privacy unit if it was not declared (as an identifier)."""
    cols = list(spec.columns)
    if spec.column(spec.privacy_unit) is None:
        cols.insert(0, ColumnSpec(name=spec.privacy_unit, type="identifier"))
    return cols


def _staging_sql(spec: DatasetSpec, source: str) -> str:
    """Run in the source sandbox: the declared columns, total, nothing else."""
    select = ", ".join(
        f"{total_value_sql(c, ident(c.name))} AS {ident(c.name)}" for c in _columns(spec)
    )
    return f"SELECT {select} FROM {source}"  # noqa: S608 - identifiers quoted, source ours


def _bounding_sql(spec: DatasetSpec, staged: Path) -> str:
    """Run in the trusted connection over the staged file; ``?`` is the seed (hex)."""
    cols = _columns(spec)
    unit_col = spec.column(spec.privacy_unit)
    unit = ident(unit_col.name if unit_col else spec.privacy_unit)
    names = [ident(c.name) for c in cols]
    rank_text = ", ".join(["?", *names])
    k = int(spec.max_rows_per_unit)
    clamped = "".join(", " + c for c in clamped_columns_sql(spec))
    return f"""
    WITH src AS (SELECT * FROM read_parquet({lit(str(staged))}) WHERE {unit} IS NOT NULL),
    heavy AS (SELECT {unit} FROM src GROUP BY {unit} HAVING count(*) > {k})
    SELECT *{clamped} FROM (
        SELECT * FROM src ANTI JOIN heavy USING ({unit})
        UNION ALL
        SELECT * EXCLUDE (enclave_rank) FROM (
            SELECT *, row_number() OVER (
                PARTITION BY {unit}
                ORDER BY md5_number(concat_ws('|', {rank_text})), {", ".join(names)}
            ) AS enclave_rank
            FROM src SEMI JOIN heavy USING ({unit})
        ) WHERE enclave_rank <= {k}
    )
    """  # noqa: S608 - identifiers are quoted, k is an int, the seed is a bound parameter
