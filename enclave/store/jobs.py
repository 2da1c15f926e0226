"""The durable job queue's SQL (``jobs`` table, migration 6), one text for both stores: each
statement is a ``JobOp`` run through the store's driver (``apply``), in its own transaction
or inside a debit's (``enclave/jobs/job.py`` says why).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from enclave.jobs.job import Job, JobLost, JobOp
from enclave.models import iso
from enclave.store.driver import Row, Tx

COLUMNS = (
    "id, kind, owner, licence_id, dataset, request_key, request, state, progress, attempts,"
    " claim, lease_until, result, created_at, updated_at"
)
COLUMN_NAMES = tuple(name.strip() for name in COLUMNS.split(","))


def _row(values: Row) -> Job:
    d = dict(zip(COLUMN_NAMES, values, strict=True))
    result = None if d["result"] is None else json.loads(d["result"])
    decoded = {"request": json.loads(d["request"]), "result": result}
    return Job(**d | decoded | {"progress": float(d["progress"]), "attempts": int(d["attempts"])})


def _values(job: Job) -> tuple[Any, ...]:
    """Column values in ``COLUMN_NAMES`` order; the JSON columns as sorted-key text."""
    values = ((c, getattr(job, c)) for c in COLUMN_NAMES)
    return tuple(
        json.dumps(v, sort_keys=True) if c in ("request", "result") and v is not None else v
        for c, v in values
    )


def jobs_of(rows: list[Row]) -> list[Job]:
    return [_row(r) for r in rows]


# --- statements ------------------------------------------------------------------------------


def insert(job: Job) -> JobOp:
    """Insert a queued job; no row back if an active job has the same licence and request."""
    return JobOp(
        f"INSERT INTO jobs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        f" ON CONFLICT DO NOTHING RETURNING {COLUMNS}",
        _values(job),
    )


def get(job_id: str) -> JobOp:
    return JobOp(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))  # noqa: S608


def active(licence_id: str, request_key: str) -> JobOp:
    return JobOp(
        f"SELECT {COLUMNS} FROM jobs WHERE licence_id = ? AND request_key = ?"  # noqa: S608
        " AND state IN ('queued', 'running')",
        (licence_id, request_key),
    )


def active_count(licence_id: str) -> JobOp:
    """How many jobs of ``licence_id`` are queued or running (one row)."""
    return JobOp(
        "SELECT COUNT(*) FROM jobs WHERE licence_id = ? AND state IN ('queued', 'running')",
        (licence_id,),
    )


def claim(token: str, now: dt.datetime, lease_s: float, kinds: tuple[str, ...]) -> JobOp:
    """Claim the oldest claimable job of ``kinds``: queued, or running with a lapsed lease.
    The outer WHERE repeats the test, so of two runners racing for one row only one wins."""
    marks = ", ".join("?" for _ in kinds)
    claimable = (
        f"kind IN ({marks}) AND (state = 'queued' OR (state = 'running' AND lease_until < ?))"
    )
    stamp, until = iso(now), iso(now + dt.timedelta(seconds=lease_s))
    return JobOp(
        "UPDATE jobs SET state = 'running', claim = ?, lease_until = ?, attempts = attempts + 1,"  # noqa: S608
        f" progress = 0, updated_at = ? WHERE id = (SELECT id FROM jobs WHERE {claimable}"
        f" ORDER BY created_at, id LIMIT 1) AND {claimable} RETURNING {COLUMNS}",
        (token, until, stamp, *kinds, stamp, *kinds, stamp),
    )


def renew(job: Job, now: dt.datetime, lease_s: float, progress: float) -> JobOp:
    """Extend the lease and record progress; ``JobLost`` if the claim is gone."""
    return JobOp(
        "UPDATE jobs SET lease_until = ?, progress = ?, updated_at = ?"
        " WHERE id = ? AND claim = ? AND state = 'running' RETURNING id",
        (iso(now + dt.timedelta(seconds=lease_s)), progress, iso(now), job.id, job.claim),
        must_match=True,
    )


def finish(job: Job, state: str, result: dict[str, Any], now: dt.datetime) -> JobOp:
    """``done`` or ``failed``, only while this runner's claim holds the job."""
    if state not in ("done", "failed"):
        raise ValueError(f"a job finishes done or failed, not {state!r}")
    return JobOp(
        "UPDATE jobs SET state = ?, result = ?, progress = ?, lease_until = NULL, updated_at = ?"
        " WHERE id = ? AND claim = ? AND state = 'running' RETURNING id",
        (
            state,
            json.dumps(result, sort_keys=True),
            1.0 if state == "done" else 0.0,
            iso(now),
            job.id,
            job.claim,
        ),
        must_match=True,
    )


def annotate(job_id: str, result: dict[str, Any]) -> JobOp:
    """Replace a done job's result with a fuller one (what is known only after its charge
    committed: a query job's budget left and audit sequence)."""
    return JobOp(
        "UPDATE jobs SET result = ? WHERE id = ? AND state = 'done' RETURNING id",
        (json.dumps(result, sort_keys=True), job_id),
    )


def requeue(job: Job, now: dt.datetime) -> JobOp:
    """Hand a running job back to the queue (a runner stopping cleanly)."""
    return JobOp(
        "UPDATE jobs SET state = 'queued', claim = NULL, lease_until = NULL, progress = 0,"
        " updated_at = ? WHERE id = ? AND claim = ? AND state = 'running' RETURNING id",
        (iso(now), job.id, job.claim),
    )


# --- execution (inside the caller's transaction) ------------------------------------------


async def apply(tx: Tx, op: JobOp) -> list[Row]:
    """Run ``op`` in ``tx``; ``JobLost`` (rolling the transaction back) if it must change a row
    and changes none."""
    rows = await tx.fetch(op.sql, *op.args)
    if op.must_match and not rows:
        raise JobLost("the job is no longer held by this runner")
    return rows
