"""Rate-limit counters in the store, written once for both adapters.

A counter is one row per ``(key, win)``: ``win`` is a fixed one-minute window number
(``floor(unix_seconds / 60)``), ``hits`` the requests counted in it. One statement adds a
hit to every key of a request and returns the new counts (an upsert with ``RETURNING``, which
SQLite ≥ 3.35 and PostgreSQL share), so every replica on the store sees the same counts. Rows
of past windows are swept by whichever process first counts in a new window.

The counters are not worth an fsync: losing the last second's counts in a crash only lets a
client make a few more requests. So the adapters commit this one statement without waiting
for the disk (SQLite ``synchronous=NORMAL`` for the statement, PostgreSQL
``synchronous_commit = off``); every other write keeps its full durability.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

Style = Literal["qmark", "numeric"]  # sqlite3 "?" / asyncpg "$1"


def _marks(count: int, style: Style, start: int = 1) -> list[str]:
    if style == "qmark":
        return ["?"] * count
    return [f"${i}" for i in range(start, start + count)]


def hit_sql(n_keys: int, style: Style) -> str:
    """Add one hit to each of ``n_keys`` keys (distinct) in one window; returns key, hits."""
    marks = _marks(2 * n_keys, style)
    rows = ", ".join(f"({marks[2 * i]}, {marks[2 * i + 1]}, 1)" for i in range(n_keys))
    return (
        f"INSERT INTO rate_counters (key, win, hits) VALUES {rows} "  # noqa: S608 (placeholders only)
        "ON CONFLICT (key, win) DO UPDATE SET hits = rate_counters.hits + 1 "
        "RETURNING key, hits"
    )


def hit_args(keys: Sequence[str], win: int) -> list[Any]:
    args: list[Any] = []
    for key in keys:
        args.extend((key, win))
    return args


def sweep_sql(style: Style) -> str:
    """Delete the counters of windows before the given one."""
    return f"DELETE FROM rate_counters WHERE win < {_marks(1, style)[0]}"  # noqa: S608


def counts(rows: Sequence[Any]) -> dict[str, int]:
    return {str(row[0]): int(row[1]) for row in rows}
