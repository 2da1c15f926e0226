"""DP synthetic data (``POST /v1/synthetic``, docs/synthetic.md): free refusals, the exact
charge, the cache, a restart mid-job (charged once) and utility on a table of known structure.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enclave.audit.log import AuditFilter
from enclave.client import EnclaveClient
from enclave.config import sqlite_path
from enclave.errors import TierRefused
from enclave.ledger.charge import Charge
from enclave.ledger.grid import Amount
from enclave.store.sqlite import SqliteStore
from enclave.synthetic.mst import SynthTask, build, privacy_map
from enclave.synthetic.request import SyntheticRequest, synth_columns
from tests.conftest import ConfigFactory, TokenFactory
from tests.serving import free_port
from tests.store.conftest import draft, licence, temporary_database
from tests.store.test_replicas import Replica, bearer

TIER = """\
name: research
description: Synthetic data allowed.
level: 3
aggregates: [count]
max_epsilon_per_query: 1.0
budget:
  epsilon: 5.0
  delta: 0.0
synthetic:
  allowed: true
  max_epsilon: 2.0
"""
DATASET = """\
name: pairs
description: Two categories that agree 80% of the time, and a score set by the first.
source: ../../data/pairs.parquet
privacy_unit: unit
max_rows_per_unit: 2
min_tier: open
allowed_jurisdictions: [GB]
columns:
  unit: {type: identifier}
  a: {type: category, values: [x, y, z]}
  b: {type: category, values: [x, y, z]}
  score: {type: int, bounds: [0, 99]}
  when: {type: date, bounds: [2020-01-01, 2020-12-31]}
