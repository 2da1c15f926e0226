"""The transparency report: what the gateway released, per dataset and period, computed from
the audit log alone (pure: an iterable of records in, a JSON-ready dict out; no store).

Because it is a function of the records with ``seq <= upto`` and of its parameters (``from``,
``to``, ``period``), anyone holding an export can compute it again and compare
(``transparency_check.py``); the report embeds the gateway's signed head of record ``upto``,
which ties it to one state of the log.

Per period and dataset:

- ``epsilon``, ``delta``: the privacy loss charged, as exact decimal text. Each charged record
  (a ``query`` or ``synthetic`` release made fresh, or one that failed after reading data:
  ``audit.record``'s ``FAILED_REASON``/``TIMEOUT_REASON``/``SYNTHETIC_FAILED_REASON``) is put
  on the ledger's grid (``ledger/grid.py``,
  rounded up as the ledger rounds a charge) and summed as integers: no float is ever added.
- ``queries``: releases from the data, queries and DP synthetic tables alike: ``released``
  (fresh, outcome ok), ``cached`` (a repeat at no cost), ``refused`` (outcome denied),
  ``failed`` (charged failures). A synthetic job's submission record (epsilon 0, no result
  yet) is not counted; its release is.
- ``incidents``: dataset freezes (``DATASET_FREEZE``), and suspensions and revocations of
  licences covering the dataset (``licence.update`` records changing ``status``).
- ``active_licences``: licences covering the dataset that are active at the period's end (or
  at record ``upto``'s time if earlier), counted by tier and jurisdiction, replayed from the
  ``licence.create``/``licence.update`` records.

Each period also counts ``organisation_suspensions`` (``ORGANISATION_SUSPEND``).

Nothing that names a person is reported: no subject, actor, licence id, organisation, purpose
or SQL. A dataset is named only if an accepted record names it (a released query, a dataset
change, a licence, a freeze); refusals of any other name (a caller can type anything) count
under ``"dataset": null``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from enclave.audit.record import (
    FAILED_REASON,
    SYNTHETIC_FAILED_REASON,
    TIMEOUT_REASON,
    AuditRecord,
)
from enclave.audit.transparency_params import MAX_PERIODS, ReportParams, period_bounds
from enclave.inputs import invalid, parse_when
from enclave.ledger.grid import Amount, stored_units
from enclave.models import iso

REPORT_KIND = "enclave-transparency-report"
REPORT_VERSION = 1
# Incident actions another part of the gateway emits (a dataset freeze, every licence of an
# organisation suspended at once); they are counted as soon as they appear in the log.
DATASET_FREEZE = "dataset.freeze"
ORGANISATION_SUSPEND = "organisation.suspend"
CHARGED_FAILURES = frozenset({FAILED_REASON, TIMEOUT_REASON, SYNTHETIC_FAILED_REASON})
#: the actions that release from the data: queries (synchronous or as jobs) and DP synthetic
#: tables; both count as releases, and their charges in the privacy loss
RELEASES = frozenset({"query", "synthetic"})
LICENCE_KEYS = ("tier", "datasets", "jurisdiction", "valid_from", "valid_until", "status")
_ONE_MS = dt.timedelta(milliseconds=1)
# The store's timestamp form (``models.iso``): read as text, without parsing each one.
_ISO_TS = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$", re.A)
_MEMO = 4096  # distinct (epsilon, delta) pairs remembered on the grid


@dataclass
class Usage:
    epsilon: int = 0  # grid units
    delta: int = 0
    released: int = 0
    cached: int = 0
    refused: int = 0
    failed: int = 0
    freezes: int = 0
    suspensions: int = 0
    revocations: int = 0

    def add(self, other: Usage) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _submission(record: AuditRecord) -> bool:
    """A synthetic job's submission record (free, no release yet: epsilon 0, no digest)."""
    return (
        record.action == "synthetic"
        and record.outcome == "ok"
        and not record.cached
        and record.result_sha256 is None
    )


@dataclass
class _Licence:
    """A licence as the log tells it: its states in log order, each with the record's time."""

    states: list[tuple[dt.datetime, dict[str, Any]]] = field(default_factory=list)

    def at(self, when: dt.datetime) -> dict[str, Any] | None:
        found = None
        for ts, state in self.states:
            if ts <= when:
                found = state
        return found


