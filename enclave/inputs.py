"""Limits and parsers for the values callers give: one date parser and one set of length caps
for the whole API (and the CLI, which shares the same validation).

- **Dates.** ``parse_when`` reads an ISO 8601 date or timestamp. A value without a zone is
  UTC. Years must lie in ``MIN_YEAR``..``MAX_YEAR`` after conversion to UTC, so a value that
  would overflow when shifted (``0001-01-01T00:00:00+01:00``) is a clear problem, never a
  crash. A date-only value means the start of that day, or with ``end_of_day`` its last
  microsecond (a licence's ``valid_until: 2027-12-31`` is usable through that whole day, UTC).
- **Lengths.** ``MAX_NAME_CHARS`` for names and identifiers (subject, organization, jti, audit
  filters), ``MAX_TEXT_CHARS`` for free text (purpose, reason, description),
  ``MAX_PATH_CHARS`` for a dataset's source path.
- **Pages.** Every paginated endpoint accepts ``limit`` from 1 to ``MAX_PAGE`` and defaults to
  ``DEFAULT_PAGE``.

- **Text.** No caller's string may hold a NUL character or a lone surrogate (``text_problem``):
  neither can be stored in PostgreSQL, written as UTF-8, or copied between stores, so each is
  refused where it is given (JSON bodies in ``web/body.py``, query strings in
  ``web/params.py``, paths in ``web/middleware.py``, the CLI through ``read_string``).

Each check adds a message to a caller's ``problems`` list rather than raising, so one answer
can list every problem at once; ``invalid(problems)`` builds that answer.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from enclave.errors import BadRequest

MAX_NAME_CHARS = 256
MAX_TEXT_CHARS = 2000
MAX_PATH_CHARS = 1024
MAX_TIME_CHARS = 40
MIN_YEAR = 1970
MAX_YEAR = 9999
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_EXPIRY_DAYS = 36500  # expiring_within_days: a century
MAX_VERSION = 10**9  # ?version=N of a tier or dataset

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
WHEN_HINT = "an ISO 8601 date or timestamp, e.g. 2027-12-31 or 2027-12-31T12:00:00Z"


def parse_when(value: str, *, end_of_day: bool = False) -> dt.datetime:
    """An aware UTC datetime, or ``ValueError`` whose message says what is wrong."""
    text = value.strip()
    if not text or len(text) > MAX_TIME_CHARS or not text.isascii():
        raise ValueError(f"must be {WHEN_HINT}")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"must be {WHEN_HINT}") from None
    if _DATE_ONLY.match(text) and end_of_day:
        parsed = parsed.replace(hour=23, minute=59, second=59, microsecond=999999)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        utc = parsed.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not MIN_YEAR <= utc.year <= MAX_YEAR:
        raise ValueError(f"must lie between the years {MIN_YEAR} and {MAX_YEAR} (UTC)")
    return utc


def read_when(
    problems: list[str], value: Any, field: str, *, end_of_day: bool = False
) -> dt.datetime | None:
    """``parse_when`` for a JSON value; a problem (and None) when it is not a valid date."""
    if not isinstance(value, str):
        problems.append(f"{field}: must be {WHEN_HINT}")
        return None
    try:
        return parse_when(value, end_of_day=end_of_day)
    except ValueError as exc:
        problems.append(f"{field}: {exc}")
        return None


def read_string(
    problems: list[str],
    value: Any,
    field: str,
    max_chars: int,
    *,
    required: bool = True,
) -> str | None:
    """A stripped, non-empty string of at most ``max_chars`` characters, or a problem."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{field}: required, a non-empty string")
        return None
    if len(value) > max_chars:
        problems.append(f"{field}: at most {max_chars} characters")
        return None
    if (problem := text_problem(value)) is not None:
        problems.append(f"{field}: {problem}")
        return None
    return value.strip()


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be kept (a NUL character, a lone surrogate), or None."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate, which is not valid Unicode text"
    return None


def invalid(problems: list[str]) -> BadRequest:
    """One 400 listing every problem (``problems`` in the problem+json body)."""
    return BadRequest("; ".join(problems), problems)
