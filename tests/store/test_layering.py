"""Each store rule is written once: the transactions (``ops.py``) import no database driver,
and a database module (``sqlite.py``, ``postgres.py``) imports no business rule: no error
of the rules (budget, conflict, not found), no codec, nothing but the driver interface and
its own schema. Read from the source files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import enclave.store

STORE = Path(enclave.store.__file__).parent
DRIVERS = ("sqlite.py", "postgres.py")
RULE_NAMES = {"BudgetExhausted", "Conflict", "NotFound", "BadRequest", "codec", "base"}


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names |= {node.module} | {alias.name for alias in node.names}
    return names


def test_the_transactions_import_no_database_driver() -> None:
    assert not _imported(STORE / "ops.py") & {"sqlite3", "asyncpg"}


@pytest.mark.parametrize("name", DRIVERS)
def test_a_database_module_holds_no_rule(name: str) -> None:
    imported = _imported(STORE / name)
    assert not imported & RULE_NAMES
    assert not {n for n in imported if n.startswith("enclave.store.") and "codec" in n}
