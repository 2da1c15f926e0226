"""JSON that means one thing: no NaN/Infinity, no repeated keys in an object.

With a repeated key ``json.loads`` keeps the last value silently, while another reader (a
proxy, a log pipeline, another JWT library) may keep the first: the two would then act on
different documents. Request bodies (``web/body.py``) and token headers and claims
(``auth/jwt.py``) are read with ``loads_strict``, which refuses both.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKey(ValueError):
    """An object repeats ``key``."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(key)
        obj[key] = value
    return obj


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON; ``ValueError`` on any problem (``DuplicateKey`` for a repeated key) and
    ``RecursionError`` when nested past the interpreter's limit."""
    return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_object)
