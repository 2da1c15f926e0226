"""Hostile data cannot turn a query into an uncharged oracle.

Each test answers the same query over two neighbouring datasets (or two filters that differ
only in whether they select the hostile unit): both answers must be the same kind of outcome,
charged the same, with nothing from the data in them. Before the fixes, the second of each
pair answered 500 and was charged nothing (an exact presence test).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.security.hostile import HostileRow, add_dataset, audited_charges, charged

I64_MAX = 2**63 - 1  # the i64 mechanism's domain ends here


async def _ask(gw: Any, dataset: str, sql: str, sub: str, epsilon: float = 0.5) -> Any:
    sql = sql.replace("FROM t", f"FROM {dataset}")
    resp = await gw.query(sql, epsilon=epsilon, dataset=dataset, sub=sub)
    return resp.status, await resp.json(content_type=None)


async def test_integer_sum_overflow_answers_alike_and_is_charged(make_gateway: Any) -> None:
    """D sums to exactly 2**63 - 1; D' adds one unit with value 1 (finding 3)."""
    gw = await make_gateway()
    top = 2**53  # k * top must stay within 2**53 (policy), so k = 1
    base = [HostileRow(f"u{i}", x=top) for i in range(1023)] + [HostileRow("last", x=top - 1)]
    assert sum(r.x or 0 for r in base) == I64_MAX
    await add_dataset(gw, "sums_d", base, k=1, x_bounds=(0, top))
    await add_dataset(gw, "sums_dp", [*base, HostileRow("one", x=1)], k=1, x_bounds=(0, top))
    answers = []
    for name in ("sums_d", "sums_dp"):
        lic = await gw.licence(subject=f"s_{name}", datasets=(name,))
        status, body = await _ask(gw, name, "SELECT SUM(x) AS s FROM t", f"s_{name}")
        answers.append(status)
        assert await charged(gw, lic.id, name) == Decimal("0.5"), body
        assert await audited_charges(gw, lic.id) == Decimal("0.5")
    assert answers == [200, 200]


async def test_nan_and_infinite_group_keys_answer_and_are_charged(make_gateway: Any) -> None:
    """Undeclared float keys holding NaN and infinities (finding 4): enough units that the
    keys pass partition selection; the answer must be a charged release, never a 500."""
    gw = await make_gateway()
    rows = [HostileRow(f"n{i}", y=float("nan")) for i in range(400)]
    rows += [HostileRow(f"p{i}", y=float("inf")) for i in range(400)]
    rows += [HostileRow(f"m{i}", y=float("-inf")) for i in range(400)]
    rows += [HostileRow(f"r{i}", y=float(i % 3)) for i in range(400)]
    await add_dataset(gw, "keys_d", rows)
    await add_dataset(gw, "keys_dp", [*rows, HostileRow("extra", y=float("nan"))])
    for name in ("keys_d", "keys_dp"):
        lic = await gw.licence(subject=f"k_{name}", tier="accredited", datasets=(name,))
        for attempt in range(3):  # each retry was a fresh selection draw
            sql = f"SELECT y, COUNT(*) AS n FROM t GROUP BY y LIMIT {50 + attempt}"  # noqa: S608
            status, body = await _ask(gw, name, sql, f"k_{name}", epsilon=1.0)
            assert status == 200, body
        assert await charged(gw, lic.id, name) == Decimal(3)
        assert await audited_charges(gw, lic.id) == Decimal(3)


async def test_dates_beyond_9999_do_not_make_a_presence_test(make_gateway: Any) -> None:
    """Units with age 1 hold a date past year 9999 (finding 4): ``WHERE age = 1`` and
    ``WHERE age = 2`` must answer alike, both charged."""
    gw = await make_gateway()
    rows = [HostileRow(f"a{i}", age=1, d="10000-01-01") for i in range(300)]
    rows += [HostileRow(f"a{i}", age=1, d="2021-01-01") for i in range(300)]  # mixed keys
    rows += [HostileRow(f"b{i}", age=2, d="2020-06-01") for i in range(300)]
    rows += [HostileRow(f"c{i}", age=3, d="-0044-03-15") for i in range(300)]
    await add_dataset(gw, "dates", rows)
    lic = await gw.licence(subject="dates", tier="accredited", datasets=("dates",))
    statuses = []
    for age in (1, 2, 3):
        sql = f"SELECT d, COUNT(*) AS n FROM t WHERE age = {age} GROUP BY d ORDER BY d"  # noqa: S608
        status, body = await _ask(gw, "dates", sql, "dates", epsilon=1.0)
        statuses.append(status)
    assert statuses == [200, 200, 200]
    assert await charged(gw, lic.id, "dates") == Decimal(3)
    assert await audited_charges(gw, lic.id) == Decimal(3)
