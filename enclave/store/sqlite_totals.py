"""Exact running ledger totals for one SQLite connection, kept honest by ``data_version``.

Summing every ledger row of a licence on each query grows with its history (it was a quarter
of the server's time after a few thousand queries). This cache keeps the lifetime totals per
(licence, dataset) in memory, for the store's one connection, on its one worker thread:

- a total is first read by summing the rows, then updated by each charge this connection
  commits (exactly: integer grid units);
- ``PRAGMA data_version`` changes whenever *another* connection commits (another process, a
  second store on the same file, a restore), and then every cached total is dropped;
- inside a write transaction (``BEGIN IMMEDIATE`` holds the write lock) the check is exact, so
  the budget re-check that guards against overspending never reads a stale total;
- budgets with a renewal period (``since`` given) are summed from the rows, as before.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

from enclave.ledger.grid import Amount
from enclave.store import sqlite_ops as ops

Key = tuple[str, str]


class LedgerTotals:
    def __init__(self) -> None:
        self._version: int | None = None
        self._totals: dict[Key, Amount] = {}

    def spent(
        self, conn: sqlite3.Connection, licence_id: str, dataset: str, since: dt.datetime | None
    ) -> Amount:
        if since is not None:
            return ops.spent(conn, licence_id, dataset, since)
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._totals.clear()
            self._version = version
        key = (licence_id, dataset)
        found = self._totals.get(key)
        if found is None:
            found = ops.spent(conn, licence_id, dataset, None)
            self._totals[key] = found
        return found

    def committed(self, licence_id: str, dataset: str, cost: Amount) -> None:
        """This connection committed a charge: add it to a cached total (if one is cached)."""
        key = (licence_id, dataset)
        found = self._totals.get(key)
        if found is not None:
            self._totals[key] = found.plus(cost)

    def clear(self) -> None:
        self._totals.clear()
        self._version = None
