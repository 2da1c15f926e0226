"""A query grouped by undeclared keys answers no sooner than the release deadline.

The release step of such a query does work in proportion to the keys the data holds (OpenDP
samples one noise value per key found), so the pipeline pads it to
``server.release_deadline_ms`` after the data is read (``dp/deadline.py``), whatever the
filter matched. Only lower bounds are asserted: a sleep never ends early, so these hold on a
loaded machine too; how close the durations are is measured in ``bench/timing.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

DEADLINE_MS = 1200


@pytest.mark.parametrize(
    "where",
    ["age < 0", "age >= 0"],  # matches no row / every row (ages are 0 and up)
)
async def test_undeclared_keys_answer_at_the_deadline_empty_or_full(
    make_gateway: Any, where: str
) -> None:
    gw = await make_gateway(server={"query_timeout_s": 20, "release_deadline_ms": DEADLINE_MS})
    await gw.licence(tier="accredited")
    sql = f"SELECT age, COUNT(*) AS n FROM visits WHERE {where} GROUP BY age"  # noqa: S608
    started = time.monotonic()
    resp = await gw.query(sql, epsilon=1.0)
    elapsed = time.monotonic() - started
    assert resp.status == 200, await resp.text()
    assert elapsed >= DEADLINE_MS / 1000
