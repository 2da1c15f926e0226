"""``docs/researcher.ipynb`` is a valid notebook, and it runs, cell by cell, against a live
gateway (dummy data, estimate, query, synthetic data), as a researcher would run it in Jupyter."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "researcher.ipynb"
TOP_LEVEL_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT  # what Jupyter kernels allow


def _notebook() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return data


def _code_cells(synthetic: bool = True) -> list[str]:
    """The code cells; ``synthetic=False`` leaves out those tagged ``synthetic`` (a job of
    tens of seconds: they run in the slow test)."""
    return [
        "".join(c["source"])
        for c in _notebook()["cells"]
        if c["cell_type"] == "code"
        and (synthetic or "synthetic" not in c["metadata"].get("tags", []))
    ]


def test_notebook_is_valid_nbformat_4_json() -> None:
    nb = _notebook()
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = [c["id"] for c in nb["cells"]]
    assert len(set(ids)) == len(ids)
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert isinstance(cell["source"], list) and all(isinstance(x, str) for x in cell["source"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    kinds = {c["cell_type"] for c in nb["cells"]}
    assert kinds == {"markdown", "code"}


def test_code_cells_compile() -> None:
    cells = _code_cells()
    assert len(cells) >= 5
    for i, source in enumerate(cells):
        compile(source, f"cell {i}", "exec", flags=TOP_LEVEL_AWAIT)


async def _run_cells(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch, synthetic: bool
) -> dict[str, Any]:
    gw = await make_gateway()
    await gw.licence()
    monkeypatch.setenv("ENCLAVE_URL", str(gw.client.make_url("")).rstrip("/"))
    monkeypatch.setenv("ENCLAVE_TOKEN", gw.tokens())
    namespace: dict[str, Any] = {}
    for i, source in enumerate(_code_cells(synthetic)):
        code = compile(source, f"cell {i}", "exec", flags=TOP_LEVEL_AWAIT)
        pending = eval(code, namespace)  # noqa: S307 - our own notebook's cells
        if pending is not None:
            await pending
    return namespace


@pytest.mark.slow
async def test_notebook_with_its_synthetic_step_runs(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = await _run_cells(make_gateway, monkeypatch, synthetic=True)
    synthetic = namespace["synthetic"]
    assert len(synthetic) == 2000 and list(synthetic.columns) == ["sex", "region"]
    assert namespace["report"]["epsilon"] <= 0.5


async def test_notebook_runs_against_a_live_gateway(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = await _run_cells(make_gateway, monkeypatch, synthetic=False)
    assert len(namespace["visits"]) == 5000
    assert namespace["est"].within_budget
    frame = namespace["frame"]
    assert {"n", "n_ci95", "mean_cost", "mean_cost_ci95", "median_age"} <= set(frame.columns)
    assert namespace["result"].epsilon_spent == 0.5
