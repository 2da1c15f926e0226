"""The registry over the real SQLite store: seeding, versioned reads, admin writes, caching."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from enclave.audit.record import GENESIS_HASH, AuditDraft
from enclave.errors import ConfigError, PolicyFileError, ServiceUnavailable
from enclave.policy.files import dataset_to_dict, tier_to_dict
from enclave.policy.registry import SEED_ACTOR, Registry
from enclave.store import connected_store
from enclave.store.base import Store

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def deployment(tmp_path: Path) -> tuple[Path, Path]:
    """(policies dir, data dir): a copy of the shipped policies and a generated Parquet file."""
    shutil.copytree(REPO_POLICIES, tmp_path / "policies")
    (tmp_path / "data").mkdir()
    with duckdb.connect() as con:
        rel = con.sql("SELECT range AS person_id FROM range(10)")
        assert rel is not None
        rel.write_parquet(str(tmp_path / "data" / "visits.parquet"))
    return tmp_path / "policies", tmp_path / "data"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with connected_store(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        yield opened


def draft(action: str) -> AuditDraft:
    return AuditDraft(action=action, outcome="ok", actor="root", roles=("admin",))


async def seeded(store: Store, deployment: tuple[Path, Path]) -> Registry:
    registry = Registry(store, *deployment)
    assert await registry.seed() is True
    return registry


async def test_first_start_seeds_version_1_without_audit(
    store: Store, deployment: tuple[Path, Path]
) -> None:
    registry = await seeded(store, deployment)
    assert [t.name for t in await registry.tiers()] == ["accredited", "open", "standard"]
    assert [d.name for d in await registry.datasets()] == ["visits"]
    stored = await store.get_policy("tier", "standard")
    assert stored is not None and stored.version == 1 and stored.actor == SEED_ACTOR
    assert await store.audit_head() == (0, GENESIS_HASH)
    tier = await registry.tier("standard")
    assert tier is not None and tier.version == 1 and tier.budget_epsilon == Decimal("5.0")
    spec = await registry.dataset("visits")
    assert spec is not None and spec.version == 1
    assert spec.source == "visits.parquet"  # relative to data_dir
    assert spec.source_path == str((deployment[1] / "visits.parquet").resolve())
    assert await registry.tier("gold") is None and await registry.dataset("gold") is None


async def test_afterwards_the_store_wins_and_files_are_ignored(
    store: Store, deployment: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    await seeded(store, deployment)
    standard = deployment[0] / "tiers" / "standard.yaml"
    standard.write_text(standard.read_text().replace("level: 1", "level: 7"))
    again = Registry(store, *deployment)
    with caplog.at_level(logging.INFO, logger="enclave.policy.registry"):
        assert await again.seed() is False
    assert "files in" in caplog.text and "are ignored" in caplog.text
    tier = await again.tier("standard")
    assert tier is not None and tier.level == 1 and tier.version == 1


async def test_broken_files_refuse_the_first_start_and_write_nothing(
    store: Store, deployment: tuple[Path, Path]
) -> None:
    (deployment[1] / "visits.parquet").unlink()
    with pytest.raises(PolicyFileError) as info:
        await Registry(store, *deployment).seed()
    assert any("datasets/visits.yaml: source: file not found" in p for p in info.value.problems)
    assert await store.list_policies("tier") == []


async def test_a_change_takes_effect_at_once_and_is_audited(
    store: Store, deployment: tuple[Path, Path]
) -> None:
    registry = await seeded(store, deployment)
    reader = Registry(store, *deployment)  # another replica's registry, with a warm cache
    before = await reader.tier("standard")
    assert before is not None and before.max_epsilon_per_query == Decimal("1.0")
    body = {**tier_to_dict(before), "max_epsilon_per_query": 0.25}
    change = await registry.check_tier("standard", body, require_reason=False)
    stored, record = await registry.commit(change, "root", draft("tier.update"))
    assert stored.version == 2 and record is not None and record.action == "tier.update"
    after = await reader.tier("standard")
    assert after is not None and after.version == 2
    assert after.max_epsilon_per_query == Decimal("0.25")


async def test_reads_reuse_the_parsed_object_until_the_version_changes(
    store: Store, deployment: tuple[Path, Path]
) -> None:
    registry = await seeded(store, deployment)
    first = await registry.dataset("visits")
    assert first is not None
    assert await registry.dataset("visits") is first
    assert (await registry.datasets())[0] is first
    body = {**first.to_json(), "max_rows_per_unit": 3}
    change = await registry.check_dataset("visits", body)
    await registry.commit(change, "root", draft("dataset.update"))
    now = await registry.dataset("visits")
    assert now is not first and now.version == 2
    assert now.max_rows_per_unit == 3


async def test_admin_writes_are_validated(store: Store, deployment: tuple[Path, Path]) -> None:
    registry = await seeded(store, deployment)
    spec = await registry.dataset("visits")
    assert spec is not None
    body = spec.to_json()
    with pytest.raises(PolicyFileError, match="min_tier: unknown tier 'gold'"):
        await registry.check_dataset("visits", {**body, "min_tier": "gold"})
    with pytest.raises(PolicyFileError, match="source: must lie inside the data folder"):
        await registry.check_dataset("visits", {**body, "source": "../../state/x.parquet"})
    with pytest.raises(PolicyFileError, match="name: must match the name in the URL"):
        await registry.check_dataset("other", body)
    with pytest.raises(PolicyFileError, match=r"tier open: budget\.epsilon"):
        tier = await registry.tier("open")
        assert tier is not None
        bad = {**tier_to_dict(tier), "budget": {"epsilon": float("nan")}}
        await registry.check_tier("open", bad, require_reason=False)
    stored = await store.get_policy("dataset", "visits")
    assert stored is not None and stored.version == 1  # nothing was written


async def test_a_stored_body_that_no_longer_validates_is_not_served(
    store: Store, deployment: tuple[Path, Path], tmp_path: Path
) -> None:
    registry = await seeded(store, deployment)
    spec = await registry.dataset("visits")
    assert spec is not None
    # an absolute source (a relative one follows the data folder wherever it moves)
    body = {**dataset_to_dict(spec), "source": spec.source_path}
    change = await registry.check_dataset("visits", body)
    await registry.commit(change, "root", draft("dataset.update"))
    moved = Registry(store, deployment[0], tmp_path / "elsewhere")  # data_dir changed
    with pytest.raises(ServiceUnavailable):
        await moved.dataset("visits")
    assert await moved.datasets() == []
    assert len(await registry.datasets()) == 1


async def test_a_registry_without_folders_cannot_rebuild_datasets(
    store: Store, deployment: tuple[Path, Path]
) -> None:
    await seeded(store, deployment)
    with pytest.raises(ConfigError):
        await Registry(store).dataset("visits")
    assert len(await Registry(store).tiers()) == 3  # tiers need no folders


async def test_a_stored_dataset_with_a_float_bound_off_the_grid_is_refused_at_load(
    store: Store, deployment: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A definition stored before the grid rule: its dataset answers 503, and the log names
    the bound, until an admin PUT declares one on the grid."""
    registry = await seeded(store, deployment)
    stored = await store.get_policy("dataset", "visits")
    assert stored is not None
    body = dict(stored.body)
    body["columns"] = {**body["columns"], "cost": {"type": "float", "bounds": [0, 5e-7]}}
    await store.put_policy("dataset", "visits", body, "root", draft("dataset.update"))
    with caplog.at_level(logging.ERROR, logger="enclave.policy.registry"):
        with pytest.raises(ServiceUnavailable):
            await registry.dataset("visits")
    assert "off the stored grid" in caplog.text and "0.000001" in caplog.text
