"""The transparency report as JSON (canonical, RFC 8785: the form to verify), CSV (for a
spreadsheet) and a printable, self-contained HTML page (no script, no external resource; every
text escaped; its only style sheet is inline and allowed by hash in ``HTML_CSP``)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
from html import escape
from typing import Any

from enclave.audit.chain import canonicalize
from enclave.audit.export import neutralise

FORMATS: tuple[str, ...] = ("json", "csv", "html")
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$", re.ASCII)
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "html": "text/html"}
CSV_FIELDS: tuple[str, ...] = (
    "row", "period", "from", "to", "dataset", "epsilon", "delta", "queries_released",
    "queries_cached", "queries_refused", "queries_failed", "freezes", "licence_suspensions",
    "licence_revocations", "organisation_suspensions", "tier", "jurisdiction", "active_licences",
)  # fmt: skip

STYLE = """
body{font:11pt/1.4 system-ui,sans-serif;margin:2em;color:#111}
h1{font-size:16pt}h2{font-size:13pt;margin-top:1.6em;break-after:avoid}
table{border-collapse:collapse;width:100%;margin:.5em 0;break-inside:auto}
th,td{border:1px solid #999;padding:.2em .4em;text-align:left;vertical-align:top}
.n{text-align:right;font-variant-numeric:tabular-nums}
tr{break-inside:avoid}thead{display:table-header-group}
code{font:9pt ui-monospace,monospace;word-break:break-all}
dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}
@media print{body{margin:0}a{color:inherit}}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")
HTML_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; "
    "script-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def render(report: dict[str, Any], fmt: str) -> bytes:
    if fmt == "csv":
        return render_csv(report).encode("utf-8")
    if fmt == "html":
        return render_html(report).encode("utf-8")
    return canonicalize(report)


def csv_records(report: dict[str, Any]) -> list[list[Any]]:
    """One ``usage`` row per period and dataset, one ``licences`` row per tier and
    jurisdiction of its active licences (header first)."""
    rows: list[list[Any]] = [list(CSV_FIELDS)]
    for p in report["periods"]:
        head = [p["label"], p["from"], p["to"]]
        for d in p["datasets"]:
            q, i = d["queries"], d["incidents"]
            rows.append(
                ["usage", *head, d["dataset"], d["epsilon"], d["delta"], q["released"],
                 q["cached"], q["refused"], q["failed"], i["freezes"],
                 i["licence_suspensions"], i["licence_revocations"],
                 p["organisation_suspensions"], None, None, None]
            )  # fmt: skip
            for lic in d["active_licences"]:
                blank = [None] * 10
                rows.append(
                    ["licences", *head, d["dataset"], *blank, lic["tier"], lic["jurisdiction"],
                     lic["count"]]
                )  # fmt: skip
    return rows


def render_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    for row in csv_records(report):
        writer.writerow(["" if v is None else neutralise(str(v)) for v in row])
    return buf.getvalue()


def _cell(value: Any, tag: str = "td") -> str:
    """A table cell, escaped; numbers (and the decimal texts of epsilon and delta) align right."""
    number = isinstance(value, int) or (isinstance(value, str) and _NUMBER.match(value))
    attr = ' class="n"' if number else ""
    return f"<{tag}{attr}>{escape('—' if value is None else str(value))}</{tag}>"


def _head(names: tuple[str, ...]) -> str:
    return "<thead><tr>" + "".join(_cell(n, "th") for n in names) + "</tr></thead>"


_USAGE = (
    "Dataset", "Epsilon", "Delta", "Released", "Cached", "Refused", "Failed", "Freezes",
    "Licence suspensions", "Licence revocations",
)  # fmt: skip


def _period_html(p: dict[str, Any]) -> list[str]:
    out = [f"<h2>{escape(p['label'])} ({escape(p['from'])} to {escape(p['to'])}, exclusive)</h2>"]
    out.append("<table>" + _head(_USAGE) + "<tbody>")
    for d in p["datasets"]:
        q, i = d["queries"], d["incidents"]
        name = "(other names)" if d["dataset"] is None else d["dataset"]
        values = [name, d["epsilon"], d["delta"], q["released"], q["cached"], q["refused"],
                  q["failed"], i["freezes"], i["licence_suspensions"],
                  i["licence_revocations"]]  # fmt: skip
        out.append("<tr>" + "".join(_cell(v) for v in values) + "</tr>")
    out.append("</tbody></table>")
    out.append(f"<p>Organisation suspensions: {p['organisation_suspensions']}. ")
    out.append(f"Active licences as of {escape(p['licences_as_of'])}:</p>")
    out.append("<table>" + _head(("Dataset", "Tier", "Jurisdiction", "Licences")) + "<tbody>")
    for d in p["datasets"]:
        for lic in d["active_licences"]:
            values = [d["dataset"], lic["tier"], lic["jurisdiction"], lic["count"]]
            out.append("<tr>" + "".join(_cell(v) for v in values) + "</tr>")
    out.append("</tbody></table>")
    return out


def render_html(report: dict[str, Any]) -> str:
    head = report.get("signed_head") or {}
    facts = [
        ("Records counted", f"1 to {report['upto']}" if report["upto"] else "none"),
        ("Range", f"{report['from']} to {report['to']} (exclusive), per {report['period']}"),
        ("Signed head hash", head.get("hash")),
        ("Signed at", head.get("ts")),
        ("Key id", head.get("key_id")),
        ("Signature", head.get("signature")),
    ]
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>Transparency report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Transparency report</h1>",
        "<p>Privacy loss released, queries and incidents per dataset and period, computed "
        "from the gateway's hash-chained audit log. The JSON form of this report can be "
        "checked against an export of the log: <code>enclave audit verify --file "
        "EXPORT.jsonl --report REPORT.json --key KEY.pem</code>.</p>",
        "<dl>",
        *(f"<dt>{escape(k)}</dt><dd><code>{escape(str(v))}</code></dd>" for k, v in facts),
        "</dl>",
    ]
    for p in report["periods"]:
        out += _period_html(p)
    out.append("</body></html>")
    return "\n".join(out) + "\n"
