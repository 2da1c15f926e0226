"""Plain-text rendering of results and estimates (``enclave query``, notebooks), with no
dependency beyond the standard library.

Each noisy value is printed with the half-width of its 95% noise interval, ``1234 ±12``, and
rounded to the precision that interval supports: digits far below the noise carry no
information, and printing them invites reading meaning into them. The JSON (``--json``,
``QueryResult.raw``) keeps the full values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from enclave.client.results import Budget, Estimate, QueryResult

MAX_DECIMALS = 6
LEGEND = "± is the half-width of a 95% interval for the noise alone (not sampling error)"


def decimals_for(ci95: float) -> int:
    """Decimals that show the value to about two significant digits of its noise."""
    if not ci95 > 0 or not math.isfinite(ci95):
        return 2
    return max(0, min(MAX_DECIMALS, 1 - math.floor(math.log10(ci95))))


def format_value(value: Any, ci95: float | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if ci95 is None or not math.isfinite(ci95):
        return _plain(value)
    places = decimals_for(ci95)
    number = str(value) if isinstance(value, int) else f"{value:.{places}f}"
    return f"{number} ±{ci95:.{places}f}"


def _plain(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}".rstrip("0").rstrip(".") or "0"


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; text left-aligned, numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        bool(cells) and all(_looks_numeric(row[i]) for row in cells) for i in range(len(columns))
    ]
    lines = [
        "  ".join(
            c.rjust(w) if n else c.ljust(w)
            for c, w, n in zip(columns, widths, numeric, strict=True)
        ),
        "  ".join("-" * w for w in widths),
    ]
    for row in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if n else c.ljust(w)
                for c, w, n in zip(row, widths, numeric, strict=True)
            )
        )
    return "\n".join(line.rstrip() for line in lines)


def _looks_numeric(cell: str) -> bool:
    head = cell.split(" ±", 1)[0]
    if head == "-":
        return True
    try:
        float(head)
    except ValueError:
        return False
    return True


def render_result(result: QueryResult) -> str:
    rows = [
        [format_value(v, result.ci95(col)) for col, v in zip(result.columns, row, strict=True)]
        for row in result.rows
    ]
    lines = [format_table(result.columns, rows), "", LEGEND]
    if result.suppressed_groups:
        lines.append(
            f"{result.suppressed_groups} group(s) suppressed: noisy count below the tier's minimum"
        )
    if result.cached:
        origin = f" of {result.release_of}" if result.release_of else ""
        lines.append(f"(cached) a repeat{origin}: nothing spent")
    lines.append(
        f"spent:         epsilon {_num(result.epsilon_spent)}, delta {_num(result.delta_spent)}"
        + _source_note(result.epsilon_source)
    )
    lines.append(_budget_line(result.budget))
    lines.append(f"query:         {result.query_id} (audit record {result.audit_seq})")
    return "\n".join(lines)


def render_estimate(estimate: Estimate) -> str:
    lines = [
        f"dataset:       {estimate.dataset}",
        f"cost:          epsilon {_num(estimate.epsilon)}, delta {_num(estimate.delta)}"
        + _source_note(estimate.epsilon_source),
        *(
            f"  target:      {column} ci95 <= {_num(v.get('ci95') or 0)}, "
            f"achieved {_num(v.get('achieved_ci95') or 0)}"
            for column, v in estimate.epsilon_chosen_for.items()
        ),
        f"cached:        {'yes (a repeat costs nothing)' if estimate.cached else 'no'}",
        f"within budget: {'yes' if estimate.within_budget else 'no'}",
        _budget_line(estimate.budget),
    ]
    if estimate.accuracy:
        lines.append("accuracy (95% half-width of the noise):")
        width = max(len(c) for c in estimate.accuracy)
        for column, stats in estimate.accuracy.items():
            ci = stats.get("ci95")
            shown = f"±{ci:.{decimals_for(ci)}f}" if ci is not None else "known only after release"
            lines.append(f"  {column.ljust(width)}  {shown}")
    return "\n".join(lines)


SOURCE_NOTES = {
    "tier_default": " (the tier's default_epsilon)",
    "accuracy": " (the smallest that meets the accuracy targets)",
    "batch_split": " (an even share of the batch's total)",
}


def _source_note(source: str | None) -> str:
    return SOURCE_NOTES.get(source or "", "")


def _budget_line(budget: Budget) -> str:
    renews = f"renews {budget.renews}" if budget.renews else "never renews"
    return (
        f"budget left:   epsilon {_num(budget.epsilon_remaining)}, "
        f"delta {_num(budget.delta_remaining)} ({renews})"
    )


def _num(value: float) -> str:
    return f"{value:.10g}"