"""
KEYS = ("x", "y", "z")
UNITS = 4000
JOBS = {"lease_s": 6, "poll_s": 0.5, "timeout_s": 600}


def _pairs(path: Path) -> dict[str, np.ndarray]:
    """1-2 rows per unit (within k = 2, so the bounded table is the whole table)."""
    rng = np.random.default_rng(5)
    per_unit = rng.integers(1, 3, UNITS)
    units = np.repeat(np.arange(UNITS), per_unit)
    n = len(units)
    a = rng.integers(0, 3, n)
    b = np.where(rng.random(n) < 0.8, a, rng.integers(0, 3, n))
    score = a * 33 + rng.integers(0, 33, n)
    table = pa.table(
        {
            "unit": [f"u{u}" for u in units],
            "a": [KEYS[i] for i in a],
            "b": [KEYS[i] for i in b],
            "score": score.astype(np.int64),
            "when": pa.array([dt.date(2020, 6, 1)] * n, type=pa.date32()),
        }
    )
    pq.write_table(table, path)
    return {"a": a, "b": b, "score": score}


def _deploy(config_factory: ConfigFactory) -> dict[str, np.ndarray]:
    """The test deployment plus a tier that allows synthetic data and the ``pairs`` dataset."""
    cfg = config_factory()
    root = Path(cfg.policies.dir).parent
    (root / "policies" / "tiers" / "research.yaml").write_text(TIER)
    (root / "policies" / "datasets" / "pairs.yaml").write_text(DATASET)
    return _pairs(root / "data" / "pairs.parquet")


def _body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": "pairs",
        "columns": ["a", "b", "score"],
        "epsilon": 1.0,
        "rows": 6000,
    }
    body.update(over)
    return body


async def _post(gw: Any, body: dict[str, Any], sub: str = "alice") -> Any:
    return await gw.client.post("/v1/synthetic", json=body, headers=gw.auth(sub))


async def _wait(gw: Any, url: str, states: tuple[str, ...] = ("done", "failed")) -> Any:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        resp = await gw.client.get(url, headers=gw.auth())
        assert resp.status == 200, await resp.text()
        job = await resp.json()
        if job["state"] in states:
            return job
        await asyncio.sleep(0.3)
    raise AssertionError(f"job not {states} in time: {job}")


async def _spent(gw: Any, lic: Any) -> Amount:
    return await gw.services.store.spent(lic.id, "pairs", None)


async def test_refusals_are_free_and_precise(
    make_gateway: Any, config_factory: ConfigFactory
) -> None:
    _deploy(config_factory)
    gw = await make_gateway()
    std = await gw.licence(tier="open", datasets=("pairs",))
    resp = await _post(gw, _body())
    assert resp.status == 403
    problem = await resp.json()
    assert problem["type"].endswith("tier-refused")
    assert "does not allow synthetic" in problem["detail"]
    await gw.licence(subject="bob", tier="research", datasets=("pairs",))
    over = await _post(gw, _body(epsilon=2.5), sub="bob")
    assert over.status == 403 and "cap 2.0" in (await over.json())["detail"]
    bad = await _post(gw, _body(columns=["a", "scroe", "unit", "when"], rows=0), sub="bob")
    assert bad.status == 400
    detail = (await bad.json())["detail"]
    assert "'rows' must be an integer" in detail
    one = await _post(gw, _body(columns=["a"], epsilon=None), sub="bob")
    assert one.status == 400
    assert "'columns' must list 2" in (detail2 := (await one.json())["detail"])
    assert "'epsilon' must be a positive number" in detail2
    schema = await _post(gw, _body(columns=["a", "scroe", "unit", "when"]), sub="bob")
    assert schema.status == 400
    text = (await schema.json())["detail"]
    assert "unknown column 'scroe'; did you mean score?" in text
    assert "unit: identifier columns cannot be released" in text
    assert "when: date columns cannot be released" in text
    unseen = await _post(gw, _body(dataset="nope"), sub="bob")
    assert unseen.status == 404
    store = gw.services.store
    assert await store.spent(std.id, "pairs", None) == Amount()
    records = await store.audit_events(AuditFilter(action="synthetic"), 0, 100)
    assert [r.outcome for r in records] == ["denied"] * len(records) and len(records) >= 2
    bob = next(lic for lic in gw.licences.values() if lic.subject == "bob")
    assert await store.spent(bob.id, "pairs", None) == Amount()


async def test_a_job_is_visible_to_its_owner_and_auditors_only(
    make_gateway: Any, config_factory: ConfigFactory
) -> None:
    _deploy(config_factory)
    gw = await make_gateway(jobs={**JOBS, "poll_s": 3.0, "lease_s": 60})
    await gw.licence(tier="research", datasets=("pairs",))
    resp = await _post(gw, _body())
    assert resp.status == 202, await resp.text()
    job = await resp.json()
    assert resp.headers["Location"] == job["status_url"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in ("queued", "running") and job["kind"] == "synthetic"
    twin = await _post(gw, _body())  # the same request while it runs joins it
    assert twin.status == 200 and (await twin.json())["id"] == job["id"]
    url = job["status_url"]
    other = await gw.client.get(url, headers=gw.auth("mallory"))
    assert other.status == 404
    for role in ("auditor", "admin"):
        seen = await gw.client.get(url, headers=gw.auth("carol", roles=(role,)))
        assert seen.status == 200
    early = await gw.client.get(url + "/result", headers=gw.auth())
    assert early.status == 404
    fmt = await gw.client.get(url + "/result?format=xlsx", headers=gw.auth())
    assert fmt.status == 400


@pytest.mark.slow
async def test_release_is_charged_exactly_cached_and_useful(
    make_gateway: Any, config_factory: ConfigFactory
) -> None:
    truth = _deploy(config_factory)
    gw = await make_gateway(jobs=JOBS)
    lic = await gw.licence(tier="research", datasets=("pairs",))
    resp = await _post(gw, _body())
    assert resp.status == 202, await resp.text()
    job = await _wait(gw, (await resp.json())["status_url"])
    assert job["state"] == "done", job

    # the charge: OpenDP's privacy map of the very measurement, rounded up to the grid
    spec = await gw.services.registry.dataset("pairs")
    req = SyntheticRequest.from_json(_body())
    k = spec.max_rows_per_unit
    task = SynthTask("", synth_columns(spec, req), k, 1.0, 6000, "")
    meas, d_in, oneway_scale = build(task)
    opendp_eps = float(meas.map(d_in))
    assert opendp_eps == privacy_map(task) and 0.99 < opendp_eps <= 1.0
    # the unit is k rows: each one-way marginal has sensitivity k, so three of them at half
    # of epsilon need the Laplace scale k x 3 / (epsilon / 2)
    assert oneway_scale == pytest.approx(6 * k / 1.0, rel=1e-6)
    expected = Amount.charge(Decimal(repr(opendp_eps)))
    assert await _spent(gw, lic) == expected
    assert job["result"]["epsilon"] == expected.epsilon_float and job["result"]["delta"] == 0
    records = await gw.services.store.audit_events(AuditFilter(action="synthetic"), 0, 100)
    charged = [r for r in records if r.epsilon > 0]
    assert len(charged) == 1 and charged[0].outcome == "ok"
    assert charged[0].epsilon == expected.epsilon_float
    assert charged[0].detail["columns"] == ["a", "b", "score"]
    assert charged[0].detail["rows"] == 6000 and charged[0].result_sha256

    # the files
    files = job["result"]["files"]
    table = pq.read_table(
        io.BytesIO(await (await gw.client.get(files["parquet"], headers=gw.auth())).read())
    )
    assert table.num_rows == 6000 and table.column_names == ["a", "b", "score"]
    csv = (await (await gw.client.get(files["csv"], headers=gw.auth())).read()).decode()
    assert csv.splitlines()[0] == "a,b,score" and len(csv.splitlines()) == 6001
    report = await (await gw.client.get(files["report"], headers=gw.auth())).json()
    assert report["oneway_scale"] == oneway_scale and report["max_rows_per_unit"] == k
    assert report["epsilon"] == opendp_eps
    rows = table.to_pylist()
    assert {r["a"] for r in rows} <= {*KEYS, None} and {r["b"] for r in rows} <= {*KEYS, None}
    assert all(r["score"] is None or 0 <= r["score"] <= 99 for r in rows)

    # utility: every released marginal lies within its stated noise of the truth ...
    n = len(truth["a"])
    bins = np.asarray(report["columns"]["score"]["bin_edges"])
    index = {
        "a": truth["a"],
        "b": truth["b"],
        "score": np.searchsorted(bins[1:-1], truth["score"], side="right"),
    }
    sizes = {c: len(report["columns"][c]["keys"]) for c in ("a", "b", "score")}
    pairs = [m for m in report["marginals"] if len(m["columns"]) == 2]
    assert len(pairs) == 2  # a tree over three columns
    for m in report["marginals"]:
        cols = m["columns"]
        true = np.zeros([sizes[c] for c in cols])
        np.add.at(true, tuple(index[c] for c in cols), 1)
        noisy = np.asarray(m["counts"]).reshape(true.shape)
        assert np.abs(noisy - true).max() <= 8 * m["stddev"], cols
    # ... and the synthetic table keeps the structure: a and b agree 80% (independence: 1/3)
    syn = {c: np.asarray([r[c] for r in rows], dtype=object) for c in ("a", "b")}
    for i, key in enumerate(KEYS):
        for j, other in enumerate(KEYS):
            p_true = np.mean((truth["a"] == i) & (truth["b"] == j))
            p_syn = np.mean((syn["a"] == key) & (syn["b"] == other))
            assert abs(p_syn - p_true) < 0.03, (key, other, p_syn, p_true)
    agree = np.mean(syn["a"] == syn["b"])
    assert 0.78 < agree < 0.95  # truth: 0.8 + 0.2 / 3; independence: 1 / 3

    # the same request again: the same release, free, audited as cached
    again = await _post(gw, _body())
    assert again.status == 200
    cached = await again.json()
    assert cached["id"] == job["id"] and cached["state"] == "done"
    assert await _spent(gw, lic) == expected
    records = await gw.services.store.audit_events(AuditFilter(action="synthetic"), 0, 100)
    assert records[-1].cached and records[-1].epsilon == 0
    assert records[-1].result_sha256 == charged[0].result_sha256
    assert len(pairs) == 2 and n > 0

    # a suspended licence no longer downloads (its owner); an auditor still reads the release
    await gw.services.store.update_licence(
        lic.id, {"status": "suspended"}, draft("licence.update", actor="admin", reason="test")
    )
    refused = await gw.client.get(files["csv"], headers=gw.auth())
    assert refused.status == 403 and (await refused.json())["type"].endswith("licence-suspended")
    seen = await gw.client.get(files["csv"], headers=gw.auth("carol", roles=("auditor",)))
    assert seen.status == 200 and (await seen.read()).decode() == csv


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_a_restart_mid_job_completes_it_and_charges_once(
    make_gateway: Any, config_factory: ConfigFactory, backend: str
) -> None:
    _deploy(config_factory)
    async with contextlib.AsyncExitStack() as stack:
        url = "sqlite:///state/enclave.db"
        if backend == "postgres":
            url = await stack.enter_async_context(temporary_database())
        await _restart(make_gateway, url)


async def _restart(make_gateway: Any, store_url: str) -> None:
    first = await make_gateway(jobs=JOBS, store_url=store_url)
    lic = await first.licence(tier="research", datasets=("pairs",))
    resp = await _post(first, _body(rows=500))
    assert resp.status == 202
    url = (await resp.json())["status_url"]
    await _wait(first, url, states=("running",))
    await asyncio.sleep(1.0)  # the child process is building or reading
    await first.client.close()  # the gateway stops: its job goes back to the queue
    second = await make_gateway(jobs=JOBS, store_url=store_url)  # same deployment and store
    job = await _wait(second, url)
    assert job["state"] == "done", job
    assert job["attempts"] == 2
    attempts = list((Path(second.config.jobs.dir) / job["id"]).iterdir())
    assert [p.name for p in attempts] != [] and len(attempts) == 1  # the first attempt's: gone
    spent = await second.services.store.spent(lic.id, "pairs", None)
    assert spent == Amount.charge(Decimal(str(job["result"]["epsilon"])))
    records = await second.services.store.audit_events(AuditFilter(action="synthetic"), 0, 100)
    assert len([r for r in records if r.epsilon > 0]) == 1
    report = await (
        await second.client.get(url + "/result?format=report", headers=second.auth())
    ).json()
    assert report["rows"] == 500 and json.dumps(report)


@pytest.mark.slow
async def test_a_killed_gateway_s_job_completes_after_a_restart_charged_once(
    config_factory: ConfigFactory, token_factory: TokenFactory
) -> None:
    """Real processes: ``kill -9`` while the job runs; the next gateway on the same store
    claims it when its lease runs out, completes it, and the ledger holds one charge."""
    _deploy(config_factory)
    cfg = config_factory(jobs=JOBS, server={"host": "127.0.0.1"})
    assert cfg.path is not None
    store = SqliteStore(sqlite_path(cfg.store.url))
    await store.open()
    now = dt.datetime.now(dt.UTC)
    lic = licence(
        "lic_synth",
        datasets=("pairs",),
        tier="research",
        valid_from=now - dt.timedelta(days=1),
        valid_until=now + dt.timedelta(days=30),
    )
    await store.insert_licence(lic, draft("licence.create", actor="admin"))
    await store.close()
    auth = bearer(token_factory("alice"))
    first = Replica(cfg.path, free_port())
    second = None
    try:
        async with aiohttp.ClientSession() as http:
            await first.wait_ready(http)
            async with http.post(
                first.url + "/v1/synthetic", json=_body(rows=500), headers=auth
            ) as resp:
                assert resp.status == 202, await resp.text()
                url = (await resp.json())["status_url"]
            for _ in range(200):
                async with http.get(first.url + url, headers=auth) as resp:
                    if (await resp.json())["state"] == "running":
                        break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            first.proc.send_signal(signal.SIGKILL)  # no clean stop: the lease must run out
            first.proc.wait(timeout=10)
            second = Replica(cfg.path, free_port())
            await second.wait_ready(http)
            job: dict[str, Any] = {}
            for _ in range(1500):
                async with http.get(second.url + url, headers=auth) as resp:
                    job = await resp.json()
                if job["state"] in ("done", "failed"):
                    break
                await asyncio.sleep(0.2)
            assert job["state"] == "done", (job, second.tail())
            assert job["attempts"] == 2
    finally:
        first.stop()
        if second is not None:
            second.stop()
    store = SqliteStore(sqlite_path(cfg.store.url))
    await store.open()
    try:
        spent = await store.spent(lic.id, "pairs", None)
        records = await store.audit_events(AuditFilter(action="synthetic"), 0, 100)
    finally:
        await store.close()
    assert spent == Amount.charge(Decimal(str(job["result"]["epsilon"])))
    assert len([r for r in records if r.epsilon > 0 and r.outcome != "denied"]) == 1


@pytest.mark.slow
async def test_the_client_waits_for_the_job_and_returns_a_frame(
    make_gateway: Any, config_factory: ConfigFactory
) -> None:
    _deploy(config_factory)
    gw = await make_gateway(jobs=JOBS)
    await gw.licence(tier="research", datasets=("pairs",))
    await gw.licence(subject="bob", tier="open", datasets=("pairs",))
    url = str(gw.client.make_url(""))
    async with EnclaveClient(url, gw.tokens("bob")) as client:
        with pytest.raises(TierRefused, match="does not allow synthetic"):
            await client.synthetic("pairs", ["a", "b"], epsilon=0.5, rows=100)
    async with EnclaveClient(url, gw.tokens()) as client:
        frame = await client.synthetic("pairs", ["a", "score"], epsilon=0.5, rows=300, bins=5)
        again = await client.submit_synthetic("pairs", ["a", "score"], 0.5, 300, bins=5)
    assert list(frame.columns) == ["a", "score"] and len(frame) == 300
    assert frame.attrs["job"]["state"] == "done" and frame.attrs["job"]["result"]["epsilon"] == 0.5
    assert [m["columns"] for m in frame.attrs["report"]["marginals"]] == [
        ["a"],
        ["score"],
        ["a", "score"],
    ]
    assert len(frame.attrs["report"]["columns"]["score"]["keys"]) == 6  # 5 bins and missing
    assert again["id"] == frame.attrs["job"]["id"] and again["state"] == "done"


async def test_a_failure_after_the_data_is_read_is_charged_once(
    make_gateway: Any, config_factory: ConfigFactory
) -> None:
    """The child is killed at ``jobs.timeout_s``: the job fails with a fixed text, and the
    requested epsilon is charged and audited ``error``, exactly once."""
    _deploy(config_factory)
    gw = await make_gateway(jobs={**JOBS, "timeout_s": 0.5})
    lic = await gw.licence(tier="research", datasets=("pairs",))
    resp = await _post(gw, _body(epsilon=0.75))
    assert resp.status == 202, await resp.text()
    job = await _wait(gw, (await resp.json())["status_url"])
    assert job["state"] == "failed" and job["attempts"] == 1
    assert job["problem"] == {
        "title": "the synthetic release failed after the data was read; its cost was charged",
        "charged": True,
        "epsilon": "0.75",
    }
    assert await _spent(gw, lic) == Amount.charge("0.75")
    records = await gw.services.store.audit_events(AuditFilter(action="synthetic"), 0, 100)
    assert [(r.outcome, r.epsilon) for r in records] == [("ok", 0.0), ("error", 0.75)]
    assert records[-1].reason == "synthetic release failed after the data was read; charged"
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'enclave_jobs_total{kind="synthetic",state="failed"} 1.0' in metrics
    assert "enclave_epsilon_spent_total 0.75" in metrics
    await asyncio.sleep(JOBS["lease_s"] / 2)  # nothing runs it again
    assert await _spent(gw, lic) == Amount.charge("0.75")
    again = await _post(gw, _body(epsilon=0.75))  # a failure is not cached: a new job
    assert again.status == 202 and (await again.json())["id"] != job["id"]


async def test_a_job_whose_budget_is_held_when_it_runs_fails_unread_and_free(
    make_gateway: Any, config_factory: ConfigFactory
) -> None:
    """Another request of the licence, in flight, holds all but 0.5 of the budget when the
    job reaches the data: its reservation of 1.0 is refused, the job ends ``failed``,
    uncharged, having read nothing (no release record, no files)."""
    _deploy(config_factory)
    gw = await make_gateway(jobs=JOBS)
    lic = await gw.licence(tier="research", datasets=("pairs",))
    store = gw.services.store
    in_flight = Charge(lic.id, "pairs", Amount.charge("4.5"), Amount.charge("5"), None)
    await store.reserve(in_flight, 600)
    resp = await _post(gw, _body(epsilon=1.0))  # the free pre-check reads the ledger: it fits
    assert resp.status == 202, await resp.text()
    job = await _wait(gw, (await resp.json())["status_url"])
    assert job["state"] == "failed"
    assert job["problem"] == {"title": "budget exhausted", "charged": False}
    assert await _spent(gw, lic) == Amount()
    records = await store.audit_events(AuditFilter(action="synthetic"), 0, 100)
    assert [(r.outcome, r.epsilon) for r in records] == [("ok", 0.0)]  # the submission only
    assert not list((Path(gw.config.jobs.dir) / job["id"]).rglob("*"))  # no attempt's files
