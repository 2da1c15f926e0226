"""Each store rule is written once: the transactions (``ops.py``) import no database driver,
and a database module (``sqlite.py``, ``postgres.py``) imports no business rule: no error
of the rules (budget, conflict, not found), no codec, nothing but the driver interface and
the shared schema. The store keeps SQL and transactions; the values it stores are declared
with their domain. Read from the source files."""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
from pathlib import Path

import pytest

import enclave.store
from enclave.audit.record import GENESIS_HASH

STORE = Path(enclave.store.__file__).parent
DRIVERS = ("sqlite.py", "postgres.py")
TRANSACTIONS = ("ops.py", "chain.py", "ledger.py", "reserve.py", "grants.py", "proposals.py")
TRANSACTIONS += ("jobs.py", "group.py", "schema.py")
RULE_NAMES = {"BudgetExhausted", "Conflict", "NotFound", "BadRequest", "codec", "base"}


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names |= {node.module} | {alias.name for alias in node.names}
    return names


@pytest.mark.parametrize("name", TRANSACTIONS)
def test_the_transactions_import_no_database_driver(name: str) -> None:
    assert not _imported(STORE / name) & {"sqlite3", "asyncpg"}


@pytest.mark.parametrize("name", DRIVERS)
def test_a_database_module_holds_no_rule(name: str) -> None:
    imported = _imported(STORE / name)
    assert not imported & RULE_NAMES
    assert not {n for n in imported if n.startswith("enclave.store.") and "codec" in n}


def test_the_store_declares_no_domain_values() -> None:
    """The only dataclasses in ``store/`` describe storage itself (a migration step, a
    table to copy, a database's SQL, one entry of a group commit, a reservation to make,
    what a batch took of its reservations); a value the store keeps belongs to its domain
    (``ledger/charge.py``, ``governance/proposal.py``, ``jobs/job.py``, ...)."""
    declared = {
        node.name
        for path in STORE.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if isinstance(node, ast.ClassDef)
        and any("dataclass" in ast.unparse(d) for d in node.decorator_list)
    }
    assert declared == {"Only", "TableSpec", "Dialect", "Entry", "Taken", "Hold"}


async def test_a_sqlite_transaction_may_await_only_its_connection(tmp_path: Path) -> None:
    """SQLite runs a whole transaction in one hop to its thread; one that awaits anything else
    (which would let another request in mid-transaction) is refused and rolled back."""
    from enclave.store import chain
    from enclave.store.driver import Tx
    from enclave.store.sqlite import SqliteStore
    from tests.store.conftest import draft

    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:

        async def wanders(tx: Tx) -> None:
            await chain.append_locked(tx, draft(), dt.datetime.now(dt.UTC))
            await asyncio.sleep(0)

        with pytest.raises(RuntimeError, match="awaited something other"):
            await store.driver.write(wanders, "chain")
        assert await store.audit_head() == (0, GENESIS_HASH)
        await store.append(draft())  # the connection is usable again
        assert (await store.audit_head())[0] == 1
    finally:
        await store.close()
