"""The one reader of query strings: strict, and listing every problem at once.

Every endpoint that takes query parameters reads them through ``QueryParams``: parameters it
does not name are refused, so is a parameter given twice; integers are ASCII digits within a
stated range (never ``str.isdigit``, which accepts ``²``), and an empty one is refused; a
value holding NUL is refused (``inputs.text_problem``) and then counts as not given; an
empty text, choice, date or cursor counts as not given; dates go through
``inputs.parse_when``; text is length-capped. ``done()`` raises one 400 listing every
problem (a lone bad ``cursor`` is ``InvalidCursor``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from multidict import MultiMapping

from enclave.errors import InvalidCursor
from enclave.inputs import (
    DEFAULT_PAGE,
    MAX_NAME_CHARS,
    MAX_PAGE,
    invalid,
    parse_when,
    text_problem,
)

_DIGITS = re.compile(r"^[0-9]{1,18}$", re.ASCII)
_CURSOR_PROBLEM = "cursor: not one this server issued"


class QueryParams:
    def __init__(self, query: MultiMapping[str], allowed: Iterable[str]) -> None:
        self._query = query
        self._allowed = frozenset(allowed)
        self.problems: list[str] = []
        self._bad: set[str] = set()  # given, but text that cannot be kept (already a problem)
        for name in sorted(set(query)):
            if name not in self._allowed:
                self.problems.append(f"{_shown(name)}: unknown query parameter")
            elif len(query.getall(name)) > 1:
                self.problems.append(f"{name}: given more than once")
            elif (problem := text_problem(query[name])) is not None:
                self.problems.append(f"{name}: {problem}")
                self._bad.add(name)

    def _raw(self, name: str) -> str | None:
        value = self._query.get(name)
        return None if value is None or value == "" or name in self._bad else value

    def integer(self, name: str, *, default: int | None, low: int, high: int) -> int | None:
        raw = self._query.get(name)  # given but empty is a problem, not the default
        if raw is None or name in self._bad:
            return default
        if not _DIGITS.match(raw) or not low <= int(raw) <= high:
            self.problems.append(f"{name}: must be a whole number from {low} to {high}")
            return default
        return int(raw)

    def limit(self) -> int:
        value = self.integer("limit", default=DEFAULT_PAGE, low=1, high=MAX_PAGE)
        return DEFAULT_PAGE if value is None else value

    def cursor(self) -> int:
        """A ``next_cursor`` this server issued (an audit ``seq``), 0 when absent."""
        raw = self._raw("cursor")
        if raw is None:
            return 0
        if not _DIGITS.match(raw):
            self.problems.append(_CURSOR_PROBLEM)
            return 0
        return int(raw)

    def text(self, name: str, max_chars: int = MAX_NAME_CHARS) -> str | None:
        raw = self._raw(name)
        if raw is not None and len(raw) > max_chars:
            self.problems.append(f"{name}: at most {max_chars} characters")
            return None
        return raw

    def choice(self, name: str, allowed: Iterable[str], default: str | None = None) -> str | None:
        raw = self._raw(name)
        options = tuple(allowed)
        if raw is None:
            return default
        if raw not in options:
            self.problems.append(f"{name}: must be one of " + ", ".join(options))
            return default
        return raw

    def time(self, name: str) -> dt.datetime | None:
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            return parse_when(raw)
        except ValueError as exc:
            self.problems.append(f"{name}: {exc}")
            return None

    def window(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        """``since`` (inclusive) and ``until`` (exclusive); since must come first."""
        since, until = self.time("since"), self.time("until")
        if since is not None and until is not None and since >= until:
            self.problems.append("since: must be earlier than until")
        return since, until

    def done(self) -> None:
        """Raise one 400 listing every problem found so far (nothing if there were none)."""
        if self.problems == [_CURSOR_PROBLEM]:
            raise InvalidCursor("the cursor is not one this server issued")
        if self.problems:
            raise invalid(self.problems)


def _shown(name: str) -> str:
    """A caller's parameter name, cut short and printable, for the problem text."""
    short = name[:40] + ("…" if len(name) > 40 else "")
    return short if short.isprintable() else repr(short)
