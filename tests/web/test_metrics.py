"""``GET /metrics``: Prometheus text whose counters move with real traffic and name no one.

Values are read back by parsing the exposition with prometheus-client's own parser, so the
test also proves the output is well-formed Prometheus text.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

SQL = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"


async def scrape(gw: Any) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    resp = await gw.client.get("/metrics")  # public: no token
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_with_query_cached_repeat_and_refusal(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence()
    _, before = await scrape(gw)
    assert value(before, "enclave_releases_total") == 0

    assert (await gw.query(SQL, epsilon=0.5)).status == 200
    _, s1 = await scrape(gw)
    assert value(s1, "enclave_releases_total") == 1
    assert value(s1, "enclave_cache_hits_total") == 0
    assert value(s1, "enclave_epsilon_spent_total") == 0.5
    route = {"route": "/v1/queries", "method": "POST", "status": "200"}
    assert value(s1, "enclave_requests_total", **route) == 1
    assert value(s1, "enclave_request_seconds_count", route="/v1/queries") == 1
    assert value(s1, "enclave_request_seconds_sum", route="/v1/queries") > 0

    repeat = await gw.query(SQL, epsilon=0.5)
    assert (await repeat.json())["cached"] is True
    _, s2 = await scrape(gw)
    assert value(s2, "enclave_releases_total") == 2
    assert value(s2, "enclave_cache_hits_total") == 1
    assert value(s2, "enclave_epsilon_spent_total") == 0.5  # the repeat spent nothing
    assert value(s2, "enclave_requests_total", **route) == 2

    refused = await gw.query("SELECT region FROM visits JOIN other ON 1 = 1", epsilon=0.5)
    assert refused.status == 400
    problem = (await refused.json(content_type=None))["type"]
    reason = problem.rsplit("/", 1)[1]
    no_token = await gw.client.get("/v1/budget")
    assert no_token.status == 401
    _, s3 = await scrape(gw)
    assert value(s3, "enclave_refusals_total", reason=reason) == 1
    assert value(s3, "enclave_refusals_total", reason="missing-token") == 1
    assert value(s3, "enclave_releases_total") == 2
    bad = {"route": "/v1/queries", "method": "POST", "status": "400"}
    assert value(s3, "enclave_requests_total", **bad) == 1
    assert value(s3, "enclave_requests_total", route="/v1/budget", method="GET", status="401") == 1


async def test_labels_are_templates_and_name_no_subject_licence_or_dataset(
    make_gateway: Any,
) -> None:
    gw = await make_gateway()
    lic = await gw.licence(subject="zelda_subject")
    assert (await gw.query(SQL, epsilon=0.5, sub="zelda_subject")).status == 200
    admin = gw.auth("steward_subject", ["admin"])
    assert (await gw.client.get(f"/v1/admin/licences/{lic.id}", headers=admin)).status == 200
    assert (await gw.client.get("/v1/admin/datasets/visits", headers=admin)).status == 200
    # an unknown path and an invented method cannot mint label values either
    assert (await gw.client.get("/v1/visits/zelda_subject")).status == 404
    assert (await gw.client.request("PROPFIND", "/healthz")).status == 405
    text, samples = await scrape(gw)
    for secret in ("zelda_subject", "steward_subject", lic.id, "visits", "PROPFIND"):
        assert secret not in text, secret
    labels = {k: v for (_, pairs) in samples for k, v in pairs}
    assert set(labels) <= {"route", "method", "status", "reason", "le", "worker"}
    assert {v for (_, pairs) in samples for k, v in pairs if k == "worker"} == {"1"}
    routes = {v for (_, pairs) in samples for k, v in pairs if k == "route"}
    assert "/v1/admin/licences/{id}" in routes
    assert "/v1/admin/datasets/{name}" in routes
    assert "unmatched" in routes
    assert value(samples, "enclave_requests_total", route="unmatched", method="other", status="405")
    assert value(samples, "enclave_refusals_total", reason="not-found") == 1


async def test_each_app_has_its_own_registry(make_gateway: Any) -> None:
    first = await make_gateway()
    await first.licence()
    assert (await first.query(SQL, epsilon=0.5)).status == 200
    second = await make_gateway()
    _, samples = await scrape(second)
    assert value(samples, "enclave_releases_total") == 0
    assert value(samples, "enclave_epsilon_spent_total") == 0


async def test_one_process_is_worker_1() -> None:
    """``server.processes = 1``: the worker counter has the one label value ``1``; several
    workers are tested with real processes in ``tests/web/test_workers.py``."""
    from enclave.metrics import Metrics

    metrics = Metrics()
    metrics.worker_requests.inc()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert value(samples, "enclave_worker_requests_total", worker="1") == 1


def test_a_shared_directory_needs_multiprocess_values(tmp_path: Any) -> None:
    """Without ``PROMETHEUS_MULTIPROC_DIR`` in the environment before prometheus-client loads,
    a worker's values would stay in its memory and merged scrapes would miss them: refused."""
    import pytest

    from enclave.metrics import Metrics

    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(multiprocess_dir=tmp_path)


async def test_group_commits_are_counted(make_gateway: Any) -> None:
    """Concurrent queries share audit transactions: the records counted are the queries'
    (an admin write, such as the licence, commits with its own change, not in a batch), and
    there are no more commits than records."""
    import asyncio

    gw = await make_gateway()
    await gw.licence()
    n = 12
    answers = await asyncio.gather(
        *(gw.query(f"SELECT COUNT(*) AS n FROM visits WHERE age > {i}", 0.1) for i in range(n))  # noqa: S608
    )
    assert [a.status for a in answers] == [200] * n
    _, samples = await scrape(gw)
    records = value(samples, "enclave_audit_committed_records_total")
    commits = value(samples, "enclave_audit_commits_total")
    head = (await gw.services.store.audit_head())[0]
    assert records == n and head == n + 1  # the queries', and the licence's own
    assert 1 <= commits <= records
