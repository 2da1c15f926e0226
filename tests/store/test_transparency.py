"""The transparency report on both stores: a small log written through the real store calls
(licence insert and update, budget debits, appends), its report checked against totals worked
out by hand below, and every kind of edit to the report caught by the export check."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.audit import export
from enclave.audit.record import FAILED_REASON, AuditDraft
from enclave.audit.signing import HeadSigner, SignedHead, verify_head
from enclave.audit.transparency import DATASET_FREEZE, ORGANISATION_SUSPEND
from enclave.audit.transparency_check import check_report
from enclave.audit.transparency_params import parse_params
from enclave.audit.transparency_render import render
from enclave.errors import AuditUnavailable
from enclave.ledger.charge import Charge
from enclave.ledger.grid import Amount
from enclave.licences import licence_digest_fields
from enclave.models import Licence
from enclave.report import ReportCache, store_report
from tests.store.conftest import Backend, Clock

SECRETS = (
    "Alice Secretname",
    "Bob Hiddenname",
    "Carol Quiet",
    "Dan Private",
    "Secret Org",
    "secret purpose",
    "lic_a",
    "lic_b",
    "lic_c",
    "lic_d",
    "steward-one",
    "SELECT",
    "Eve Attacker",
    "<script>",
)


def _at(clock: Clock, month: int, day: int) -> None:
    clock.now = dt.datetime(2026, month, day, 12, tzinfo=dt.UTC)


def _lic(id_: str, subject: str, tier: str, juris: str, datasets: tuple[str, ...],
         until: dt.datetime) -> Licence:  # fmt: skip
    return Licence(
        id=id_,
        subject=subject,
        organization="Secret Org",
        tier=tier,
        datasets=datasets,
        purpose="secret purpose",
        jurisdiction=juris,
        valid_from=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        valid_until=until,
    )


async def _create(store: Any, lic: Licence) -> None:
    draft = AuditDraft(
        action="licence.create",
        outcome="ok",
        actor="steward-one",
        roles=("admin",),
        licence_id=lic.id,
        tier=lic.tier,
        detail={"after": licence_digest_fields(lic)},
    )
    await store.insert_licence(lic, draft)


async def _status(store: Any, lic_id: str, status: str) -> None:
    draft = AuditDraft(
        action="licence.update",
        outcome="ok",
        actor="steward-one",
        roles=("admin",),
        licence_id=lic_id,
        reason="breach of terms",
        detail={"changes": {"status": status}},
    )
    await store.update_licence(lic_id, {"status": status}, draft)


def _query(lic_id: str, subject: str, dataset: str, eps: float, delta: float = 0.0,
           **over: Any) -> AuditDraft:  # fmt: skip
    values: dict[str, Any] = {
        "action": "query",
        "outcome": "ok",
        "actor": subject,
        "roles": ("researcher",),
        "licence_id": lic_id,
        "dataset": dataset,
        "sql": "SELECT COUNT(*) FROM visits",
        "epsilon": eps,
        "delta": delta,
    }
    values.update(over)
    return AuditDraft(**values)


async def _debit(store: Any, draft: AuditDraft) -> None:
    assert draft.licence_id is not None and draft.dataset is not None
    cost = Amount.charge(repr(draft.epsilon), repr(draft.delta))
    charge = Charge(draft.licence_id, draft.dataset, cost, Amount.limit("10", "0.001"), None)
    await store.debit(draft, charge)


async def seed(store: Any, clock: Clock) -> None:
    """The log the expected report below was worked out from."""
    year_end = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    _at(clock, 1, 10)
    await _create(store, _lic("lic_a", "Alice Secretname", "standard", "GB", ("visits",),
                              year_end))  # fmt: skip
    await _create(store, _lic("lic_b", "Bob Hiddenname", "enhanced", "FR",
                              ("visits", "claims"), year_end))  # fmt: skip
    await _create(store, _lic("lic_c", "Carol Quiet", "standard", "GB", ("visits",),
                              dt.datetime(2026, 1, 20, tzinfo=dt.UTC)))  # fmt: skip
    _at(clock, 1, 11)
    await _debit(store, _query("lic_a", "Alice Secretname", "visits", 0.1))
    await _debit(store, _query("lic_b", "Bob Hiddenname", "visits", 0.2))
    await store.append(_query("lic_a", "Alice Secretname", "visits", 0.0, cached=True))
    await store.append(
        _query("lic_a", "Alice Secretname", "visits", 0.5, outcome="denied", reason="x")
    )
    await _debit(store, _query("lic_a", "Alice Secretname", "visits", 0.3, outcome="error",
                               reason=FAILED_REASON))  # fmt: skip
    # failed before any data was read: not charged, so not counted
    await store.append(_query("lic_a", "Alice Secretname", "visits", 0.7, outcome="error",
                              reason="the dataset is unavailable"))  # fmt: skip
    await _debit(store, _query("lic_b", "Bob Hiddenname", "claims", 1.5, 0.000001))
    _at(clock, 2, 5)
    await _status(store, "lic_b", "suspended")
    _at(clock, 2, 6)
    await store.append(
        AuditDraft(
            action=DATASET_FREEZE,
            outcome="ok",
            actor="steward-one",
            dataset="visits",
            reason="suspected re-identification",
        )  # fmt: skip
    )
    await store.append(
        AuditDraft(
            action=ORGANISATION_SUSPEND,
            outcome="ok",
            actor="steward-one",
            detail={"organization": "Secret Org"},
        )  # fmt: skip
    )
    _at(clock, 2, 7)
    await store.append(
        _query(
            "",
            "Eve Attacker",
            "Eve Attacker <script>",
            1.0,
            outcome="denied",
            licence_id=None,
            reason="no such dataset",
        )  # fmt: skip
    )
    _at(clock, 2, 8)
    await _debit(store, _query("lic_a", "Alice Secretname", "visits", 0.25, 0.000001))
    _at(clock, 2, 15)
    await _create(store, _lic("lic_d", "Dan Private", "standard", "GB", ("visits",),
                              year_end))  # fmt: skip
    _at(clock, 2, 20)
    await _status(store, "lic_a", "revoked")


def _row(name: str | None, eps: str = "0", delta: str = "0", q: tuple[int, ...] = (0, 0, 0, 0),
         inc: tuple[int, ...] = (0, 0, 0), active: tuple[tuple[str, str, int], ...] = ()
         ) -> dict[str, Any]:  # fmt: skip
    return {
        "dataset": name,
        "epsilon": eps,
        "delta": delta,
        "queries": dict(zip(("released", "cached", "refused", "failed"), q, strict=True)),
        "incidents": dict(
            zip(("freezes", "licence_suspensions", "licence_revocations"), inc, strict=True)
        ),
        "active_licences": [{"tier": t, "jurisdiction": j, "count": n} for t, j, n in active],
    }


# Worked out by hand from ``seed``: January's visits epsilon is 0.1 + 0.2 + 0.3 (the charged
# failure counts; the cached repeat, the refusal and the uncharged error do not): exactly 0.6,
# where float addition gives 0.6000000000000001.
JANUARY = {
    "label": "2026-01",
    "from": "2026-01-01",
    "to": "2026-02-01",
    "licences_as_of": "2026-01-31T23:59:59.999Z",
    "organisation_suspensions": 0,
    "datasets": [
        _row("claims", "1.5", "0.000001", (1, 0, 0, 0), active=(("enhanced", "FR", 1),)),
        _row("visits", "0.6", "0", (2, 1, 1, 1),
             active=(("enhanced", "FR", 1), ("standard", "GB", 1))),
    ],
}  # fmt: skip
FEBRUARY = {
    "label": "2026-02",
    "from": "2026-02-01",
    "to": "2026-03-01",
    "licences_as_of": "2026-02-20T12:00:00.000Z",  # the last record counted
    "organisation_suspensions": 1,
    "datasets": [
        _row("claims", inc=(0, 1, 0)),
        _row("visits", "0.25", "0.000001", (1, 0, 0, 0), (1, 1, 1), (("standard", "GB", 1),)),
        _row(None, q=(0, 0, 1, 0)),
    ],
}


async def _report(store: Any, signer: HeadSigner, **params: str) -> dict[str, Any]:
    parsed, problems = parse_params(params.get("from"), params.get("to"), params.get("period"))
    assert problems == []
    return await store_report(store, parsed, signer.sign)


@pytest.fixture
def signer() -> HeadSigner:
    return HeadSigner(Ed25519PrivateKey.generate())


async def test_report_matches_the_hand_computed_totals(
    store: Any, backend: Backend, signer: HeadSigner
) -> None:
    await seed(store, backend.clock)
    report = await _report(store, signer, **{"from": "2026-01-01", "to": "2026-03-01",
                                             "period": "month"})  # fmt: skip
    upto, head_hash = await store.audit_head()
    assert report["upto"] == upto == 17
    head = SignedHead.from_json(report["signed_head"])
    assert (head.seq, head.hash) == (upto, head_hash)
    assert verify_head(head, signer.public_key) is None
    assert report["periods"] == [JANUARY, FEBRUARY]
    assert (report["from"], report["to"], report["period"]) == ("2026-01-01", "2026-03-01", "month")


async def test_defaults_and_longer_periods_add_up_the_same_records(
    store: Any, backend: Backend, signer: HeadSigner
) -> None:
    await seed(store, backend.clock)
    whole = await _report(store, signer)
    assert (whole["from"], whole["to"], whole["period"]) == ("2026-01-10", "2026-02-21", "all")
    (only,) = whole["periods"]
    visits = next(d for d in only["datasets"] if d["dataset"] == "visits")
    assert (visits["epsilon"], visits["delta"]) == ("0.85", "0.000001")
    assert visits["queries"] == {"released": 3, "cached": 1, "refused": 1, "failed": 1}
    quarter = await _report(store, signer, period="quarter", to="2026-04-01")
    assert [p["label"] for p in quarter["periods"]] == ["2026-Q1"]
    assert quarter["periods"][0]["datasets"] == only["datasets"]
    assert quarter["periods"][0]["from"] == "2026-01-10"  # clipped to the log's first day


async def test_no_name_of_a_person_licence_or_query_appears(
    store: Any, backend: Backend, signer: HeadSigner
) -> None:
    await seed(store, backend.clock)
    report = await _report(store, signer, period="month")
    for fmt in ("json", "csv", "html"):
        body = render(report, fmt).decode("utf-8")
        for secret in SECRETS:
            assert secret not in body, (fmt, secret)


async def _export_lines(store: Any, signer: HeadSigner) -> list[bytes]:
    upto, _ = await store.audit_head()
    chunks = [c async for c in export.stream_jsonl(store, upto, signer.sign)]
    return b"".join(chunks).splitlines(keepends=True)


def _edit(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(report: dict[str, Any]) -> None:
        node: Any = report
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return apply


def _drop_row(report: dict[str, Any]) -> None:
    del report["periods"][0]["datasets"][0]


EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "epsilon": (_edit(("periods", 0, "datasets", 1, "epsilon"), "0.5"),
                "periods[2026-01].datasets[visits].epsilon: the report says \"0.5\", "
                "the export gives \"0.6\""),
    "delta": (_edit(("periods", 0, "datasets", 0, "delta"), "0"),
              "periods[2026-01].datasets[claims].delta"),
    "released": (_edit(("periods", 1, "datasets", 1, "queries", "released"), 0),
                 "periods[2026-02].datasets[visits].queries.released"),
    "refused": (_edit(("periods", 1, "datasets", 2, "queries", "refused"), 0),
                "periods[2026-02].datasets[null].queries.refused"),
    "licences": (_edit(("periods", 0, "datasets", 1, "active_licences", 0, "count"), 2),
                 "periods[2026-01].datasets[visits].active_licences[enhanced/FR].count"),
    "freezes": (_edit(("periods", 1, "datasets", 1, "incidents", "freezes"), 0),
                "periods[2026-02].datasets[visits].incidents.freezes"),
    "org": (_edit(("periods", 1, "organisation_suspensions"), 0),
            "periods[2026-02].organisation_suspensions"),
    "as_of": (_edit(("periods", 0, "licences_as_of"), "2026-01-15T00:00:00.000Z"),
              "periods[2026-01].licences_as_of"),
    "type": (_edit(("periods", 0, "datasets", 1, "queries", "cached"), "1"),
             "periods[2026-01].datasets[visits].queries.cached"),
    "dropped_row": (_drop_row, "periods[2026-01].datasets[claims]: missing from the report"),
    "added_field": (_edit(("periods", 0, "note"), "x"),
                    "periods[2026-01].note: in the report, not in the export"),
    "to": (_edit(("to",), "2026-02-15"), "periods[2026-02].to"),
    "period": (_edit(("period",), "quarter"), "periods[2026-Q1]"),
    "upto": (_edit(("upto",), 15), "signed_head.seq is 17 but the report counts up to seq 15"),
    "head_hash": (_edit(("signed_head", "hash"), "0" * 64),
                  "record 17 of the export does not have the report's signed hash"),
    "bad_params": (_edit(("period",), "week"), "period: must be one of"),
}  # fmt: skip


async def test_the_export_check_accepts_the_report_and_names_every_edit(
    store: Any, backend: Backend, signer: HeadSigner
) -> None:
    await seed(store, backend.clock)
    report = json.loads(render(await _report(store, signer, period="month"), "json"))
    lines = await _export_lines(store, signer)
    assert export.verify_export(lines, key=signer.public_key).valid
    assert check_report(report, lines) == []
    for name, (edit, expected) in EDITS.items():
        edited = copy.deepcopy(report)
        edit(edited)
        problems = check_report(edited, lines)
        assert problems, name
        assert any(expected in p for p in problems), (name, problems)


async def test_a_longer_export_still_checks_a_report_made_earlier(
    store: Any, backend: Backend, signer: HeadSigner
) -> None:
    await seed(store, backend.clock)
    report = json.loads(render(await _report(store, signer, period="month"), "json"))
    _at(backend.clock, 2, 25)
    await _debit(store, _query("lic_d", "Dan Private", "visits", 0.5))
    lines = await _export_lines(store, signer)
    assert check_report(report, lines) == []  # counted up to its own upto only
    short = [line for line in lines if b'"seq":17' not in line and b'"seq":18' not in line]
    assert check_report(report, short[:10]) == [
        "the export ends before record 17, the last one the report counts"
    ]


async def test_a_report_is_reused_until_the_log_grows_or_a_minute_passes(
    store: Any, backend: Backend, signer: HeadSigner
) -> None:
    await seed(store, backend.clock)
    now = [0.0]
    cache = ReportCache(size=2, ttl_s=60.0, clock=lambda: now[0])
    params, _ = parse_params(None, None, "month")
    first = await cache.report(store, params, signer.sign)
    assert await cache.report(store, params, signer.sign) is first
    other = await cache.report(store, parse_params(None, None, "year")[0], signer.sign)
    assert other is not first and await cache.report(store, params, signer.sign) is first
    now[0] = 61.0
    again = await cache.report(store, params, signer.sign)
    assert again is not first and again["periods"] == first["periods"]
    _at(backend.clock, 2, 25)
    await _debit(store, _query("lic_d", "Dan Private", "visits", 0.5))
    grown = await cache.report(store, params, signer.sign)
    assert grown["upto"] == first["upto"] + 1
    assert grown["periods"][1]["datasets"][1]["epsilon"] == "0.75"


async def test_a_log_that_does_not_verify_gets_no_report(
    store: Any, backend: Backend, signer: HeadSigner
) -> None:
    await seed(store, backend.clock)
    await backend.guards_off()
    await backend.raw("UPDATE audit SET epsilon = 0.01 WHERE seq = 4")  # a charge made smaller
    with pytest.raises(AuditUnavailable):
        await _report(store, signer)
