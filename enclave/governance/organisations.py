"""An organisation under suspension (``organisation.suspend``) gets no new licence either:
otherwise one admin could issue fresh licences around the suspension. The hold is lifted only
by an approved ``organisation.reactivate``."""

from __future__ import annotations

from enclave.errors import Conflict
from enclave.models import Licence
from enclave.store.base import Store


async def suspension_problem(store: Store, licence: Licence) -> str | None:
    """The problem with issuing ``licence`` if its organisation is suspended, else None."""
    if await store.held_licences(licence.organization):
        return (
            f"organization: {licence.organization!r} is suspended; no licence is issued to it "
            "until its reactivation is approved"
        )
    return None


async def refuse_if_suspended(store: Store, licence: Licence) -> None:
    if (problem := await suspension_problem(store, licence)) is not None:
        raise Conflict(problem)
