"""Versioned tiers and datasets, read from the store on every request.

The policy files seed the store once, at first start (when it holds no tier and no dataset),
as version 1 with no audit record. From then on the store is the source of truth: the files are
ignored (a log line says so) and admins change policy through the API, each change a new,
audited version. Every lookup reads the latest version from the store, so a change takes
effect at the next request; the parsed object is cached per (kind, name) together with the
version and body it came from, so a request costs one store read and no re-validation.

Dataset bodies keep ``source`` as written; a relative one is resolved against ``data_dir``
(or, written before that rule, against ``<policies_dir>/datasets``: ``policy/fields.py``) and
must still lie inside ``data_dir`` when rebuilt. A stored body that no longer validates
(e.g. ``data_dir`` moved) is logged; a single lookup then raises ``ServiceUnavailable`` and
listings skip it, so a broken definition never turns into a silent default.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from enclave.audit.record import AuditDraft, AuditRecord
from enclave.config import Config, sqlite_path
from enclave.errors import ConfigError, PolicyFileError, ServiceUnavailable
from enclave.inputs import MAX_TEXT_CHARS
from enclave.models import DatasetSpec, Tier
from enclave.policy.fields import Problems, read_source
from enclave.policy.files import (
    dataset_from_dict,
    dataset_to_dict,
    load_policy_dir,
    tier_from_dict,
    tier_to_dict,
)
from enclave.policy.version import PolicyKind, PolicyVersion
from enclave.store.base import Store

log = logging.getLogger(__name__)
SourceCheck = Callable[[DatasetSpec], Awaitable[list[str]]]
T = TypeVar("T", Tier, DatasetSpec)

SEED_ACTOR = "policy-files"


class Registry:
    def __init__(
        self,
        store: Store,
        policies_dir: Path | None = None,
        data_dir: Path | None = None,
        forbidden: Sequence[Path] = (),
    ) -> None:
        self._store = store
        self._policies_dir = policies_dir
        self._data_dir = data_dir
        self._forbidden = tuple(forbidden)  # see state_paths(): sources may never name these
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
        items: list[tuple[PolicyKind, str, dict[str, Any]]] = [
            ("tier", n, tier_to_dict(t)) for n, t in sorted(found.tiers.items())
        ]
        items += [("dataset", n, dataset_to_dict(d)) for n, d in sorted(found.datasets.items())]
        if not await self._store.seed_policies(items, SEED_ACTOR):
            log.info("policies: another replica seeded the empty store first")
            return False  # another replica seeded the empty store first
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

    async def check_tier(
        self, name: str, body: Any, *, require_reason: bool = True
    ) -> PolicyChange:
        """Validate a new version of tier ``name``; raise ``PolicyFileError`` listing every
        problem (nothing is written). ``reason`` is taken out of the body first; it is required
        when the change touches the budget or ``max_epsilon_per_query`` of an existing tier."""
        problems, body, reason = _split(body, name, f"tier {name}")
        before = await self._store.get_policy("tier", name)
        if_version = _if_version(body, before)
        clean: dict[str, Any] | None = None
        try:
            clean = tier_to_dict(tier_from_dict(body, where=f"tier {name}"))
        except PolicyFileError as exc:
            problems.extend(exc.problems)
        budget_changed = (
            before is not None
            and clean is not None
            and any(before.body.get(k) != clean.get(k) for k in BUDGET_KEYS)
        )
        if budget_changed and require_reason and reason is None:
            problems.append(
                f"tier {name}: reason: required when budget, organisation_budget or "
                "max_epsilon_per_query changes"
            )
        if problems or clean is None:
            raise PolicyFileError(problems)
        return PolicyChange(
            "tier", name, _unversioned(clean), before, reason, budget_changed, if_version
        )

    async def check_dataset(
        self,
        name: str,
        body: Any,
        *,
        forbidden: Sequence[Path] = (),
        source_check: SourceCheck | None = None,
    ) -> PolicyChange:
        """Validate a new version of dataset ``name``: the file rules (source confined to
        ``data_dir`` and never inside ``forbidden``, and present), ``min_tier`` naming defined
        tiers, and, for an existing dataset, the same privacy unit and identifier column (a
        retyped identifier would let its values be grouped or filtered, and budgets already
        spent were per unit). ``source_check`` (the warehouse's) lists problems of the declared
        columns against the source's schema. Raise ``PolicyFileError`` listing every problem."""
        problems, body, reason = _split(body, name, f"dataset {name}")
        before = await self._store.get_policy("dataset", name)
        if_version = _if_version(body, before)
        spec: DatasetSpec | None = None
        try:
            spec = self.validate_dataset(body, where=f"dataset {name}", forbidden=forbidden)
        except PolicyFileError as exc:
            problems.extend(exc.problems)
        if spec is not None:
            known = await self.tier_map()
            problems.extend(
                f"dataset {name}: min_tier: unknown tier {t!r}"
                for t in spec.min_tier
                if t not in known
            )
            if source_check is not None:
                problems.extend(await source_check(spec))
        if before is not None:
            problems.extend(_identifier_problems(name, before.body, body))
            was = before.body.get("retired", False) is True
            if spec is not None and spec.retired != was and reason is None:
                problems.append(f"dataset {name}: reason: required when retiring or restoring")
        clean = None if spec is None else _unversioned(dataset_to_dict(spec))
        budget_changed = (
            before is not None
            and clean is not None
            and before.body.get("total_budget") != clean.get("total_budget")
        )
        if budget_changed and reason is None:
            problems.append(f"dataset {name}: reason: required when total_budget changes")
        if problems or clean is None:
            raise PolicyFileError(problems)
        return PolicyChange("dataset", name, clean, before, reason, budget_changed, if_version)

    async def commit(
        self, change: PolicyChange, actor: str, audit: AuditDraft
    ) -> tuple[PolicyVersion, AuditRecord | None]:
        """Store a checked change as the next version, with its audit record, in one
        transaction, provided the version it was checked against is still the current one
        (checked inside that transaction; ``Conflict`` otherwise, and nothing is written)."""
        return await self._store.put_policy(
            change.kind, change.name, change.body, actor, audit, change.expected_version
        )

    def validate_dataset(
        self,
        body: dict[str, Any],
        where: str = "",
        require_source: bool = True,
        forbidden: Sequence[Path] = (),
    ) -> DatasetSpec:
        root, data = self._dirs()
        return dataset_from_dict(
            body, base_dir=root / "datasets", data_dir=data, where=where,
            require_source=require_source, forbidden=(*self._forbidden, *forbidden),
        )  # fmt: skip

    def source_spec(self, source: Any, forbidden: Sequence[Path] = ()) -> DatasetSpec:
        """A bare spec (no columns) for ``source``, confined as any dataset's source, to read
        a file's schema before it is registered; ``PolicyFileError`` if the path is refused."""
        root, data = self._dirs()
        p = Problems("")
        found = read_source(
            p, source, root / "datasets", data, True, (*self._forbidden, *forbidden)
        )
        p.raise_if_any()
        assert found is not None  # noqa: S101 (a problem was raised otherwise)
        return DatasetSpec(
            name="proposal", description="", source=str(source), source_path=found[0],
            privacy_unit="", max_rows_per_unit=1, min_tier=(), allowed_jurisdictions=None,
            columns=(), source_table=found[1],
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


def registry_for(store: Store, config: Config) -> Registry:
    """The registry of a deployment: its policy folders, with the state store forbidden as a
    dataset source. The one way the app, the CLI and the demo build it."""
    return Registry(
        store, config.policies.dir, config.policies.data_dir, forbidden=state_paths(config)
    )


def state_paths(config: Config) -> tuple[Path, ...]:
    """What a dataset source may never name, even inside ``data_dir``: the engine's state
    folder (bounded tables, the truncation key) and a SQLite store with its side files."""
    paths = [config.engine.state_dir]
    if config.store.url.startswith("sqlite:///") and not config.store.url.endswith(":memory:"):
        db = Path(sqlite_path(config.store.url))
        paths.extend(db.with_name(db.name + suffix) for suffix in ("", "-wal", "-shm", "-journal"))
    return tuple(paths)


#: the keys whose change alters what may be spent: a reason is required, and the audit
#: record's ``detail.budget_change`` holds their old and new values (tiers; ``total_budget``
#: is a dataset's)
BUDGET_KEYS = ("budget", "max_epsilon_per_query", "organisation_budget", "total_budget")
_VERSION_KEYS = ("version", "versions", "created_at", "changed_by")


@dataclass(frozen=True)
class PolicyChange:
    """A validated, not yet stored, new version of a tier or dataset."""

    kind: PolicyKind
    name: str
    body: dict[str, Any]  # the validated JSON form, without "version"
    before: PolicyVersion | None  # the current version (None: this creates the name)
    reason: str | None  # the admin's stated reason, if any
    budget_changed: bool  # a change to a BUDGET_KEYS value (tier budgets and cap, dataset total)
    if_version: int | None = None  # the version the caller said it replaces, if any

    @property
    def expected_version(self) -> int:
        """What the store must still hold at commit: the caller's version, else the one this
        change was checked against (0: none), so the audit digests and the reason rule
        describe the version really replaced."""
        if self.if_version is not None:
            return self.if_version
        return 0 if self.before is None else self.before.version


def _split(body: Any, name: str, where: str) -> tuple[list[str], dict[str, Any], str | None]:
    """(problems, body without reason and read-only keys, reason). ``name`` fills a missing
    ``name``; a different one is a problem. GET's read-only keys (``version``, ``versions``,
    ``created_at``, ``changed_by``) are dropped so an admin can PUT back what they read;
    ``version`` is kept aside for the lost-update check."""
    if not isinstance(body, dict):
        raise PolicyFileError([f"{where}: (top level): must be a JSON object"])
    problems: list[str] = []
    reason = body.get("reason")
    if "reason" in body and (not isinstance(reason, str) or not reason.strip()):
        problems.append(f"{where}: reason: must be a non-empty string")
        reason = None
    elif isinstance(reason, str) and len(reason) > MAX_TEXT_CHARS:
        problems.append(f"{where}: reason: at most {MAX_TEXT_CHARS} characters")
        reason = None
    clean = {k: v for k, v in body.items() if k != "reason" and k not in _VERSION_KEYS}
    if "version" in body:
        clean["_if_version"] = body["version"]
    if clean.get("name", name) != name:
        problems.append(f"{where}: name: must match the name in the URL")
    clean["name"] = name
    return problems, clean, reason.strip() if isinstance(reason, str) else None


def _if_version(body: dict[str, Any], before: PolicyVersion | None) -> int | None:
    """The lost-update guard's ``version`` from the body (as GET returned it), or None when
    the body carries none. For a new name it means nothing (a version copied from another
    definition) and is ignored. The store compares it inside the write transaction."""
    expected = body.pop("_if_version", None)
    if expected is None or before is None:
        return None
    if isinstance(expected, bool) or not isinstance(expected, int):
        raise PolicyFileError(["version: must be the integer version this change is based on"])
    return expected


def _unversioned(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "version"}


def _identifier_problems(name: str, before: dict[str, Any], body: dict[str, Any]) -> list[str]:
    """Read from the raw body, so these are listed even when the body has other problems."""
    out: list[str] = []
    unit, new_unit = before.get("privacy_unit"), body.get("privacy_unit")
    if isinstance(unit, str) and (not isinstance(new_unit, str) or new_unit != unit):
        out.append(f"dataset {name}: privacy_unit: cannot change for an existing dataset")
    old_cols, new_cols = before.get("columns"), body.get("columns")
    old_cols = old_cols if isinstance(old_cols, dict) else {}
    new_cols = new_cols if isinstance(new_cols, dict) else {}
    for col, definition in old_cols.items():
        if isinstance(definition, dict) and definition.get("type") == "identifier":
            new = new_cols.get(col)
            if not isinstance(new, dict) or new.get("type") != "identifier":
                out.append(
                    f"dataset {name}: columns.{col}: an identifier column cannot be "
                    "retyped or removed"
                )
    return out


__all__ = ["BUDGET_KEYS", "SEED_ACTOR", "PolicyChange", "PolicyKind", "Registry", "state_paths"]
