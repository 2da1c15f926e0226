"""Checking a transparency report against a JSONL export of the audit log (offline).

``enclave audit verify --file EXPORT.jsonl --report REPORT.json [--key KEY]`` first verifies
the export as always (chain, trailer, and, with ``--key``, the report's signed head), then:

1. reads the report's own parameters (``from``, ``to``, ``period``, ``upto``) and its signed
   head, which must be the head of record ``upto``;
2. finds record ``upto`` in the export: its hash must be the signed head's hash (otherwise
   the report speaks of another log, or of a rewritten one);
3. computes the report again from the export's records ``1..upto`` (``transparency.py``) and
   compares every field: each difference is named by its path, e.g.
   ``periods[2026-01].datasets[visits].epsilon: the report says 0.7, the export gives 0.5``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from enclave.audit.record import GENESIS_HASH, AuditRecord
from enclave.audit.signing import HeadError, SignedHead
from enclave.audit.transparency import REPORT_KIND, REPORT_VERSION, Tally
from enclave.audit.transparency_params import ReportParams, parse_params

MAX_DIFFERENCES = 50


def report_params(report: Any) -> tuple[ReportParams, int, SignedHead | None, list[str]]:
    """A report's parameters, ``upto`` and signed head, with every problem found reading them."""
    if not isinstance(report, dict):
        return ReportParams(), 0, None, ["the report is not a JSON object"]
    problems: list[str] = []
    if report.get("report") != REPORT_KIND or report.get("version") != REPORT_VERSION:
        problems.append(f"the file is not a version {REPORT_VERSION} transparency report")
    texts = [report.get(k) for k in ("from", "to", "period")]
    if not all(isinstance(t, str) for t in texts):
        problems.append("from, to and period: must be strings")
        texts = [None, None, None]
    params, found = parse_params(*texts)
    problems += found
    upto = report.get("upto")
    if type(upto) is not int or upto < 0:
        problems.append("upto: must be a non-negative integer")
        upto = 0
    head = None
    try:
        head = SignedHead.from_json(report.get("signed_head"))
    except HeadError as exc:
        problems.append(f"signed_head: {exc}")
    if head is not None and head.seq != upto:
        problems.append(f"signed_head.seq is {head.seq} but the report counts up to seq {upto}")
    return params, upto, head, problems


def check_report(report: Any, lines: Iterable[str | bytes]) -> list[str]:
    """Why ``report`` is not the report of the export ``lines`` (empty: it is)."""
    params, upto, head, problems = report_params(report)
    if problems or head is None:
        return problems
    tally = Tally()
    reached_hash = GENESIS_HASH if upto == 0 else None
    for number, raw in enumerate(lines, start=1):
        if reached_hash is not None:
            break  # records after ``upto`` are not the report's
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            return [f"export line {number} is not valid JSON"]
        if not isinstance(obj, dict) or "signed_head" in obj:
            break
        try:
            record = AuditRecord.from_json(obj)
            tally.feed(record)
        except (TypeError, ValueError, AttributeError):
            return [f"export line {number}: the record cannot be read"]
        if record.seq == upto:
            reached_hash = record.hash
    if reached_hash is None:
        return [f"the export ends before record {upto}, the last one the report counts"]
    if reached_hash != head.hash:
        return [
            f"record {upto} of the export does not have the report's signed hash: the report "
            "describes a different (or rewritten) log"
        ]
    return differences(report, tally.report(params, report.get("signed_head")))


def differences(claimed: Any, actual: Any, path: str = "") -> list[str]:
    """Every place where ``claimed`` differs from ``actual``, named by its path."""
    out: list[str] = []
    _diff(claimed, actual, path, out)
    if len(out) > MAX_DIFFERENCES:
        out = [*out[:MAX_DIFFERENCES], f"... and {len(out) - MAX_DIFFERENCES} more differences"]
    return out


def _diff(claimed: Any, actual: Any, path: str, out: list[str]) -> None:
    members = _members(claimed, actual, path)
    if members is None:
        if type(claimed) is not type(actual) or claimed != actual:
            shown = f"the report says {_shown(claimed)}, the export gives {_shown(actual)}"
            out.append(f"{path}: {shown}")
        return
    mine, theirs, name = members
    for key in list(theirs) + [k for k in mine if k not in theirs]:
        where = name(key)
        if key not in mine:
            out.append(f"{where}: missing from the report")
        elif key not in theirs:
            out.append(f"{where}: in the report, not in the export")
        else:
            _diff(mine[key], theirs[key], where, out)


def _members(
    claimed: Any, actual: Any, path: str
) -> tuple[dict[str, Any], dict[str, Any], Callable[[str], str]] | None:
    """Both sides as named members (object fields, or list items by what names them, else by
    position) and how a member's path is written; ``None`` for values to compare whole."""
    if isinstance(claimed, dict) and isinstance(actual, dict):
        return claimed, actual, lambda key: f"{path}.{key}" if path else str(key)
    if isinstance(claimed, list) and isinstance(actual, list):
        mine, theirs = _keyed(claimed), _keyed(actual)
        if mine is None or theirs is None:
            mine = {str(i): v for i, v in enumerate(claimed)}
            theirs = {str(i): v for i, v in enumerate(actual)}
        return mine, theirs, lambda key: f"{path}[{key}]"
    return None


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    """List items by what names them (a period's label, a dataset, a tier and jurisdiction);
    ``None`` when they do not all have a distinct name."""
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        if "label" in item:
            key = str(item["label"])
        elif "dataset" in item:
            key = "null" if item["dataset"] is None else str(item["dataset"])
        elif "tier" in item and "jurisdiction" in item:
            key = f"{item['tier']}/{item['jurisdiction']}"
        else:
            return None
        if key in out:
            return None
        out[key] = item
    return out


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 80 else text[:77] + "..."
