"""The store depends on the audit package, never the reverse: no module of ``enclave/audit/``
imports ``enclave.store`` (read from the source files, so a lazy import inside a function
counts too)."""

from __future__ import annotations

import ast
from pathlib import Path

import enclave.audit

AUDIT = Path(enclave.audit.__file__).parent


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_audit_never_imports_the_store() -> None:
    files = sorted(AUDIT.glob("*.py"))
    assert len(files) > 5  # the package was found
    offending = {
        f"{path.name}: {name}"
        for path in files
        for name in _imports(path)
        if name == "enclave.store" or name.startswith("enclave.store.")
    }
    assert not offending
    assert not [p.name for p in files if "enclave.store" in p.read_text(encoding="utf-8")]


def test_the_check_sees_an_import_of_the_store(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    from enclave import store\n    from enclave.store.base import Store\n"
    )
    assert "enclave.store" in _imports(bad) and "enclave.store.base" in _imports(bad)
