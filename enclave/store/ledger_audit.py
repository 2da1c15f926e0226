"""The budget ledger checked against the audit chain (``enclave audit verify --ledger``): the
reads, once for every database, in one snapshot (``Driver.session(snapshot=True)``), so the
records, ledger rows, grants and lifetime totals are of one moment however the gateway keeps
writing. The rules are ``audit/ledger_check.py``'s.
"""

from __future__ import annotations

from enclave.audit.ledger_check import GrantRow, LedgerCheck, LedgerRow, Problem
from enclave.audit.log import AuditFilter, Progress
from enclave.store import chain, ops
from enclave.store.driver import Tx

#: seqs per page (the records, ledger rows and grants of one page are read together)
PAGE = 5000
LEDGER_SQL = (
    "SELECT audit_seq, licence_id, dataset, epsilon_units, delta_units, ts, subject,"
    " organization FROM ledger"
)
GRANTS_SQL = (
    "SELECT audit_seq, licence_id, dataset, epsilon_units, delta_units, reason, actor,"
    " created_at, layer FROM licence_grants"
)
TOTALS_SQL = "SELECT layer, key, dataset, epsilon_units, delta_units FROM ledger_totals"
RANGE = " WHERE audit_seq >= ? AND audit_seq <= ? ORDER BY audit_seq"
OUTSIDE = " WHERE audit_seq < 1 OR audit_seq > ? ORDER BY audit_seq"


async def check_ledger(
    tx: Tx, progress: Progress | None = None, every: int = 100_000
) -> tuple[int, list[Problem]]:
    """Every inconsistency between the ledger, its totals, the grants and the audit records
    up to the head; and how many records were checked. ``progress(count)`` is called every
    ``every`` records."""
    n = (await chain.head(tx))[0]
    check = LedgerCheck()
    everything = AuditFilter()
    reported = 0
    for start in range(1, n + 1, PAGE):
        end = min(start + PAGE - 1, n)
        records = await ops.audit_events(tx, everything, start - 1, end - start + 1)
        ledger = [LedgerRow.from_row(r) for r in await tx.fetch(LEDGER_SQL + RANGE, start, end)]
        grants = [GrantRow.from_row(r) for r in await tx.fetch(GRANTS_SQL + RANGE, start, end)]
        check.page(records, ledger, grants)
        if progress is not None and check.checked // every > reported:
            reported = check.checked // every
            progress(check.checked)
    check.orphans(
        [LedgerRow.from_row(r) for r in await tx.fetch(LEDGER_SQL + OUTSIDE, n)],
        [GrantRow.from_row(r) for r in await tx.fetch(GRANTS_SQL + OUTSIDE, n)],
    )
    check.totals(await tx.fetch(TOTALS_SQL))
    return check.checked, check.problems
