"""Security and privacy properties live together here, each marked ``security``.

``pytest -m security`` runs exactly this folder, wherever the code it attacks lives; the
marker is applied here, so a new test file in this folder needs nothing of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.security)
