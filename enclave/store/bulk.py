"""Whole-table export and verbatim import, for ``enclave store copy`` (not the request path).

The ``Store`` Protocol is what requests use; these are extras both adapters provide
(``export_snapshot()`` and ``bulk_import()``) so a deployment can move between them. Rows
travel in a *neutral* form (``int``, ``float``, ``bool``, ``str``, ``None``):
each adapter converts from and to its own storage types (SQLite keeps ``cached`` as 0/1,
PostgreSQL as BOOLEAN; ledger amounts are integer grid units in both).

Nothing is recomputed: audit records keep their ``seq``, ``ts``, ``prev_hash`` and ``hash``
exactly as stored (text columns are copied byte for byte, and a double round-trips exactly),
so the chain verifies on the target without being re-hashed. ``TABLES`` lists the tables in
an order that satisfies every foreign key (the audit chain first).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from enclave.store.codec import LICENCE_COLUMNS

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


def _text(*names: str) -> tuple[tuple[str, Kind], ...]:
    return tuple((n, "text") for n in names)


AUDIT = TableSpec(
    "audit",
    (
        ("seq", "int"),
        *_text("ts", "request_id", "actor", "roles", "licence_id", "tier", "action", "dataset"),
        ("sql", "text"),
        ("epsilon", "float"),
        ("delta", "float"),
        ("cached", "bool"),
        *_text("outcome", "reason", "client", "result_sha256", "detail", "prev_hash", "hash"),
    ),
    ("seq",),
)

TABLES: tuple[TableSpec, ...] = (
    AUDIT,
    TableSpec(
        "licences",
        _text(*LICENCE_COLUMNS),
        ("id",),
    ),
    TableSpec(
        "revocations",
        (*_text("jti", "reason", "created_at"), ("audit_seq", "int")),
        ("jti",),
    ),
    TableSpec(
        "policies",
        (
            *_text("kind", "name"),
            ("version", "int"),
            *_text("body", "created_at", "actor"),
            ("audit_seq", "int"),
        ),
        ("kind", "name", "version"),
    ),
    TableSpec(
        "ledger",
        (
            ("id", "int"),
            *_text("licence_id", "dataset"),
            ("epsilon_units", "int"),
            ("delta_units", "int"),
            ("ts", "text"),
            ("audit_seq", "int"),
        ),
        ("id",),
    ),
    TableSpec(
        "release_cache",
        (*_text("licence_id", "cache_key", "body", "created_at"), ("audit_seq", "int")),
        ("licence_id", "cache_key"),
    ),
    TableSpec("shared_secrets", _text("name", "value", "created_at"), ("name",)),
    TableSpec(
        "licence_grants",
        (
            ("audit_seq", "int"),
            *_text("licence_id", "dataset"),
            ("epsilon_units", "int"),
            ("delta_units", "int"),
            *_text("reason", "actor", "created_at"),
        ),
        ("audit_seq",),
    ),
    TableSpec(
        "proposals",
        (
            *_text("id", "kind", "target", "body", "base", "risks", "reason", "proposer"),
            *_text("created_at", "expires_at", "status", "decided_by", "decided_reason"),
            ("decided_at", "text"),
            ("audit_seq", "int"),
            ("decision_seq", "int"),
        ),
        ("id",),
    ),
    TableSpec(
        "licence_holds",
        (*_text("licence_id", "organisation", "reason"), ("audit_seq", "int")),
        ("licence_id",),
    ),
)
TABLE_NAMES: frozenset[str] = frozenset(t.name for t in TABLES)


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


def check_spec(spec: TableSpec) -> None:
    """Adapters build SQL from a spec's names: accept only the specs defined here."""
    if spec not in TABLES:
        raise ValueError(f"unknown table spec {spec.name!r}")


def keyset_sql(spec: TableSpec, placeholders: Sequence[str], first: bool) -> str:
    """``SELECT … ORDER BY key LIMIT ?``, after the previous page's last key unless ``first``.

    ``placeholders`` are the parameter markers for the key values then the limit (``?`` for
    SQLite, ``$1…`` for PostgreSQL). Row-value comparison pages on composite keys too."""
    check_spec(spec)
    cols = ", ".join(spec.column_names)
    key = ", ".join(spec.key)
    where = "" if first else f" WHERE ({key}) > ({', '.join(placeholders[:-1])})"
    return f"SELECT {cols} FROM {spec.name}{where} ORDER BY {key} LIMIT {placeholders[-1]}"  # noqa: S608


class BulkReader(Protocol):
    def rows(self, spec: TableSpec, batch: int = 5000) -> AsyncIterator[list[Row]]:
        """Every row of ``spec``'s table in key order, ``batch`` at a time, neutral form."""


class BulkWriter(Protocol):
    async def write(self, spec: TableSpec, rows: Sequence[Row]) -> None:
        """Insert neutral ``rows`` verbatim (inside the import's one transaction)."""
