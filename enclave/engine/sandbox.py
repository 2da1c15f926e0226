"""Hardened DuckDB connections, and opening a dataset's source inside one.

Every DuckDB connection of the gateway is made by ``open_sandbox`` (DuckDB "Securing DuckDB"):
``autoinstall_known_extensions`` and ``autoload_known_extensions`` off, ``allowed_paths`` and
``allowed_directories`` set to exactly what the connection needs, then
``enable_external_access = false``, ``memory_limit``, ``threads`` and finally
``lock_configuration = true``. After that no SQL, not even a view stored in a source file, can
read or write another file, attach another database, load an extension or change a setting.

A source is code, not only data: a ``.duckdb`` file can hold views (and macros) that call
``read_text``, ``read_csv``, ``getvariable`` or ``current_query``. So a source is only ever
opened in a *source sandbox*: a connection allowed to read the source file (and its ``.wal``)
and one fresh, private work folder, holding no secret (no variable, no other file, no
parameter a view could reach). Measured on DuckDB 2.0: with these settings a view calling
``read_text`` on any other path fails with a permission error, ``..`` and ``file://`` paths
included; ``getvariable`` and ``current_query`` still answer, which is why nothing secret is
ever set or written in a source sandbox (``engine/bounding.py`` ranks rows in a second
connection that never runs the source's SQL).

``checked_source`` refuses a source that is not a regular file, or whose real path differs
from its registered path: DuckDB follows symbolic links, so a file swapped
for a link to the gateway's state would otherwise be read as the dataset (and a FIFO, even as a
DuckDB file's ``.wal``, blocks the reader for good: measured). The check runs just before
DuckDB opens the file; the window between the two is a known, narrow limit (docs/security.md,
limits), and the preparation deadline still holds. Hard links are allowed (deployments link
large files into their data folder); Linux's ``protected_hardlinks`` keeps another user from
linking the gateway's own 0600 state files.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import duckdb

from enclave.engine.layout import ident, lit
from enclave.errors import DatasetUnavailable
from enclave.models import DatasetSpec

log = logging.getLogger(__name__)

SOURCE_ALIAS = "enclave_src"


def open_sandbox(
    *,
    read_paths: Sequence[str] = (),
    dirs: Sequence[Path] = (),
    temp_dir: Path | None = None,
    threads: int,
    memory_limit: str,
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection that can touch ``read_paths`` and ``dirs`` only, locked."""
    conn = duckdb.connect(":memory:")
    try:
        conn.execute("SET enable_progress_bar = false")
        conn.execute("SET autoinstall_known_extensions = false")
        conn.execute("SET autoload_known_extensions = false")
        if read_paths:
            conn.execute("SET allowed_paths = ?", [list(read_paths)])
        if dirs:
            conn.execute("SET allowed_directories = ?", [[str(d) + "/" for d in dirs]])
        if temp_dir is not None:
            conn.execute("SET temp_directory = ?", [str(temp_dir)])
            conn.execute("SET preserve_insertion_order = false")
        conn.execute("SET enable_external_access = false")
        conn.execute("SET memory_limit = ?", [memory_limit])
        conn.execute("SET threads = ?", [threads])
        conn.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        conn.close()
        log.error("hardening DuckDB failed (%s)", type(exc).__name__)
        raise DatasetUnavailable("the query engine could not be started") from None
    return conn


def checked_source(spec: DatasetSpec) -> str:
    """``spec``'s source path, after checking it is still a plain file where it was registered."""
    path = str(spec.source_path)
    try:
        st = os.lstat(path)
        real = os.path.realpath(path)
    except (OSError, ValueError):
        raise DatasetUnavailable("the dataset source is not readable") from None
    if not _plain(st) or real != path or not _plain_or_absent(path + ".wal"):
        log.warning("dataset %s: the source is not a plain file where it was registered", spec.name)
        raise DatasetUnavailable("the dataset source is not readable")
    return path


def _plain(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _plain_or_absent(path: str) -> bool:
    """A DuckDB file's ``.wal`` is read too: it must be absent or a plain file (not a FIFO)."""
    try:
        return _plain(os.lstat(path))
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False


def source_paths(spec: DatasetSpec) -> list[str]:
    """What a source sandbox may read: the source file (and a DuckDB file's write-ahead log)."""
    path = str(spec.source_path)
    return [path, path + ".wal"] if spec.source_table is not None else [path]


def open_source(
    spec: DatasetSpec, work_dir: Path, *, threads: int, memory_limit: str
) -> tuple[duckdb.DuckDBPyConnection, str]:
    """A source sandbox for ``spec`` writing only into ``work_dir``, and a FROM clause for it.

    Raises ``DatasetUnavailable`` (fixed text) if the source is not a plain file or cannot be
    opened; the connection is closed on failure.
    """
    path = checked_source(spec)
    conn = open_sandbox(
        read_paths=source_paths(spec),
        dirs=(work_dir,),
        temp_dir=work_dir,
        threads=threads,
        memory_limit=memory_limit,
    )
    try:
        if spec.source_table is not None:
            conn.execute(f"ATTACH {lit(path)} AS {SOURCE_ALIAS} (READ_ONLY)")
            parts = spec.source_table.split(".")
            return conn, SOURCE_ALIAS + "." + ".".join(ident(p) for p in parts)
    except duckdb.Error as exc:
        conn.close()
        log.warning(
            "dataset %s: the source could not be opened (%s)", spec.name, type(exc).__name__
        )
        raise DatasetUnavailable("the dataset source could not be read") from None
    if path.lower().endswith((".csv", ".csv.gz", ".tsv")):
        return conn, f"read_csv({lit(path)}, header = true)"
    return conn, f"read_parquet({lit(path)})"