class Tally:
    """Feed records in ``seq`` order (``feed``); then ``report(params, head)``."""

    def __init__(self) -> None:
        self.usage: dict[tuple[str | None, dt.date], Usage] = {}
        self.org_suspensions: dict[dt.date, int] = {}
        self.licences: dict[str, _Licence] = {}
        self.named: set[str] = set()  # datasets an accepted record names
        self.upto = 0  # seq of the last record fed
        self.first_ts: str | None = None  # timestamps in the store's form compare as text
        self.last_ts: str | None = None
        self._days: dict[str, dt.date] = {}
        self._costs: dict[tuple[Any, Any], tuple[int, int]] = {}

    def feed(self, record: AuditRecord) -> None:
        self.upto = record.seq
        ts = record.ts
        if not (isinstance(ts, str) and _ISO_TS.match(ts)):
            ts = iso(parse_when(ts))  # any other form the gateway never wrote
        day = self._days.get(ts[:10])
        if day is None:
            day = self._days[ts[:10]] = dt.date.fromisoformat(ts[:10])
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        action, outcome = record.action, record.outcome
        if action in RELEASES:
            if not _submission(record):
                self._query(record, day)
        elif outcome != "ok":
            return
        elif action in ("licence.create", "licence.update"):
            self._licence(record, parse_when(ts), day)
        elif action == DATASET_FREEZE and record.dataset:
            self.named.add(record.dataset)
            self._usage(record.dataset, day).freezes += 1
        elif action == ORGANISATION_SUSPEND:
            self.org_suspensions[day] = self.org_suspensions.get(day, 0) + 1
        elif action == "dataset.update" and record.dataset:
            self.named.add(record.dataset)

    def _usage(self, dataset: str | None, day: dt.date) -> Usage:
        key = (dataset, day)
        found = self.usage.get(key)
        if found is None:
            found = self.usage[key] = Usage()
        return found

    def _query(self, record: AuditRecord, day: dt.date) -> None:
        outcome = record.outcome
        if outcome == "denied":
            self._usage(record.dataset, day).refused += 1
            return
        cached = outcome == "ok" and record.cached is True
        released = outcome == "ok" and not record.cached
        failed = outcome == "error" and record.reason in CHARGED_FAILURES
        if not (cached or released or failed):
            return  # an error before any data was read: neither charged nor counted
        usage = self._usage(record.dataset, day)
        if record.dataset:
            self.named.add(record.dataset)
        if cached:
            usage.cached += 1
            return
        usage.released += released
        usage.failed += failed
        eps, delta = self._cost(record.epsilon, record.delta)
        usage.epsilon += eps
        usage.delta += delta

    def _cost(self, epsilon: Any, delta: Any) -> tuple[int, int]:
        """A record's charge on the ledger's grid (rounded up, as the ledger rounds it)."""
        key = (epsilon, delta)
        found = self._costs.get(key)
        if found is None:
            found = stored_units(epsilon, delta)
            if len(self._costs) < _MEMO:
                self._costs[key] = found
        return found

    def _licence(self, record: AuditRecord, when: dt.datetime, day: dt.date) -> None:
        key = record.licence_id
        if not key:
            return
        detail = record.detail if isinstance(record.detail, dict) else {}
        lic = self.licences.setdefault(key, _Licence())
        before: dict[str, Any] = lic.states[-1][1] if lic.states else {"datasets": ()}
        if record.action == "licence.create":
            given = detail.get("after")
            state: dict[str, Any] = {"tier": record.tier, "datasets": (), "status": "active"}
        else:
            given = detail.get("changes")
            state = dict(before)
        state.update(_licence_fields(given if isinstance(given, dict) else {}))
        lic.states.append((when, state))
        datasets: tuple[str, ...] = state["datasets"]
        self.named.update(datasets)
        status = state.get("status")
        if status != before.get("status") and status in ("suspended", "revoked"):
            for name in datasets:
                usage = self._usage(name, day)
                if status == "suspended":
                    usage.suspensions += 1
                else:
                    usage.revocations += 1

    def report(self, params: ReportParams, head: dict[str, Any] | None) -> dict[str, Any]:
        """The report over everything fed; ``head`` is the signed head of the last record."""
        last = parse_when(self.last_ts) if self.last_ts else None
        start, end = self._range(params, last)
        bounds = period_bounds(start, end, params.period)
        if len(bounds) > MAX_PERIODS:
            raise invalid([f"to: the range holds more than {MAX_PERIODS} periods"])
        names = sorted(self.named)
        by_day: dict[tuple[str | None, dt.date], Usage] = {}
        for (name, day), usage in self.usage.items():
            key = (name if name in self.named else None, day)
            by_day.setdefault(key, Usage()).add(usage)
        periods = []
        for label, since, until in bounds:
            periods.append(self._period(label, since, until, last, names, by_day))
        return {
            "report": REPORT_KIND,
            "version": REPORT_VERSION,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "period": params.period,
            "upto": self.upto,
            "signed_head": head,
            "periods": periods,
        }

    def _range(self, params: ReportParams, last: dt.datetime | None) -> tuple[dt.date, dt.date]:
        """``[from, to)`` with the defaults filled in: from the first record's day to the day
        after the last (today for an empty log); never empty, so a report always has a range
        its own check accepts."""
        day = dt.timedelta(days=1)
        first = dt.date.fromisoformat(self.first_ts[:10]) if self.first_ts else None
        start = params.start or first or dt.datetime.now(dt.UTC).date()
        if params.end is None:
            return start, max(start, last.date() if last else start) + day
        return (params.start or min(start, params.end - day)), params.end

    def _period(
        self,
        label: str,
        first: dt.date,
        last: dt.date,
        last_ts: dt.datetime | None,
        names: list[str],
        by_day: dict[tuple[str | None, dt.date], Usage],
    ) -> dict[str, Any]:
        sums: dict[str | None, Usage] = {}
        for (name, day), usage in by_day.items():
            if first <= day < last:
                sums.setdefault(name, Usage()).add(usage)
        end_instant = dt.datetime.combine(last, dt.time(), dt.UTC) - _ONE_MS
        as_of = min(end_instant, last_ts) if last_ts else end_instant
        active = self._active(as_of)
        rows = [_dataset_row(n, sums.get(n, Usage()), active.get(n, {})) for n in names]
        if None in sums:
            rows.append(_dataset_row(None, sums[None], {}))
        orgs = sum(n for day, n in self.org_suspensions.items() if first <= day < last)
        return {
            "label": label,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "licences_as_of": iso(as_of),
            "organisation_suspensions": orgs,
            "datasets": rows,
        }

    def _active(self, when: dt.datetime) -> dict[str, dict[tuple[str, str], int]]:
        out: dict[str, dict[tuple[str, str], int]] = {}
        for lic in self.licences.values():
            state = lic.at(when)
            if state is None or state.get("status") != "active":
                continue
            since, until = state.get("valid_from"), state.get("valid_until")
            if (since is not None and when < since) or (until is not None and when >= until):
                continue
            key = (str(state.get("tier") or ""), str(state.get("jurisdiction") or ""))
            for name in state["datasets"]:
                counts = out.setdefault(name, {})
                counts[key] = counts.get(key, 0) + 1
        return out


