"""`enclave policy export` (the store's policy back out as files) and `enclave policy check`."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from enclave.audit.record import AuditDraft
from enclave.cli import main
from enclave.config import Config
from enclave.policy.files import dataset_to_dict, load_policy_dir, tier_to_dict
from enclave.policy.registry import Registry
from enclave.store import open_store


def change_policy(cfg: Config) -> None:
    """Seed the store as the server would, then make admin changes (v2 of standard, a new
    dataset whose data file lives in a sub-folder)."""

    async def go() -> None:
        store = open_store(cfg.store.url)
        await store.open()
        try:
            registry = Registry(store, cfg.policies.dir, cfg.policies.data_dir)
            await registry.seed()
            draft = AuditDraft(action="tier.update", outcome="ok", actor="root", reason="t")
            tier = await registry.tier("standard")
            assert tier is not None
            body = {**tier_to_dict(tier), "budget": {"epsilon": 7.5, "delta": 2e-6}}
            change = await registry.check_tier("standard", body, require_reason=False)
            await registry.commit(change, "root", draft)
            spec = await registry.dataset("visits")
            assert spec is not None
            sub = cfg.policies.data_dir / "2026"
            sub.mkdir()
            shutil.copy(spec.source_path, sub / "clinic.parquet")
            new = {**dataset_to_dict(spec), "name": "clinic", "min_tier": ["standard"]}
            new["source"] = "../../data/2026/clinic.parquet"
            new["allowed_jurisdictions"] = None
            await registry.commit(await registry.check_dataset("clinic", new), "root", draft)
        finally:
            await store.close()

    asyncio.run(go())


def stored(cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        store = open_store(cfg.store.url)
        await store.open()
        try:
            registry = Registry(store, cfg.policies.dir, cfg.policies.data_dir)
            return (
                {t.name: t for t in await registry.tiers()},
                {d.name: d for d in await registry.datasets()},
            )
        finally:
            await store.close()

    return asyncio.run(go())


def test_export_writes_files_that_check_and_round_trip(config_factory: Any, tmp_path: Path) -> None:
    cfg = config_factory()
    change_policy(cfg)
    out = tmp_path / "exported"
    runner = CliRunner()
    result = runner.invoke(main, ["policy", "export", "--config", str(cfg.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 5 file(s)" in result.output
    assert sorted(p.name for p in (out / "tiers").iterdir()) == [
        "accredited.yaml", "open.yaml", "standard.yaml",
    ]  # fmt: skip
    assert sorted(p.name for p in (out / "datasets").iterdir()) == ["clinic.yaml", "visits.yaml"]
    text = (out / "tiers" / "standard.yaml").read_text()
    assert text.startswith("# tier standard, version 2")
    assert yaml.safe_load(text)["budget"] == {"epsilon": 7.5, "delta": 2e-6}

    # `policy check` accepts the folder
    checked = runner.invoke(
        main, ["policy", "check", str(out), "--data-dir", str(cfg.policies.data_dir)]
    )
    assert checked.exit_code == 0, checked.output
    assert "ok: 3 tier(s)" in checked.output and "2 dataset(s)" in checked.output

    # and the files read back to the stored definitions (the source is re-based on the
    # data folder, the data file is the same one)
    tiers, datasets = stored(cfg)
    found = load_policy_dir(out, cfg.policies.data_dir)
    assert found.problems == []
    for name, tier in tiers.items():
        assert {**tier_to_dict(found.tiers[name]), "version": tier.version} == tier_to_dict(tier)
    for name, spec in datasets.items():
        again = found.datasets[name]
        assert again.source_path == spec.source_path
        mine, theirs = dataset_to_dict(again), dataset_to_dict(spec)
        # written relative to the data folder (the stored clinic source used the earlier rule)
        assert (
            mine.pop("source")
            == {"visits": "visits.parquet", "clinic": "2026/clinic.parquet"}[name]
        )
        theirs.pop("source")
        assert {**mine, "version": spec.version} == theirs
    assert datasets["clinic"].allowed_jurisdictions is None
    assert "allowed_jurisdictions" not in yaml.safe_load(
        (out / "datasets" / "clinic.yaml").read_text()
    )


def test_export_does_not_overwrite_without_force(config_factory: Any, tmp_path: Path) -> None:
    cfg = config_factory()
    out = tmp_path / "exported"
    (out / "tiers").mkdir(parents=True)
    (out / "tiers" / "open.yaml").write_text("keep me\n")
    (out / "tiers" / "retired.yaml").write_text("name: retired\n")
    runner = CliRunner()
    args = ["policy", "export", "--config", str(cfg.path), "--out", str(out)]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 1 and "open.yaml" in refused.output
    assert (out / "tiers" / "open.yaml").read_text() == "keep me\n"
    assert not (out / "tiers" / "standard.yaml").exists()  # nothing was written
    forced = runner.invoke(main, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert yaml.safe_load((out / "tiers" / "open.yaml").read_text())["name"] == "open"
    assert "retired.yaml is not in the store" in forced.output


def test_check_reports_problems_with_file_and_field(tmp_path: Path) -> None:
    shutil.copytree(Path(__file__).resolve().parents[2] / "policies", tmp_path / "policies")
    (tmp_path / "data").mkdir()
    bad = tmp_path / "policies" / "tiers" / "open.yaml"
    bad.write_text(bad.read_text().replace("epsilon: 2.0", "epsilon: .nan"))
    result = CliRunner().invoke(main, ["policy", "check", str(tmp_path / "policies")])
    assert result.exit_code == 1
    assert "tiers/open.yaml: budget.epsilon" in result.output
    assert "datasets/visits.yaml: source: file not found" in result.output


def test_check_refuses_float_bounds_off_the_stored_grid(tmp_path: Path) -> None:
    shutil.copytree(Path(__file__).resolve().parents[2] / "policies", tmp_path / "policies")
    (tmp_path / "data").mkdir()
    visits = tmp_path / "policies" / "datasets" / "visits.yaml"
    visits.write_text(visits.read_text().replace("bounds: [0, 50000]", "bounds: [0, 5.0e-7]"))
    result = CliRunner().invoke(main, ["policy", "check", str(tmp_path / "policies")])
    assert result.exit_code == 1
    assert "datasets/visits.yaml: columns.cost.bounds[1]: " in result.output
    assert "off the stored grid" in result.output and "0.000001" in result.output
