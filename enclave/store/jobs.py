"""The durable job queue's SQL, one text for both stores (``jobs`` table, migration 6).

A job is a unit of work a request leaves behind (``kind``: ``synthetic`` today; the runner
serves any registered kind). Its life: ``queued`` → ``running`` (claimed by one runner with a
lease) → ``done`` or ``failed``. A runner that dies leaves the job ``running`` with a lease
that runs out; any runner (the same gateway after a restart, or another replica) then claims it
again (``attempts`` counts the claims).

*Never charged twice*: a charged job ends through ``Store.debit(..., job=finish(...))``: the
job's change to ``done``/``failed`` is checked and written *inside the debit's transaction*
(``apply_sqlite``/``apply_postgres``), and it only applies while the runner's ``claim`` token
still holds the job in state ``running``. A second runner that lost its claim, or a repeat of
a finished job, matches no row: ``JobLost`` rolls the whole debit back.

Every statement here is written once with ``?`` placeholders and runs through the store's
driver (``apply``). Both stores keep timestamps as RFC 3339 text (``models.iso``: fixed
width, UTC), so comparing them as text orders them in time.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from enclave.errors import Conflict
from enclave.models import iso
from enclave.store.driver import Row, Tx

STATES: tuple[str, ...] = ("queued", "running", "done", "failed")
ACTIVE = ("queued", "running")
COLUMNS = (
    "id, kind, owner, licence_id, dataset, request_key, request, state, progress, attempts,"
    " claim, lease_until, result, created_at, updated_at"
)
COLUMN_NAMES = tuple(name.strip() for name in COLUMNS.split(","))

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        owner TEXT NOT NULL,
        licence_id TEXT NOT NULL,
        dataset TEXT NOT NULL,
        request_key TEXT NOT NULL,
        request TEXT NOT NULL,
        state TEXT NOT NULL,
        progress REAL NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        claim TEXT,
        lease_until TEXT,
        result TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX jobs_claimable ON jobs (state, lease_until)",
    # one active job per licence and request: a repeat while it runs joins it
    "CREATE UNIQUE INDEX jobs_active_request ON jobs (licence_id, request_key)"
    " WHERE state IN ('queued', 'running')",
)


class JobLost(Conflict):
    """The runner no longer holds the job (its lease ran out and another runner claimed it, or
    it has finished): nothing was written."""


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    owner: str  # the subject that submitted it
    licence_id: str
    dataset: str
    request_key: str
    request: dict[str, Any]
    state: str
    progress: float
    attempts: int
    claim: str | None
    lease_until: str | None
    result: dict[str, Any] | None
    created_at: str
    updated_at: str


def queued(
    job_id: str,
    kind: str,
    owner: str,
    licence_id: str,
    dataset: str,
    request_key: str,
    request: dict[str, Any],
    now: dt.datetime,
) -> Job:
    """A new job, queued now: not yet claimed, no progress, no result."""
    stamp = iso(now)
    return Job(
        id=job_id,
        kind=kind,
        owner=owner,
        licence_id=licence_id,
        dataset=dataset,
        request_key=request_key,
        request=request,
        state="queued",
        progress=0.0,
        attempts=0,
        claim=None,
        lease_until=None,
        result=None,
        created_at=stamp,
        updated_at=stamp,
    )


@dataclass(frozen=True)
class JobOp:
    """One statement: ``must_match`` raises ``JobLost`` (rolling its transaction back) when it
    changes no row."""

    sql: str
    args: tuple[Any, ...]
    must_match: bool = False


def _row(values: Row) -> Job:
    d = dict(zip(COLUMN_NAMES, values, strict=True))
    return Job(
        id=d["id"],
        kind=d["kind"],
        owner=d["owner"],
        licence_id=d["licence_id"],
        dataset=d["dataset"],
        request_key=d["request_key"],
        request=json.loads(d["request"]),
        state=d["state"],
        progress=float(d["progress"]),
        attempts=int(d["attempts"]),
        claim=d["claim"],
        lease_until=d["lease_until"],
        result=None if d["result"] is None else json.loads(d["result"]),
        created_at=d["created_at"],
        updated_at=d["updated_at"],
    )


def jobs_of(rows: list[Row]) -> list[Job]:
    return [_row(r) for r in rows]


# --- statements ------------------------------------------------------------------------------


def insert(job: Job) -> JobOp:
    """Insert a queued job; no row back if an active job has the same licence and request."""
    return JobOp(
        f"INSERT INTO jobs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        f" ON CONFLICT DO NOTHING RETURNING {COLUMNS}",
        (
            job.id,
            job.kind,
            job.owner,
            job.licence_id,
            job.dataset,
            job.request_key,
            json.dumps(job.request, sort_keys=True),
            job.state,
            job.progress,
            job.attempts,
            job.claim,
            job.lease_until,
            None if job.result is None else json.dumps(job.result, sort_keys=True),
            job.created_at,
            job.updated_at,
        ),
    )


def get(job_id: str) -> JobOp:
    return JobOp(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))  # noqa: S608


def active(licence_id: str, request_key: str) -> JobOp:
    return JobOp(
        f"SELECT {COLUMNS} FROM jobs WHERE licence_id = ? AND request_key = ?"  # noqa: S608
        " AND state IN ('queued', 'running')",
        (licence_id, request_key),
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
