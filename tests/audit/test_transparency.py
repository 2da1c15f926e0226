"""The pure parts of the transparency report: parameters, calendar periods, licence replay,
the three renderings (escaping, formula cells, the HTML page's CSP) and the difference
naming used by ``enclave audit verify --report``."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

from enclave.audit.chain import chain_hash
from enclave.audit.record import GENESIS_HASH, SYNTHETIC_FAILED_REASON, AuditRecord
from enclave.audit.transparency import Tally
from enclave.audit.transparency_check import differences
from enclave.audit.transparency_params import parse_params, period_bounds
from enclave.audit.transparency_render import CSV_FIELDS, HTML_CSP, STYLE, render
from enclave.config import config_from_dict
from enclave.errors import BadRequest, ConfigError

D = dt.date


def test_parameters_list_every_problem() -> None:
    params, problems = parse_params("2026-02-30", "2026-1-01", "fortnight")
    assert problems == [
        "from: must be a date YYYY-MM-DD between 1970 and 9999",
        "to: must be a date YYYY-MM-DD between 1970 and 9999",
        "period: must be one of month, quarter, year, all",
    ]
    assert params.period == "all"
    assert parse_params("2026-01-01", "2026-01-01", None)[1] == ["from: must be earlier than to"]
    assert parse_params("1970-01-01", "9998-01-01", "month")[1] == [
        "to: the range holds more than 1200 periods"
    ]
    assert parse_params("1970-01-01", "3000-01-01", "year")[1] == []
    assert parse_params(None, None, None) == (parse_params("", "", None)[0], [])


def test_calendar_periods_are_clipped_to_the_range() -> None:
    assert period_bounds(D(2025, 11, 15), D(2026, 2, 10), "month") == [
        ("2025-11", D(2025, 11, 15), D(2025, 12, 1)),
        ("2025-12", D(2025, 12, 1), D(2026, 1, 1)),
        ("2026-01", D(2026, 1, 1), D(2026, 2, 1)),
        ("2026-02", D(2026, 2, 1), D(2026, 2, 10)),
    ]
    assert period_bounds(D(2025, 12, 31), D(2026, 4, 2), "quarter") == [
        ("2025-Q4", D(2025, 12, 31), D(2026, 1, 1)),
        ("2026-Q1", D(2026, 1, 1), D(2026, 4, 1)),
        ("2026-Q2", D(2026, 4, 1), D(2026, 4, 2)),
    ]
    assert period_bounds(D(2025, 6, 1), D(2027, 1, 1), "year")[-1] == (
        "2026",
        D(2026, 1, 1),
        D(2027, 1, 1),
    )
    assert period_bounds(D(2026, 1, 1), D(2026, 1, 1), "all") == []


def _tally(*stamps: str) -> Tally:
    tally = Tally()
    for record in _chain([{"ts": ts, "action": "request"} for ts in stamps]):
        tally.feed(record)
    return tally


def test_default_ranges_are_never_empty() -> None:
    def span(tally: Tally, first: str | None, last: str | None) -> tuple[str, str]:
        report = tally.report(parse_params(first, last, "month")[0], None)
        return report["from"], report["to"]

    log = _tally("2026-01-10T08:00:00.000Z", "2026-03-02T08:00:00.000Z")
    assert span(log, None, None) == ("2026-01-10", "2026-03-03")
    assert span(log, None, "2025-06-01") == ("2025-05-31", "2025-06-01")
    assert span(log, "2027-01-01", None) == ("2027-01-01", "2027-01-02")
    today = dt.datetime.now(dt.UTC).date()
    assert span(Tally(), None, None) == (str(today), str(today + dt.timedelta(days=1)))
    with pytest.raises(BadRequest) as refused:
        span(log, None, "9000-01-01")
    assert refused.value.problems == ["to: the range holds more than 1200 periods"]


def _chain(drafts: list[dict[str, Any]]) -> list[AuditRecord]:
    out, prev = [], GENESIS_HASH
    for seq, fields in enumerate(drafts, start=1):
        body: dict[str, Any] = {
            "seq": seq, "request_id": "r", "actor": "someone", "roles": [], "licence_id": None,
            "tier": None, "dataset": None, "sql": None, "epsilon": 0.0, "delta": 0.0,
            "cached": False, "outcome": "ok", "reason": None, "client": None,
            "result_sha256": None, "prev_hash": prev, "detail": None, **fields,
        }  # fmt: skip
        body["hash"] = prev = chain_hash(prev, body)
        out.append(AuditRecord.from_json(body))
    return out


def test_licence_changes_are_replayed_as_the_admin_api_reads_them() -> None:
    after = {"tier": "standard", "jurisdiction": "GB", "datasets": ["visits"],
             "status": "active", "valid_from": "2026-01-01T00:00:00.000Z",
             "valid_until": "2026-12-31T00:00:00.000Z"}  # fmt: skip
    records = _chain(
        [
            {"ts": "2026-01-05T10:00:00.000Z", "action": "licence.create", "licence_id": "L1",
             "tier": "standard", "detail": {"after": after}},
            # a date-only valid_until means the end of that day, as the admin API reads it
            {"ts": "2026-02-03T10:00:00.000Z", "action": "licence.update", "licence_id": "L1",
             "detail": {"changes": {"valid_until": "2026-02-28", "datasets": ["visits", "x"],
                                    "tier": "high"}}},
            {"ts": "2026-03-01T10:00:00.000Z", "action": "licence.update", "licence_id": "L1",
             "outcome": "denied", "detail": {"changes": {"status": "revoked"}}},
        ]
    )  # fmt: skip
    tally = Tally()
    for record in records:
        tally.feed(record)
    params, _ = parse_params("2026-01-01", "2026-04-01", "month")
    periods = tally.report(params, None)["periods"]
    active = {
        p["label"]: {d["dataset"]: d["active_licences"] for d in p["datasets"]} for p in periods
    }
    one = [{"tier": "standard", "jurisdiction": "GB", "count": 1}]
    high = [{"tier": "high", "jurisdiction": "GB", "count": 1}]
    assert active["2026-01"] == {"visits": one, "x": []}
    assert active["2026-02"] == {"visits": high, "x": high}  # valid to Feb 28, 23:59:59.999
    assert active["2026-03"] == {
        "visits": [],
        "x": [],
    }  # expired; the refused revocation is ignored
    assert all(d["incidents"]["licence_revocations"] == 0 for p in periods for d in p["datasets"])


HOSTILE = {
    "report": "enclave-transparency-report", "version": 1, "from": "2026-01-01",
    "to": "2026-02-01", "period": "all", "upto": 3,
    "signed_head": {"seq": 3, "hash": "<b>", "ts": "t", "key_id": "k", "signature": "s"},
    "periods": [{
        "label": "all", "from": "2026-01-01", "to": "2026-02-01",
        "licences_as_of": "2026-01-31T23:59:59.999Z", "organisation_suspensions": 0,
        "datasets": [{
            "dataset": "</td><script>alert(1)</script>", "epsilon": "0.1", "delta": "0",
            "queries": {"released": 1, "cached": 0, "refused": 0, "failed": 0},
            "incidents": {"freezes": 0, "licence_suspensions": 0, "licence_revocations": 0},
            "active_licences": [{"tier": "=HYPERLINK(\"x\")", "jurisdiction": "<i>", "count": 1}],
        }],
    }],
}  # fmt: skip


def test_html_escapes_every_text_and_runs_no_script() -> None:
    page = render(HOSTILE, "html").decode("utf-8")
    assert "<script" not in page and "<i>" not in page and "<b>" not in page
    assert "&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<style>") == 1 and "@media print" in page
    assert not re.search(r"(?i)\b(src|href)=", page)  # nothing is fetched
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in HTML_CSP
    assert "default-src 'none'" in HTML_CSP and "script-src 'none'" in HTML_CSP


def test_csv_cells_cannot_become_formulas() -> None:
    text = render(HOSTILE, "csv").decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert [len(r) for r in rows] == [len(CSV_FIELDS)] * 3
    assert dict(zip(CSV_FIELDS, rows[2], strict=True))["tier"] == '\'=HYPERLINK("x")'
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text
    assert text.splitlines()[2].startswith("licences,all,2026-01-01,2026-02-01,")


def test_canonical_json_is_sorted_and_compact() -> None:
    body = render(HOSTILE, "json")
    assert body.startswith(b'{"from":"2026-01-01","period":"all","periods":[{"datasets"')
    assert b" " not in body.replace(b"<script>alert(1)", b"")


def test_differences_name_the_field() -> None:
    claimed = {"periods": [{"label": "2026-01", "datasets": [{"dataset": None, "n": 2}]}]}
    actual = {"periods": [{"label": "2026-01", "datasets": [{"dataset": None, "n": 1}]}]}
    assert differences(claimed, actual) == [
        "periods[2026-01].datasets[null].n: the report says 2, the export gives 1"
    ]
    assert differences({"a": True}, {"a": 1}) == ["a: the report says true, the export gives 1"]
    many = differences({"x": list(range(80))}, {"x": [-1] * 80})
    assert len(many) == 51 and many[-1] == "... and 30 more differences"


def test_the_public_switch_is_a_checked_boolean(tmp_path: Path) -> None:
    auth = {"issuer": "https://idp", "audience": "a", "jwks_file": "j.json"}
    assert config_from_dict({"auth": auth}, tmp_path).transparency.public is False
    on = config_from_dict({"auth": auth, "transparency": {"public": True}}, tmp_path)
    assert on.transparency.public is True
    with pytest.raises(ConfigError) as bad:
        config_from_dict({"auth": auth, "transparency": {"public": "yes", "open": 1}}, tmp_path)
    assert bad.value.problems == [
        "transparency.public: must be true or false",
        "transparency.open: unknown key",
    ]


def test_uncharged_errors_count_nowhere_and_name_nothing() -> None:
    tally = Tally()
    for record in _chain(
        [
            {"ts": "2026-01-05T10:00:00.000Z", "action": "query", "dataset": "Eve <b>",
             "outcome": "error", "reason": "the store is unavailable", "epsilon": 0.9},
            {"ts": "2026-01-05T10:00:01.000Z", "action": "query", "dataset": "visits",
             "epsilon": 0.1},
        ]
    ):  # fmt: skip
        tally.feed(record)
    (period,) = tally.report(parse_params(None, None, None)[0], None)["periods"]
    assert [(d["dataset"], d["epsilon"]) for d in period["datasets"]] == [("visits", "0.1")]


def test_synthetic_releases_count_as_releases_and_their_submissions_do_not() -> None:
    """A DP synthetic table releases from the data like a query: its charge is privacy loss."""
    tally = Tally()
    for record in _chain(
        [
            # the job's submission: free, no result yet (not counted)
            {"ts": "2026-01-05T10:00:00.000Z", "action": "synthetic", "dataset": "visits",
             "detail": {"job_id": "job_1"}},
            {"ts": "2026-01-05T10:00:05.000Z", "action": "synthetic", "dataset": "visits",
             "epsilon": 0.7, "result_sha256": "ab" * 32},
            {"ts": "2026-01-05T10:00:06.000Z", "action": "synthetic", "dataset": "visits",
             "cached": True, "result_sha256": "ab" * 32},
            {"ts": "2026-01-05T10:00:07.000Z", "action": "synthetic", "dataset": "visits",
             "outcome": "error", "reason": SYNTHETIC_FAILED_REASON, "epsilon": 0.2},
            {"ts": "2026-01-05T10:00:08.000Z", "action": "synthetic", "dataset": "visits",
             "outcome": "denied", "reason": "the tier does not allow synthetic releases"},
            {"ts": "2026-01-05T10:00:09.000Z", "action": "query", "dataset": "visits",
             "epsilon": 0.1, "result_sha256": "cd" * 32},
            {"ts": "2026-01-05T10:00:10.000Z", "action": "query.submit", "dataset": "visits"},
        ]
    ):  # fmt: skip
        tally.feed(record)
    (period,) = tally.report(parse_params(None, None, None)[0], None)["periods"]
    (visits,) = period["datasets"]
    assert visits["epsilon"] == "1"  # 0.7 + 0.2 + 0.1, summed on the grid
    assert visits["queries"] == {"released": 2, "cached": 1, "refused": 1, "failed": 1}