def _licence_fields(given: dict[str, Any]) -> dict[str, Any]:
    """The fields of a licence record (``after`` or ``changes``) the report replays, read the
    way the admin API reads them; a value that does not read is left out."""
    out: dict[str, Any] = {}
    for key in LICENCE_KEYS:
        value = given.get(key)
        if key in ("valid_from", "valid_until") and isinstance(value, str):
            try:
                out[key] = parse_when(value, end_of_day=key == "valid_until")
            except ValueError:
                continue
        elif key == "datasets" and isinstance(value, list):
            out[key] = tuple(v for v in value if isinstance(v, str))
        elif key != "datasets" and isinstance(value, str):
            out[key] = value
    return out


def _dataset_row(
    name: str | None, usage: Usage, active: dict[tuple[str, str], int]
) -> dict[str, Any]:
    amount = Amount(usage.epsilon, usage.delta)
    return {
        "dataset": name,
        "epsilon": _amount_text(amount),
        "delta": _amount_text(amount, delta=True),
        "queries": {
            "released": usage.released,
            "cached": usage.cached,
            "refused": usage.refused,
            "failed": usage.failed,
        },
        "incidents": {
            "freezes": usage.freezes,
            "licence_suspensions": usage.suspensions,
            "licence_revocations": usage.revocations,
        },
        "active_licences": [
            {"tier": tier, "jurisdiction": juris, "count": n}
            for (tier, juris), n in sorted(active.items())
        ],
    }


def _amount_text(amount: Amount, delta: bool = False) -> str:
    """An amount's epsilon (or delta) as exact plain decimal text: ``0.5``, ``0.0000001``
    (the grid's values are already normalised; ``f`` keeps small ones out of exponent form)."""
    return format(amount.delta_decimal if delta else amount.epsilon_decimal, "f")
