"""Every admin and auditor input is validated where it is given: query strings (one strict
reader: ASCII digits, ranges, every problem listed), dates (one parser: bounded years, no
overflow after a zone shift, a date-only ``valid_until`` covering its whole day), string
lengths, licence jurisdictions against the tier and dataset rules. Never a 500."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from enclave.inputs import MAX_NAME_CHARS, MAX_PAGE, MAX_PATH_CHARS, MAX_TEXT_CHARS
from enclave.models import utcnow
from tests.web.test_admin_licences import ADMIN, call, new_licence

AUDITOR = ("olga", ["auditor"])


async def get_as(gw: Any, who: tuple[str, list[str]], path: str) -> tuple[int, Any]:
    resp = await gw.client.get(path, headers=gw.auth(*who))
    return resp.status, await resp.json(content_type=None)


# --- query strings --------------------------------------------------------------------------

UNICODE_DIGITS = ("²", "١٢", "５", "𝟙")


@pytest.mark.parametrize("digits", UNICODE_DIGITS)
async def test_unicode_digits_are_a_400_on_every_integer_parameter(
    make_gateway: Any, digits: str
) -> None:
    gw = await make_gateway()
    await gw.licence("alice")
    for who, path in (
        (("alice", ["researcher"]), f"/v1/queries?limit={digits}"),
        (ADMIN, f"/v1/admin/licences?expiring_within_days={digits}"),
        (ADMIN, f"/v1/admin/tiers/standard?version={digits}"),
        (ADMIN, f"/v1/admin/datasets/visits?version={digits}"),
        (AUDITOR, f"/v1/audit/events?limit={digits}"),
    ):
        status, body = await get_as(gw, who, path)
        assert status == 400, (path, body)
        assert body["type"].endswith("/bad-request") and body["problems"], body


async def test_one_page_cap_for_every_paginated_endpoint(make_gateway: Any) -> None:
    gw = await make_gateway()
    await gw.licence("alice")
    for who, path in ((("alice", ["researcher"]), "/v1/queries"), (AUDITOR, "/v1/audit/events")):
        assert (await get_as(gw, who, f"{path}?limit={MAX_PAGE}"))[0] == 200
        for bad in (str(MAX_PAGE + 1), "0", "-1", "1e3", " 5", "", "9" * 40):
            status, body = await get_as(gw, who, f"{path}?limit={bad}")
            assert status == 400, (path, bad, body)
            assert f"from 1 to {MAX_PAGE}" in body["detail"]


async def test_every_bad_parameter_is_listed_at_once(make_gateway: Any) -> None:
    gw = await make_gateway()
    status, body = await get_as(
        gw,
        AUDITOR,
        "/v1/audit/events?limit=²&since=0001-01-01T00:00:00%2B01:00&outcome=maybe&bogus=1"
        "&actor=" + "a" * (MAX_NAME_CHARS + 1),
    )
    assert status == 400
    fields = sorted(p.split(":")[0] for p in body["problems"])
    assert fields == ["actor", "bogus", "limit", "outcome", "since"], body


async def test_a_repeated_parameter_is_refused(make_gateway: Any) -> None:
    gw = await make_gateway()
    status, body = await get_as(gw, AUDITOR, "/v1/audit/events?limit=1&limit=2")
    assert status == 400 and body["problems"] == ["limit: given more than once"]
    status, body = await get_as(gw, ADMIN, "/v1/admin/licences?subject=a&subject=b")
    assert status == 400 and "more than once" in body["detail"]


async def test_a_foreign_cursor_alone_is_still_invalid_cursor(make_gateway: Any) -> None:
    gw = await make_gateway()
    for bad in ("²", "abc", "9" * 19):
        status, body = await get_as(gw, AUDITOR, f"/v1/audit/events?cursor={bad}")
        assert status == 400 and body["type"].endswith("/invalid-cursor"), body


# --- dates ------------------------------------------------------------------------------------

OVERFLOWING = (
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:00:00-01:00",
    "0001-01-01",
    "1969-12-31T23:59:59Z",
    "10000-01-01",
    "2026-02-30",
    "２０２６-01-01",
    "2026-01-01T00:00:00+24:00",
)


@pytest.mark.parametrize("when", OVERFLOWING)
async def test_dates_out_of_range_are_a_400_everywhere(make_gateway: Any, when: str) -> None:
    gw = await make_gateway()
    status, body = await call(gw, "POST", "/v1/admin/licences", new_licence(valid_until=when))
    assert status == 400 and "valid_until" in body["detail"], body
    status, body = await call(gw, "POST", "/v1/admin/licences", new_licence(valid_from=when))
    assert status == 400 and "valid_from" in body["detail"], body
    status, created = await call(gw, "POST", "/v1/admin/licences", new_licence())
    assert status == 201, created
    patch = {"valid_until": when, "reason": "extend"}
    status, body = await call(gw, "PATCH", f"/v1/admin/licences/{created['id']}", patch)
    assert status == 400 and "valid_until" in body["detail"], body
    for path in ("/v1/audit/events", "/v1/audit/summary"):
        for name in ("since", "until"):
            quoted = when.replace("+", "%2B")
            status, body = await get_as(gw, AUDITOR, f"{path}?{name}={quoted}")
            assert status == 400 and body["problems"][0].startswith(name), body


async def test_a_date_only_valid_until_covers_its_whole_day(make_gateway: Any) -> None:
    gw = await make_gateway()
    day = (utcnow() + dt.timedelta(days=30)).date().isoformat()
    status, lic = await call(
        gw, "POST", "/v1/admin/licences", new_licence(valid_from="2026-01-01", valid_until=day)
    )
    assert status == 201, lic
    assert lic["valid_until"].startswith(f"{day}T23:59:59.999")
    assert lic["valid_from"].startswith("2026-01-01T00:00:00.000")
    # a date-only value that is today is still in the future until the day ends
    today = utcnow().date().isoformat()
    status, lic = await call(
        gw, "POST", "/v1/admin/licences", new_licence(subject="carol", valid_until=today)
    )
    assert status == 201, lic
    # a full timestamp means exactly that instant
    status, lic = await call(
        gw,
        "POST",
        "/v1/admin/licences",
        new_licence(subject="dave", valid_until=f"{day}T12:00:00+02:00"),
    )
    assert status == 201 and lic["valid_until"].startswith(f"{day}T10:00:00.000"), lic


# --- lengths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "limit"),
    [("subject", MAX_NAME_CHARS), ("organization", MAX_NAME_CHARS), ("purpose", MAX_TEXT_CHARS)],
)
async def test_licence_text_fields_are_capped(make_gateway: Any, field: str, limit: int) -> None:
    gw = await make_gateway()
    status, _ = await call(gw, "POST", "/v1/admin/licences", new_licence(**{field: "x" * limit}))
    assert status == 201
    status, body = await call(
        gw, "POST", "/v1/admin/licences", new_licence(**{field: "y" * (limit + 1)})
    )
    assert status == 400 and body["problems"] == [f"{field}: at most {limit} characters"]


async def test_reasons_are_capped(make_gateway: Any) -> None:
    gw = await make_gateway()
    status, lic = await call(gw, "POST", "/v1/admin/licences", new_licence())
    long = "r" * (MAX_TEXT_CHARS + 1)
    status, body = await call(
        gw, "PATCH", f"/v1/admin/licences/{lic['id']}", {"status": "suspended", "reason": long}
    )
    assert status == 400 and "reason" in body["detail"]
    status, body = await call(gw, "POST", "/v1/admin/revocations", {"jti": "j1", "reason": long})
    assert status == 400 and "reason" in body["detail"]
    status, tier = await call(gw, "GET", "/v1/admin/tiers/open")
    status, body = await call(gw, "PUT", "/v1/admin/tiers/open", {**tier, "reason": long})
    assert status == 400 and "reason: at most" in body["detail"]


async def test_a_huge_source_path_or_description_is_a_400(make_gateway: Any) -> None:
    gw = await make_gateway()
    status, ds = await call(gw, "GET", "/v1/admin/datasets/visits")
    for over in (
        {"source": "a/" * 20_000 + "x.parquet"},
        {"source": "x" * (MAX_PATH_CHARS + 1) + ".csv"},
        {"source": "a" * 300 + ".parquet"},  # one path component longer than the OS allows
        {"description": "d" * (MAX_TEXT_CHARS + 1)},
    ):
        status, body = await call(gw, "PUT", "/v1/admin/datasets/visits", {**ds, **over})
        assert status == 400, (list(over), body)
        assert body["type"].endswith("/policy-invalid")


# --- jurisdiction -----------------------------------------------------------------------------


async def test_a_licence_its_tier_or_dataset_forbids_is_never_issued(make_gateway: Any) -> None:
    gw = await make_gateway()
    # accredited allows GB and IE only
    status, body = await call(
        gw, "POST", "/v1/admin/licences", new_licence(tier="accredited", jurisdiction="US")
    )
    assert status == 400
    assert body["problems"] == [
        "jurisdiction: US is not allowed by tier 'accredited' (its allowed_jurisdictions: GB, IE)"
    ]
    # the dataset allows GB IE FR DE NL US CA; the open tier allows any
    status, body = await call(
        gw, "POST", "/v1/admin/licences", new_licence(tier="open", jurisdiction="JP")
    )
    assert status == 400 and body["problems"][0].startswith(
        "jurisdiction: JP is not allowed for dataset 'visits'"
    )
    assert (await call(gw, "GET", "/v1/admin/licences"))[1]["licences"] == []


async def test_a_patch_that_would_make_a_licence_unusable_is_refused(make_gateway: Any) -> None:
    gw = await make_gateway()
    status, lic = await call(gw, "POST", "/v1/admin/licences", new_licence(jurisdiction="US"))
    assert status == 201
    path = f"/v1/admin/licences/{lic['id']}"
    status, body = await call(gw, "PATCH", path, {"tier": "accredited", "reason": "upgrade"})
    assert status == 400 and "not allowed by tier 'accredited'" in body["detail"], body
    status, body = await call(gw, "PATCH", path, {"jurisdiction": "JP"})
    assert status == 400 and "JP is not allowed" in body["detail"], body
    status, body = await call(gw, "PATCH", path, {"jurisdiction": "CA"})
    assert status == 200 and body["jurisdiction"] == "CA", body  # a PATCH that applies
    # suspending always goes through, whatever the rules say now
    status, body = await call(gw, "PATCH", path, {"status": "suspended", "reason": "review"})
    assert status == 200 and body["status"] == "suspended"


# --- the lost-update guard under a race -------------------------------------------------------


@pytest.mark.parametrize("kind", ["tiers/open", "datasets/visits"])
async def test_ten_concurrent_puts_naming_one_version_give_one_200(
    make_gateway: Any, kind: str
) -> None:
    gw = await make_gateway()
    path = f"/v1/admin/{kind}"
    status, current = await call(gw, "GET", path)
    assert status == 200 and current["version"] == 1
    bodies = [{**current, "description": f"change {i}"} for i in range(10)]
    answers = await asyncio.gather(*(call(gw, "PUT", path, body) for body in bodies))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] + [409] * 9, answers
    status, after = await call(gw, "GET", path)
    assert after["versions"] == [1, 2]
    winner = next(body for status, body in answers if status == 200)
    assert after["description"] == winner["description"]
    # without a version, every write lands, each on the version it was checked against
    plain = [{k: v for k, v in b.items() if k != "version"} for b in bodies[:4]]
    answers = await asyncio.gather(*(call(gw, "PUT", path, body) for body in plain))
    assert sorted(status for status, _ in answers) == [200] * 4, answers
    status, after = await call(gw, "GET", path)
    assert after["versions"] == [1, 2, 3, 4, 5, 6]


async def test_a_min_tier_of_lists_is_a_400_not_a_crash(make_gateway: Any) -> None:
    gw = await make_gateway()
    status, ds = await call(gw, "GET", "/v1/admin/datasets/visits")
    for bad in ([[None, None]], [{"a": 1}], [["standard"], "standard"]):
        status, body = await call(gw, "PUT", "/v1/admin/datasets/visits", {**ds, "min_tier": bad})
        assert status == 400 and "min_tier[0]" in body["detail"], body
