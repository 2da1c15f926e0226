"""The work a query asks for before any data is read is bounded by its shape, not only by
its length: pricing calibrates one OpenDP measurement per aggregate (a quantile's is the
dearest), and an accuracy target re-prices the whole plan at every step of its search. An
estimate is free, so without a cap one researcher could ask for hundreds of quantiles per
call within the SQL length limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from enclave.query.parse import MAX_AGGREGATES, MAX_QUANTILES
from tests.conftest import MakeGateway


def quantiles(n: int) -> str:
    """``n`` quantiles of age at the levels 0.05, 0.10, ... (cycling; aliases differ)."""
    levels = [f"QUANTILE_CONT(age, {(i % 19 + 1) / 20}) AS q{i}" for i in range(n)]
    return "SELECT " + ", ".join(levels) + " FROM visits"  # noqa: S608


def counts(n: int) -> str:
    items = ", ".join(f"COUNT(*) AS c{i}" for i in range(n))
    return f"SELECT {items} FROM visits"  # noqa: S608


async def estimate(gw: Any, sql: str) -> tuple[int, dict[str, Any]]:
    resp = await gw.query(sql, epsilon=1.0, path="/v1/queries/estimate")
    return resp.status, await resp.json(content_type=None)


@pytest.mark.parametrize(
    ("shape", "cap", "refusal"),
    [
        (counts, MAX_AGGREGATES, f"at most {MAX_AGGREGATES} aggregates"),
        (quantiles, MAX_QUANTILES, f"at most {MAX_QUANTILES} quantiles"),
    ],
)
async def test_a_query_with_more_than_the_cap_is_refused(
    make_gateway: MakeGateway, shape: Callable[[int], str], cap: int, refusal: str
) -> None:
    gw = await make_gateway()
    await gw.licence(tier="accredited")
    status, body = await estimate(gw, shape(cap))
    assert status == 200, body
    status, body = await estimate(gw, shape(cap + 1))
    assert status == 400, body
    assert body["type"].endswith("/unsupported-query")
    assert refusal in body["detail"]


async def test_the_caps_hold_within_the_sql_length_limit(make_gateway: MakeGateway) -> None:
    """Hundreds of aggregates fit in the SQL length limit: the cap, not the length, refuses."""
    gw = await make_gateway()
    await gw.licence(tier="accredited")
    for sql, cap in ((counts(500), "aggregates"), (quantiles(MAX_AGGREGATES), "quantiles")):
        assert len(sql) < 10_000
        status, body = await estimate(gw, sql)
        assert status == 400, body
        assert cap in body["detail"]
