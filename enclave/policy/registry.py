"""Versioned tiers and datasets, read from the store on every request.

The policy files seed the store once, at first start (when it holds no tier and no dataset),
as version 1 with no audit record. From then on the store is the source of truth: the files are
ignored (a log line says so) and admins change policy through the API, each change a new,
audited version. Every lookup reads the latest version from the store, so a change takes
effect at the next request; the parsed object is cached per (kind, name) together with the
version and body it came from, so a request costs one store read and no re-validation.

Dataset bodies keep ``source`` as written; it is resolved against ``<policies_dir>/datasets``
and must still lie inside ``data_dir`` when rebuilt. A stored body that no longer validates
(e.g. ``data_dir`` moved) is logged; a single lookup then raises ``ServiceUnavailable`` and
listings skip it, so a broken definition never turns into a silent default.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from enclave.audit.record import AuditDraft, AuditRecord
from enclave.errors import ConfigError, PolicyFileError, ServiceUnavailable
from enclave.models import DatasetSpec, Tier
from enclave.policy.files import (
    dataset_from_dict,
    dataset_to_dict,
    load_policy_dir,
    tier_from_dict,
    tier_to_dict,
)
from enclave.store.base import PolicyKind, PolicyVersion, Store

log = logging.getLogger(__name__)
T = TypeVar("T", Tier, DatasetSpec)

SEED_ACTOR = "policy-files"


class Registry:
    def __init__(
        self, store: Store, policies_dir: Path | None = None, data_dir: Path | None = None
    ) -> None:
        self._store = store
        self._policies_dir = policies_dir
        self._data_dir = data_dir
        self._cache: dict[tuple[str, str], tuple[int, dict[str, Any], Tier | DatasetSpec]] = {}

    # --- seeding ---------------------------------------------------------------------------

    async def seed(self, policies_dir: Path | None = None, data_dir: Path | None = None) -> bool:
        """Put every policy file into an empty store as version 1; True if it did.

        Raises ``PolicyFileError`` (every problem) if the files do not validate, so a first
        start with broken policy refuses to serve rather than serving half of it.
        """
        self._policies_dir = policies_dir or self._policies_dir
        self._data_dir = data_dir or self._data_dir
        root, data = self._dirs()
        if await self._store.list_policies("tier") or await self._store.list_policies("dataset"):
            log.info("policies: the store holds tiers/datasets; files in %s are ignored", root)
            return False
        found = load_policy_dir(root, data)
        if found.problems:
            raise PolicyFileError(found.problems)
        for name, tier in sorted(found.tiers.items()):
            await self._store.put_policy("tier", name, tier_to_dict(tier), SEED_ACTOR, None)
        for name, spec in sorted(found.datasets.items()):
            await self._store.put_policy("dataset", name, dataset_to_dict(spec), SEED_ACTOR, None)
        log.info(
            "policies: seeded %d tier(s) and %d dataset(s) from %s",
            len(found.tiers), len(found.datasets), root,
        )  # fmt: skip
        return True

    # --- reads -----------------------------------------------------------------------------

    async def tier(self, name: str) -> Tier | None:
        found = await self._store.get_policy("tier", name)
        return None if found is None else self._tier(found, strict=True)

    async def dataset(self, name: str) -> DatasetSpec | None:
        found = await self._store.get_policy("dataset", name)
        return None if found is None else self._dataset(found, strict=True)

    async def tiers(self) -> list[Tier]:
        """Every tier (latest versions), sorted by name; one store read."""
        found = sorted(await self._store.list_policies("tier"), key=lambda v: v.name)
        return [t for t in (self._tier(v, strict=False) for v in found) if t is not None]

    async def tier_map(self) -> dict[str, Tier]:
        """``{name: tier}``: what ``authorize(..., tiers=)`` needs for tier levels."""
        return {t.name: t for t in await self.tiers()}

    async def datasets(self) -> list[DatasetSpec]:
        """Every dataset (latest versions), sorted by name; one store read."""
        found = sorted(await self._store.list_policies("dataset"), key=lambda v: v.name)
        return [d for d in (self._dataset(v, strict=False) for v in found) if d is not None]

    # --- admin writes ----------------------------------------------------------------------

    async def put_tier(
        self, name: str, body: dict[str, Any], actor: str, audit: AuditDraft
    ) -> tuple[Tier, AuditRecord | None]:
        """Validate and store a new version of tier ``name`` (the body's name must match)."""
        tier = tier_from_dict(_named(body, name), where=f"tier {name}")
        stored, record = await self._store.put_policy(
            "tier", name, tier_to_dict(tier), actor, audit
        )
        return replace(tier, version=stored.version), record

    async def put_dataset(
        self, name: str, body: dict[str, Any], actor: str, audit: AuditDraft
    ) -> tuple[DatasetSpec, AuditRecord | None]:
        """Validate (source file must exist, ``min_tier`` must name defined tiers) and store."""
        spec = self.validate_dataset(_named(body, name), where=f"dataset {name}")
        known = await self.tier_map()
        unknown = [t for t in spec.min_tier if t not in known]
        if unknown:
            raise PolicyFileError([f"dataset {name}: min_tier: unknown tier {unknown[0]!r}"])
        stored, record = await self._store.put_policy(
            "dataset", name, dataset_to_dict(spec), actor, audit
        )
        return replace(spec, version=stored.version), record

    def validate_dataset(
        self, body: dict[str, Any], where: str = "", require_source: bool = True
    ) -> DatasetSpec:
        root, data = self._dirs()
        return dataset_from_dict(
            body, base_dir=root / "datasets", data_dir=data, where=where,
            require_source=require_source,
        )  # fmt: skip

    # --- internals -------------------------------------------------------------------------

    def _dirs(self) -> tuple[Path, Path]:
        if self._policies_dir is None or self._data_dir is None:
            raise ConfigError(["registry: policies dir and data dir are not configured"])
        return self._policies_dir, self._data_dir

    def _cached(self, found: PolicyVersion) -> Tier | DatasetSpec | None:
        hit = self._cache.get((found.kind, found.name))
        if hit is not None and hit[0] == found.version and hit[1] == found.body:
            return hit[2]
        return None

    def _tier(self, found: PolicyVersion, *, strict: bool) -> Tier | None:
        hit = self._cached(found)
        if isinstance(hit, Tier):
            return hit
        try:
            tier = tier_from_dict(found.body, where=f"stored tier {found.name}")
        except PolicyFileError as exc:
            self._broken(found, exc, strict)
            return None
        return self._remember(found, replace(tier, version=found.version))

    def _dataset(self, found: PolicyVersion, *, strict: bool) -> DatasetSpec | None:
        hit = self._cached(found)
        if isinstance(hit, DatasetSpec):
            return hit
        try:
            spec = self.validate_dataset(
                found.body, where=f"stored dataset {found.name}", require_source=False
            )
        except PolicyFileError as exc:
            self._broken(found, exc, strict)
            return None
        return self._remember(found, replace(spec, version=found.version))

    def _remember(self, found: PolicyVersion, obj: T) -> T:
        self._cache[(found.kind, found.name)] = (found.version, found.body, obj)
        return obj

    def _broken(self, found: PolicyVersion, exc: PolicyFileError, strict: bool) -> None:
        log.error("policies: stored %s %r v%d no longer validates: %s",
                  found.kind, found.name, found.version, exc.detail)  # fmt: skip
        if strict:
            raise ServiceUnavailable(f"{found.kind} definition is invalid; see the server log")


def _named(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The body with ``name`` filled from the URL; a different name in the body is refused."""
    if not isinstance(body, dict):
        raise PolicyFileError(["(top level): must be a JSON object"])
    if body.get("name", name) != name:
        raise PolicyFileError(["name: must match the name in the URL"])
    return {**body, "name": name}


__all__ = ["SEED_ACTOR", "PolicyKind", "Registry"]
