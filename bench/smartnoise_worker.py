"""Runs INSIDE the smartnoise virtual environment (bench/out/snvenv): never imports enclave.

Reads one JSON job from argv[1], prints one JSON result on stdout.

SmartNoise SQL's PostgreSQL dialect is run over DuckDB through ``DuckConnection``, a minimal
DB-API adapter (``cursor()``, ``execute``, ``description``, iteration, ``commit``,
``rollback``): that is all ``snsql.sql.reader.postgres.PostgresReader`` calls. The table is a
DuckDB view ``bench.visits`` over the same Parquet file the gateway reads, so both engines scan
the same bytes with the same DuckDB version. The metadata gives the same ``max_ids`` (our
``max_rows_per_unit``) and the same bounds as ``policies/datasets/visits.yaml``;
``censor_dims`` is off because our groups are the declared keys (no thresholding), so neither
side spends delta on them.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import duckdb
import snsql  # type: ignore[import-not-found,unused-ignore]

#: DuckDB 2.0 refuses a volatile ``ORDER BY RANDOM()`` inside a window, which is how SmartNoise
#: samples ``max_ids`` rows per person. The adapter computes ``random() AS _sn_rand`` in a
#: projection just below the window (a fresh value per row and per query) and orders by that
#: column instead: the same uniform random choice of rows, in a form DuckDB accepts.
_RANDOM_WINDOW = re.compile(
    r"SELECT \*, ROW_NUMBER \( \) OVER \( PARTITION BY (\S+) ORDER BY RANDOM \( \) \) "
    r"AS row_num FROM \((.*?)\) AS clamped",
    re.DOTALL,
)
_REWRITE = (
    r"SELECT * EXCLUDE (_sn_rand), ROW_NUMBER() OVER (PARTITION BY \1 ORDER BY _sn_rand) "
    r"AS row_num FROM (SELECT *, random() AS _sn_rand FROM (\2) AS clamped0) AS clamped"
)


class DuckCursor:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._cur = con.cursor()
        self.description: Any = None
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str) -> None:
        self._cur.execute(_RANDOM_WINDOW.sub(_REWRITE, sql))
        self.description = self._cur.description
        self._rows = self._cur.fetchall() if self.description is not None else []

    def __iter__(self) -> Any:
        return iter(self._rows)


class DuckConnection:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def cursor(self) -> DuckCursor:
        return DuckCursor(self._con)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


def metadata(max_ids: int) -> dict[str, Any]:
    return {
        "bench": {
            "bench": {
                "visits": {
                    "max_ids": max_ids,
                    "row_privacy": False,
                    "sample_max_ids": True,
                    "censor_dims": False,
                    "clamp_counts": False,
                    "clamp_columns": True,
                    "use_dpsu": False,
                    "person_id": {"type": "string", "private_id": True},
                    "age": {"type": "int", "lower": 0, "upper": 110},
                    "sex": {"type": "string"},
                    "region": {"type": "string"},
                    "cost": {"type": "float", "lower": 0.0, "upper": 50000.0},
                    "visit_date": {"type": "datetime"},
                }
            }
        }
    }


def main() -> None:
    job = json.loads(sys.argv[1])
    con = duckdb.connect(config={"threads": job["threads"], "memory_limit": job["memory_limit"]})
    # like the gateway's bounding connection: spill to disk rather than fail at the limit
    con.execute("SET temp_directory = ?", [job["temp_dir"]])
    path = job["parquet"].replace("'", "''")
    con.execute("CREATE SCHEMA bench")
    con.execute(f"CREATE VIEW bench.visits AS SELECT * FROM read_parquet('{path}')")  # noqa: S608
    out: dict[str, Any] = {
        "versions": {
            "smartnoise-sql": _version("smartnoise-sql"),
            "opendp": _version("opendp"),
            "duckdb": duckdb.__version__,
        },
        "queries": {},
    }
    for name, sql in job["queries"]:
        limit = job["memory_limit"]
        result = _run(con, job, sql)
        if result["error"] and "OutOfMemory" in result["error"] and job.get("retry_memory_limit"):
            # report the failure at the gateway's limit, then measure with more memory
            limit = job["retry_memory_limit"]
            con.execute("SET memory_limit = ?", [limit])
            result = {**_run(con, job, sql), "oom_at": job["memory_limit"]}
            con.execute("SET memory_limit = ?", [job["memory_limit"]])
        out["queries"][name] = {**result, "memory_limit": limit}
    print(json.dumps(out))


def _run(con: duckdb.DuckDBPyConnection, job: dict[str, Any], sql: str) -> dict[str, Any]:
    times: list[float] = []
    sample: list[list[str]] = []
    for rep in range(job["warmup"] + job["reps"]):
        privacy = snsql.Privacy(epsilon=job["epsilon"] + rep * 1e-6, delta=job["delta"])
        reader = snsql.from_connection(
            DuckConnection(con),
            privacy=privacy,
            metadata=metadata(job["max_ids"]),
            engine="postgres",
        )
        started = time.perf_counter()
        try:
            rows = reader.execute(sql)
        except Exception as exc:
            return {"times": times, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        if rep >= job["warmup"]:
            times.append(time.perf_counter() - started)
        if rep == 0:
            sample = [list(map(str, r)) for r in rows[:3]]
    return {"times": times, "error": None, "sample": sample}


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
