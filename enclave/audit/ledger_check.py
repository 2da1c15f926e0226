"""The budget ledger checked against the audit chain (``enclave audit verify --ledger``): pure
rules over what the store read (records, ledger rows, lifetime totals, grants); no store.

The rules, each reported by ``seq``:

- a record *charges* (``charges``) exactly when ``Store.debit`` wrote it, which is how the
  gateway writes every charge: a ``query`` or ``synthetic`` record with outcome ``ok`` made
  fresh (not ``cached``; for ``synthetic``, a release with its ``result_sha256``, not the free
  submission), or with outcome ``error`` and one of the charged-failure reasons
  (``record.FAILED_REASON``, ``TIMEOUT_REASON``, ``SYNTHETIC_FAILED_REASON``). Each has
  exactly one ledger row, and no other record has one;
- a ledger row names its record (``audit_seq``), with the record's licence, dataset and time,
  and the record's epsilon and delta put on the grid as the charge was (``grid.stored_units``:
  rounded up; the record holds the charge's exact grid value as a float, which reads back
  exactly);
- a lifetime total (``ledger_totals``) is the sum of the ledger rows of its layer key and
  dataset (licence, subject, organisation, dataset: ``store/ledger.py``), except that a total
  stops growing once it reaches ``TOTAL_CAP``: then it lies between the cap and the sum;
- a grant row (``licence_grants``) names a ``licence.grant`` record with outcome ``ok`` and the
  same licence, dataset, reason, actor, time, layer and amounts (the record's ``detail``
  ``grant``, as decimal text), and each such record has its grant row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from enclave.audit.log import decimal_text
from enclave.audit.record import AuditRecord
from enclave.audit.transparency import CHARGED_FAILURES, RELEASES
from enclave.ledger.grid import TOTAL_CAP, Amount, stored_units
from enclave.ledger.rule import Sums, add_row

GRANT_ACTION = "licence.grant"


def charges(record: AuditRecord) -> bool:
    """Whether ``record`` is one ``Store.debit`` wrote (so it has exactly one ledger row)."""
    if record.action not in RELEASES:
        return False
    if record.outcome == "error":
        return record.reason in CHARGED_FAILURES
    if record.outcome != "ok" or record.cached is not False:
        return False
    return record.action == "query" or record.result_sha256 is not None


@dataclass(frozen=True)
class LedgerRow:
    audit_seq: int
    licence_id: str
    dataset: str
    epsilon_units: int
    delta_units: int
    ts: str
    subject: str | None
    organization: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> LedgerRow:
        seq, licence_id, dataset, eps, delta, ts, subject, org = row
        return cls(
            int(seq), str(licence_id), str(dataset), int(eps), int(delta), str(ts),
            None if subject is None else str(subject), None if org is None else str(org),
        )  # fmt: skip


@dataclass(frozen=True)
class GrantRow:
    audit_seq: int
    licence_id: str
    dataset: str
    epsilon_units: int
    delta_units: int
    reason: str
    actor: str
    created_at: str
    layer: str

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> GrantRow:
        seq, licence_id, dataset, eps, delta, reason, actor, created, layer = row
        return cls(
            int(seq), str(licence_id), str(dataset), int(eps), int(delta), str(reason),
            str(actor), str(created), str(layer),
        )  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """One inconsistency: the record's ``seq`` (None for a lifetime total) and what is wrong."""

    seq: int | None
    text: str

    def __str__(self) -> str:
        return self.text if self.seq is None else f"ledger at seq {self.seq}: {self.text}"


