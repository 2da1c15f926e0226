"""Whole-table export and verbatim import, for ``enclave store copy`` (not the request path).

``Store.export_snapshot()`` yields a ``Snapshot`` (one consistent read transaction) and
``Store.bulk_import()`` an ``Importer`` (one chained write transaction), both over a
``driver.Tx``. Rows travel in a *neutral* form (``int``, ``float``, ``bool``, ``str``,
``None``), converted from each database's storage types by ``neutral_row`` (SQLite keeps
``cached`` as 0/1, PostgreSQL as BOOLEAN; ledger amounts are integer grid units in both).

Nothing is recomputed: audit records keep their ``seq``, ``ts``, ``prev_hash`` and ``hash``
exactly as stored (text columns are copied byte for byte, and a double round-trips exactly),
so the chain verifies on the target without being re-hashed. ``TABLES`` lists the tables in
an order that satisfies every foreign key (the audit chain first).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from enclave.audit.record import FIELDS, KINDS
from enclave.errors import Conflict
from enclave.governance import proposal
from enclave.store import grants, jobs
from enclave.store.codec import LICENCE_COLUMNS
from enclave.store.driver import Tx

Kind = Literal["text", "int", "float", "bool"]
Row = tuple[Any, ...]


@dataclass(frozen=True)
class TableSpec:
    """One table: its columns with their neutral kinds, and the primary key used to page."""

    name: str
    columns: tuple[tuple[str, Kind], ...]
    key: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def key_positions(self) -> tuple[int, ...]:
        names = self.column_names
        return tuple(names.index(k) for k in self.key)


def _spec(
    name: str,
    columns: Sequence[str],
    key: tuple[str, ...],
    ints: Sequence[str] = (),
    floats: Sequence[str] = (),
) -> TableSpec:
    """A table whose columns are text but for ``ints`` and ``floats``."""
    kinds: dict[str, Kind] = {**dict.fromkeys(ints, "int"), **dict.fromkeys(floats, "float")}
    return TableSpec(name, tuple((c, kinds.get(c, "text")) for c in columns), key)


_NEUTRAL: dict[str, Kind] = {"int": "int", "float": "float", "bool": "bool"}
AUDIT = TableSpec("audit", tuple((n, _NEUTRAL.get(KINDS[n], "text")) for n in FIELDS), ("seq",))
SEQ = ("audit_seq",)
UNITS = ("epsilon_units", "delta_units")

TABLES: tuple[TableSpec, ...] = (
    AUDIT,
    _spec("licences", LICENCE_COLUMNS, ("id",)),
    _spec("revocations", ("jti", "reason", "created_at", *SEQ), ("jti",), SEQ),
    _spec(
        "policies",
        ("kind", "name", "version", "body", "created_at", "actor", *SEQ),
        ("kind", "name", "version"),
        ("version", *SEQ),
    ),
    _spec(
        "ledger",
        ("id", "licence_id", "dataset", *UNITS, "ts", *SEQ, "subject", "organization"),
        ("id",),
        ("id", *UNITS, *SEQ),
    ),
    _spec(
        "release_cache",
        ("licence_id", "cache_key", "body", "created_at", *SEQ),
        ("licence_id", "cache_key"),
        SEQ,
    ),
    _spec("shared_secrets", ("name", "value", "created_at"), ("name",)),
    _spec("ledger_totals", ("layer", "key", "dataset", *UNITS), ("layer", "key", "dataset"), UNITS),
    _spec("licence_grants", grants.COLUMNS, SEQ, (*SEQ, *UNITS)),
    _spec("proposals", proposal.FIELDS, ("id",), (*SEQ, "decision_seq")),
    _spec("licence_holds", ("licence_id", "organisation", "reason", *SEQ), ("licence_id",), SEQ),
    # the job queue: a queued job was acknowledged (202) and must not be lost; a running one
    # is claimed again once its lease runs out. Result files stay in ``jobs.dir``.
    _spec("jobs", jobs.COLUMN_NAMES, ("id",), ("attempts",), ("progress",)),
)


def neutral(value: Any, kind: Kind) -> Any:
    """A stored value in neutral form (``None`` stays ``None``)."""
    if value is None:
        return None
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        return bool(value)
    return str(value)


def neutral_row(spec: TableSpec, row: Sequence[Any]) -> Row:
    return tuple(neutral(v, kind) for v, (_, kind) in zip(row, spec.columns, strict=True))


def _check(spec: TableSpec) -> None:
    """SQL is built from a spec's names: accept only the specs defined here."""
    if spec not in TABLES:
        raise ValueError(f"unknown table spec {spec.name!r}")


class Snapshot:
    """Every table read page by page inside one consistent read transaction."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx

    async def rows(self, spec: TableSpec, batch: int = 5000) -> AsyncIterator[list[Row]]:
        """Every row of ``spec``'s table in key order, ``batch`` at a time, neutral form.
        Pages by row-value comparison on the key (composite keys too)."""
        _check(spec)
        cols, key = ", ".join(spec.column_names), ", ".join(spec.key)
        first = f"SELECT {cols} FROM {spec.name} ORDER BY {key} LIMIT ?"  # noqa: S608
        after_sql = (
            f"SELECT {cols} FROM {spec.name} WHERE ({key}) > ({', '.join('?' * len(spec.key))})"  # noqa: S608
            f" ORDER BY {key} LIMIT ?"
        )
        found = [neutral_row(spec, r) for r in await self._tx.fetch(first, batch)]
        while found:
            yield found
            if len(found) < batch:
                return
            after = [found[-1][i] for i in spec.key_positions]
            found = [neutral_row(spec, r) for r in await self._tx.fetch(after_sql, *after, batch)]


class Importer:
    """Rows written verbatim inside one chained write into an empty store."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx

    async def check_empty(self) -> None:
        """``Conflict`` unless every table is empty."""
        for spec in TABLES:
            if await self._tx.fetchrow(f"SELECT 1 FROM {spec.name} LIMIT 1") is not None:  # noqa: S608
                raise Conflict(f"the target store is not empty (table {spec.name} has rows)")

    async def write(self, spec: TableSpec, rows: Sequence[Row]) -> None:
        _check(spec)
        if rows:
            await self._tx.copy_rows(spec.name, spec.column_names, rows)

    async def finish(self) -> None:
        """Move the database's counters past the copied rows (``Dialect.after_import``)."""
        for sql in self._tx.dialect.after_import:
            await self._tx.execute(sql)
