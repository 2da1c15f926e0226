"""Registering a dataset from a file in the data folder: which files there are, and column
names and types proposed from a file's *schema* alone.

The proposal never carries a value of the data: no bounds, no category values, no counts, no
sizes. Bounds and category values are public metadata the steward declares; reading them from
the data would make them depend on the very individuals the noise protects. The schema comes
from DuckDB's ``DESCRIBE`` in a source sandbox (``engine/schema.py``): a Parquet footer or a
DuckDB catalog holds names and types only; for a CSV file DuckDB's sniffer reads a sample of
rows to infer the types, and only the types leave it. An ``ENUM`` type's member list is
dropped from the proposal (it can list values).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SUFFIXES = (".parquet", ".csv")
MAX_FILES = 1000
_INTEGER = re.compile(r"^U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)$")
_FLOAT = re.compile(r"^(FLOAT|DOUBLE|REAL|DECIMAL\(\d+,\s*\d+\))$")
_DATE = re.compile(r"^(DATE|TIMESTAMP(_S|_MS|_NS)?|TIMESTAMP WITH TIME ZONE)$")
_SCALAR = re.compile(r"^(VARCHAR|BOOLEAN|UUID|ENUM\b.*)$", re.DOTALL)
#: what the steward must still declare for each proposed type
NEEDS = {"int": "bounds", "float": "bounds", "date": "bounds", "category": "values"}


def list_files(data_dir: Path, forbidden: Sequence[Path] = ()) -> list[str]:
    """Plain ``.parquet`` and ``.csv`` files below ``data_dir`` (symbolic links are neither
    followed nor listed; the gateway's own state is left out), relative, sorted, at most
    ``MAX_FILES``."""
    root = data_dir.resolve()
    skip = {Path(os.path.realpath(p)) for p in forbidden}
    found: list[str] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if here / d not in skip and not (here / d).is_symlink())
        for name in sorted(files):
            path = here / name
            if name.lower().endswith(SUFFIXES) and path not in skip and _plain(path):
                found.append(path.relative_to(root).as_posix())
                if len(found) >= MAX_FILES:
                    return found
    return found


def _plain(path: Path) -> bool:
    try:
        return path.is_file() and not path.is_symlink()
    except OSError:
        return False


def propose(schema: dict[str, str]) -> list[dict[str, Any]]:
    """One entry per source column: ``name``, ``source_type`` (DuckDB's, an ENUM's members
    dropped), the proposed ``type`` (None: cannot be declared) and what the steward must
    still declare for it (``needs``: bounds, values or nothing)."""
    out = []
    for name, duck in schema.items():
        kind = duck.strip().upper()
        proposed = _kind(kind)
        out.append(
            {
                "name": name,
                "source_type": "ENUM" if kind.startswith("ENUM") else duck,
                "type": proposed,
                "needs": NEEDS.get(proposed or ""),
            }
        )
    return out


def _kind(duck: str) -> str | None:
    if _INTEGER.match(duck):
        return "int"
    if _FLOAT.match(duck):
        return "float"
    if _DATE.match(duck):
        return "date"
    if _SCALAR.match(duck):
        return "category"
    return None