@dataclass
class LedgerCheck:
    """Feed pages in ``seq`` order (``page``), then rows naming no record (``orphans``), then
    the lifetime totals (``totals``); ``problems`` holds every inconsistency found."""

    problems: list[Problem] = field(default_factory=list)
    sums: Sums = field(default_factory=dict)
    checked: int = 0

    def page(
        self,
        records: Iterable[AuditRecord],
        ledger: Iterable[LedgerRow],
        grants: Iterable[GrantRow],
    ) -> None:
        """One range of seqs: its records, and the ledger and grant rows naming them."""
        rows: dict[int, list[LedgerRow]] = {}
        for row in ledger:
            rows.setdefault(row.audit_seq, []).append(row)
            self._add(row)
        granted = {g.audit_seq: g for g in grants}
        for record in records:
            self.checked += 1
            self._ledger(record, rows.pop(record.seq, []))
            self._grant(record, granted.pop(record.seq, None))
        self.orphans([r for found in rows.values() for r in found], granted.values(), add=False)

    def orphans(
        self, ledger: Iterable[LedgerRow], grants: Iterable[GrantRow], add: bool = True
    ) -> None:
        """Rows naming a record that does not exist."""
        for row in ledger:
            if add:
                self._add(row)
            self._report(row.audit_seq, "a ledger row names no audit record")
        for grant in grants:
            self._report(grant.audit_seq, "a grant row names no audit record")

    def totals(self, rows: Iterable[Sequence[Any]]) -> None:
        """Every lifetime total against the sum of its ledger rows."""
        seen = set()
        for layer, key, dataset, eps, delta in rows:
            slot = (str(layer), str(key), str(dataset))
            seen.add(slot)
            self._total(slot, Amount(int(eps), int(delta)))
        for slot in sorted(set(self.sums) - seen):
            self._total(slot, Amount())

    # --- the rules ------------------------------------------------------------------------

    def _report(self, seq: int | None, text: str) -> None:
        self.problems.append(Problem(seq, text))

    def _add(self, row: LedgerRow) -> None:
        add_row(self.sums, lambda column: getattr(row, column), row.epsilon_units, row.delta_units)

    def _ledger(self, record: AuditRecord, rows: list[LedgerRow]) -> None:
        seq = record.seq
        if not charges(record):
            for _ in rows:
                self._report(seq, f"a ledger row for a {record.action} record that charged nothing")
            return
        if not rows:
            self._report(seq, "the charged record has no ledger row")
            return
        if len(rows) > 1:
            self._report(seq, f"the charged record has {len(rows)} ledger rows, not one")
        cost = stored_units(record.epsilon, record.delta)
        for row in rows:
            if (row.licence_id, row.dataset) != (record.licence_id, record.dataset):
                self._report(seq, "the ledger row's licence or dataset differs from the record's")
            if (row.epsilon_units, row.delta_units) != cost:
                self._report(
                    seq,
                    f"the ledger row charges {_amount(row.epsilon_units, row.delta_units)},"
                    f" the record {_amount(*cost)}",
                )
            if row.ts != record.ts:
                self._report(seq, "the ledger row's time differs from the record's")

    def _grant(self, record: AuditRecord, grant: GrantRow | None) -> None:
        seq = record.seq
        wanted = record.action == GRANT_ACTION and record.outcome == "ok"
        if grant is None:
            if wanted:
                self._report(seq, "the licence.grant record has no grant row")
            return
        if not wanted:
            self._report(seq, f"a grant row for a {record.action} record ({record.outcome})")
            return
        detail = record.detail if isinstance(record.detail, dict) else {}
        told = detail.get("grant")
        stored = {
            "epsilon": decimal_text(Amount(grant.epsilon_units).epsilon_decimal),
            "delta": decimal_text(Amount(0, grant.delta_units).delta_decimal),
            "layer": grant.layer,
        }
        if told != stored:
            self._report(seq, f"the grant row gives {stored}, the record {told}")
        same = (grant.licence_id, grant.dataset, grant.reason, grant.actor, grant.created_at)
        if same != (record.licence_id, record.dataset, record.reason, record.actor, record.ts):
            self._report(
                seq,
                "the grant row's licence, dataset, reason, actor or time differs from the record's",
            )

    def _total(self, slot: tuple[str, str, str], total: Amount) -> None:
        eps, delta = self.sums.get(slot, [0, 0])
        if _saturated(total.epsilon, eps) and _saturated(total.delta, delta):
            return
        layer, key, dataset = slot
        self._report(
            None,
            f"lifetime total of {layer} {key!r} on {dataset!r} is"
            f" {_amount(total.epsilon, total.delta)}, its ledger rows sum to {_amount(eps, delta)}",
        )


def _saturated(total: int, summed: int) -> bool:
    """``total`` is what adding rows summing to ``summed`` gives (capped at ``TOTAL_CAP``)."""
    return total == summed if summed < TOTAL_CAP else TOTAL_CAP <= total <= summed


def _amount(epsilon: int, delta: int) -> str:
    amount = Amount(epsilon, delta)
    return (
        f"epsilon {decimal_text(amount.epsilon_decimal)} delta {decimal_text(amount.delta_decimal)}"
    )
