"""Versioned tiers and datasets: a version as stored, and the lost-update guard.

Every change to a tier or dataset stores a new version (previous + 1, or 1) beside the old
ones (``Store.put_policy``), so the history can be read back and any version named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from enclave.errors import Conflict

PolicyKind = Literal["tier", "dataset"]


@dataclass(frozen=True)
class PolicyVersion:
    kind: PolicyKind
    name: str
    version: int
    body: dict[str, Any]  # the validated JSON form (as the YAML file, plus "version")
    created_at: str
    actor: str


def next_policy_version(current: int | None, expected: int | None) -> int:
    """The version a policy write creates, read under the write lock: the lost-update
    guard. ``expected`` (None: write regardless) must equal the current version (0: no
    version yet), else ``Conflict``: someone changed it since it was read."""
    have = int(current or 0)
    if expected is not None and expected != have:
        if expected == 0:
            raise Conflict("it was created meanwhile; re-read and retry")
        raise Conflict(f"version {expected} is not the current version ({have}); re-read and retry")
    return have + 1
