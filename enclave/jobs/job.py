"""A job: a unit of work a request leaves behind, in the durable queue (``store/jobs.py``).

``kind``: ``synthetic`` today; the runner serves any registered kind. Its life: ``queued`` →
``running`` (claimed by one runner with a lease) → ``done`` or ``failed``. A runner that dies
leaves the job ``running`` with a lease that runs out; any runner (the same gateway after a
restart, or another replica) then claims it again (``attempts`` counts the claims).

*Never charged twice*: a charged job ends through ``Store.debit(..., job=finish(...))``: the
job's change to ``done``/``failed`` is checked and written *inside the debit's transaction*,
and it only applies while the runner's ``claim`` token still holds the job in state
``running``. A second runner that lost its claim, or a repeat of a finished job, matches no
row: ``JobLost`` rolls the whole debit back.

Timestamps are RFC 3339 text (``models.iso``: fixed width, UTC), so comparing them as text
orders them in time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from enclave.errors import Conflict
from enclave.models import iso

STATES: tuple[str, ...] = ("queued", "running", "done", "failed")
ACTIVE = ("queued", "running")


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
    """One statement of the job queue (built by ``store/jobs.py``, run by ``Store.job_read``,
    ``job_write`` or inside ``Store.debit``): ``must_match`` raises ``JobLost`` (rolling its
    transaction back) when it changes no row."""

    sql: str
    args: tuple[Any, ...]
    must_match: bool = False
