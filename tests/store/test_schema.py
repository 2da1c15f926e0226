"""A fresh store gets exactly the schema the published migrations made before they were
written once for both databases (``store/schema.py``): every table, column, type, default,
constraint, index, trigger and function, compared with a dump taken from the code as it was
(``tests/store/schema/<backend>.txt``). Existing databases depend on it: a migration version
is applied by number, so its text may change only if the schema it makes does not.

To see a difference, run ``python -m tests.store.test_schema <sqlite|postgres> [dsn]``, which
prints the dump of a fresh store."""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.store.conftest import Backend

FIXTURES = Path(__file__).parent / "schema"

SQLITE_QUERIES = (
    "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
    "SELECT m.name, p.cid, p.name, p.type, p.[notnull], p.dflt_value, p.pk"
    " FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table'"
    " ORDER BY m.name, p.cid",
    "SELECT version FROM schema_version ORDER BY version",
)
POSTGRES_QUERIES = (
    "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default,"
    " numeric_precision FROM information_schema.columns WHERE table_schema = 'public'"
    " ORDER BY table_name, ordinal_position",
    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname",
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger"
    " WHERE NOT tgisinternal ORDER BY 1, 2",
    "SELECT proname, pg_get_functiondef(oid) FROM pg_proc"
    " WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
    "SELECT sequence_name, data_type FROM information_schema.sequences ORDER BY 1",
    "SELECT id, seq FROM chain_head",
    "SELECT version FROM schema_version ORDER BY version",
)


def _line(row: tuple[Any, ...]) -> str:
    return " | ".join(re.sub(r"\s+", " ", str(v)).strip() for v in row)


async def dump(backend: Backend) -> str:
    """The schema of ``backend``'s store, opened once (so migrated), as text lines."""
    store = backend.make()
    await store.open()
    await store.close()
    queries = SQLITE_QUERIES if backend.name == "sqlite" else POSTGRES_QUERIES
    lines = []
    for sql in queries:
        lines.append(f"-- {sql}")
        lines.extend(_line(r) for r in await backend.raw(sql))
    return "\n".join(lines) + "\n"


async def test_a_fresh_store_has_the_published_schema(backend: Backend) -> None:
    expected = (FIXTURES / f"{backend.name}.txt").read_text(encoding="utf-8")
    assert await dump(backend) == expected


async def _print(name: str, dsn: str | None) -> None:  # pragma: no cover (a developer's tool)
    from tests.store.conftest import _sqlite_backend, postgres_backend

    if name == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            sys.stdout.write(await dump(_sqlite_backend(Path(tmp))))
        return
    assert dsn is not None
    sys.stdout.write(await dump(postgres_backend(dsn)))


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_print(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
