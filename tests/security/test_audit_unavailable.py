"""If the audit record cannot be written, the request fails with 503 and nothing is released
or charged. The failure is real: a SQLite trigger makes every audit insert abort."""

from __future__ import annotations

import sqlite3
from typing import Any

from enclave.config import sqlite_path

SQL = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"


def _block_audit(url: str, on: bool) -> None:
    con = sqlite3.connect(sqlite_path(url))
    try:
        if on:
            con.execute(
                "CREATE TRIGGER block_audit BEFORE INSERT ON audit "
                "BEGIN SELECT RAISE(ABORT, 'audit blocked'); END"
            )
        else:
            con.execute("DROP TRIGGER block_audit")
        con.commit()
    finally:
        con.close()


async def test_query_fails_503_and_releases_nothing(make_gateway: Any) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    _block_audit(gw.config.store.url, True)
    resp = await gw.query(SQL, epsilon=0.5)
    assert resp.status == 503
    assert resp.content_type == "application/problem+json"
    body = await resp.json(content_type=None)
    assert body["type"].endswith("/audit-unavailable")
    assert resp.headers["Retry-After"] == "5" and body["retry_after"] == 5
    assert "rows" not in body and "north" not in await resp.text()
    # refusals cannot be audited either: they fail closed too
    denied = await gw.query("SELECT age FROM visits")
    assert denied.status == 503
    _block_audit(gw.config.store.url, False)
    spent = (await gw.services.store.spent(lic.id, "visits", None)).epsilon_decimal
    assert spent == 0
    # and nothing was cached: the same query now runs and is charged
    again = await (await gw.query(SQL, epsilon=0.5)).json()
    assert again["cached"] is False and again["epsilon_spent"] == 0.5


async def test_admin_change_fails_503_and_changes_nothing(make_gateway: Any) -> None:
    gw = await make_gateway()
    lic = await gw.licence()
    _block_audit(gw.config.store.url, True)
    resp = await gw.client.patch(
        f"/v1/admin/licences/{lic.id}",
        json={"status": "suspended", "reason": "test"},
        headers=gw.auth("steward", ["admin"]),
    )
    assert resp.status == 503
    _block_audit(gw.config.store.url, False)
    assert (await gw.services.store.get_licence(lic.id)).status == "active"
