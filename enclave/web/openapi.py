"""``GET /openapi.json``: the OpenAPI 3.1 description of the HTTP API, built from Python data.

One table, ``OPERATIONS``, names each endpoint with its role, parameters, body, success schema
and the error classes it can raise; ``build_document`` turns it into the document. There is
no YAML copy to keep in step by hand, and ``tests/web/test_openapi.py`` holds the table to
the router: every served route is documented, every documented route is served, and the
role written here (``x-required-role``, with the bearer scheme) is the one the handler checks.

Problem responses are grouped by status; each one's ``type`` is narrowed to the problem
types that operation can produce (``x-problem-types`` lists them too), and
``components.x-problem-types`` catalogues the whole error tree of ``enclave/errors.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from aiohttp import web

from enclave import __version__
from enclave.audit.record import ACTIONS, OUTCOMES
from enclave.audit.transparency_params import PERIODS
from enclave.audit.transparency_render import FORMATS as REPORT_FORMATS
from enclave.audit.transparency_render import MEDIA_TYPES as REPORT_MEDIA
from enclave.dummy import DEFAULT_ROWS, FORMATS, MAX_ROWS, MAX_SEED
from enclave.errors import (
    AccuracyUnreachable,
    AuditUnavailable,
    BadRequest,
    BudgetExhausted,
    Conflict,
    DatasetFrozen,
    DatasetUnavailable,
    EnclaveError,
    Forbidden,
    InvalidCursor,
    InvalidToken,
    JurisdictionRefused,
    LicenceExpired,
    LicenceNotYetValid,
    LicenceRefused,
    LicenceRevoked,
    LicenceSuspended,
    MissingToken,
    NotFound,
    PayloadTooLarge,
    PolicyFileError,
    ProposalExpired,
    ProposalStale,
    QueryTimeout,
    RateLimited,
    ReleaseFailed,
    RequestTimeout,
    RevokedToken,
    RoleRequired,
    SelfApproval,
    ServiceUnavailable,
    SpendNeedsConfirmation,
    StoreUnavailable,
    TierRefused,
    UnsupportedMediaType,
    UnsupportedQuery,
)
from enclave.governance.proposal import STATUSES
from enclave.inputs import (
    DEFAULT_PAGE,
    MAX_EXPIRY_DAYS,
    MAX_NAME_CHARS,
    MAX_PAGE,
    MAX_VERSION,
    MAX_YEAR,
    MIN_YEAR,
)
from enclave.web.openapi_schemas import WHEN_INPUT, component_schemas, problem_catalogue, ref
from enclave.web.roles import public

routes = web.RouteTableDef()
Errors = tuple[type[EnclaveError], ...]
JSON = "application/json"
PROBLEM = "application/problem+json"

# What any authenticated call can meet: no/bad/revoked token, wrong role, the per-address and
# per-subject rate limits, a refusal that cannot be audited (503), the store down, the bare 500.
AUTHENTICATED: Errors = (
    MissingToken,
    InvalidToken,
    RevokedToken,
    RoleRequired,
    RateLimited,
    AuditUnavailable,
    StoreUnavailable,
    EnclaveError,
)
BODY: Errors = (BadRequest, RequestTimeout, PayloadTooLarge, UnsupportedMediaType)
PAGE: Errors = (BadRequest, InvalidCursor)
LICENCE: Errors = (
    NotFound,
    LicenceRefused,
    LicenceSuspended,
    LicenceRevoked,
    LicenceExpired,
    LicenceNotYetValid,
    TierRefused,
    JurisdictionRefused,
    DatasetFrozen,
)
ADMISSION: Errors = (
    *BODY,
    UnsupportedQuery,
    AccuracyUnreachable,
    *LICENCE,
    Forbidden,
    BudgetExhausted,
    RateLimited,
)

FREEZE: Errors = (*BODY, PolicyFileError, NotFound, Conflict)
DECIDE: Errors = (
    *BODY, PolicyFileError, NotFound, SelfApproval, Conflict, ProposalExpired, ProposalStale,
)  # fmt: skip


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" | "path"
    schema: dict[str, Any]
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "in": self.where, "schema": self.schema}
        out["required"] = self.where == "path"
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    op_id: str
    role: str | tuple[str, ...] | None  # None: public; several: any one of them
    summary: str
    response: str | None = None  # component schema name of the success body
    status: int = 200
    body: str | None = None  # component schema name of the request body
    params: tuple[Param, ...] = ()
    errors: Errors = ()
    content: tuple[str, ...] = (JSON,)  # success media types
    headers: tuple[tuple[str, str], ...] = ()  # success response headers: (name, description)
    also: tuple[int, ...] = ()  # further success statuses with the same body (PUT: 201 creates)
    proposes: bool = False  # may answer 202 with a four-eyes Proposal instead
    body_media: str = JSON  # the request body's media type


def _q(name: str, description: str = "", **schema: Any) -> Param:
    return Param(name, "query", schema or {"type": "string"}, description)


def _p(name: str) -> Param:
    return Param(name, "path", {"type": "string"})


LIMIT = _q("limit", f"page size, 1 to {MAX_PAGE} (default {DEFAULT_PAGE})", type="integer",
           minimum=1, maximum=MAX_PAGE)  # fmt: skip
CURSOR = _q("cursor", "next_cursor of the previous page (an audit seq)", type="string",
            pattern="^[0-9]{1,18}$")  # fmt: skip
_WHEN = f"ISO 8601 date or timestamp (UTC if no zone; years {MIN_YEAR} to {MAX_YEAR})"
SINCE = _q("since", _WHEN + ", inclusive", anyOf=WHEN_INPUT["anyOf"])
UNTIL = _q("until", _WHEN + ", exclusive", anyOf=WHEN_INPUT["anyOf"])
VERSION = _q("version", "read this stored version instead of the current", type="integer",
             minimum=1, maximum=MAX_VERSION)  # fmt: skip


_DAY = {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}


def _text(name: str, description: str = "") -> Param:
    return _q(name, description, type="string", maxLength=MAX_NAME_CHARS)


OPERATIONS: tuple[Op, ...] = (
    # --- operations (public) ---
    Op("get", "/healthz", "healthz", None, "Process is up", "Health"),
    Op("get", "/readyz", "readyz", None,
       "Store reachable (503 if not); dataset states counted", "Ready"),
    Op("get", "/metrics", "metrics", None, "Prometheus text exposition", content=("text/plain",)),
    Op("get", "/openapi.json", "openapi", None, "This document", content=(JSON,)),
    # --- web console (public static files; absent when console.enabled is false) ---
    Op("get", "/console", "console", None, "The web console (HTML)", content=("text/html",)),
    Op("get", "/console/config.json", "consoleSettings", None,
       "The console's public sign-in settings", "ConsoleSettings"),
    Op("get", "/console/{file}", "consoleAsset", None, "A console script or style sheet",
       params=(_p("file"),), errors=(NotFound,), content=("text/javascript", "text/css")),
    # --- researcher ---
    Op("get", "/v1/datasets", "listDatasets", "researcher",
       "Datasets the caller's licences cover, with declared columns", "DatasetList"),
    Op("get", "/v1/datasets/{name}/dummy", "getDummyData", "researcher",
       "Dummy rows from the dataset's public metadata only: free, reproducible, audited",
       params=(_p("name"),
               _q("rows", f"number of rows, 1 to {MAX_ROWS} (default {DEFAULT_ROWS})",
                  type="integer", minimum=1, maximum=MAX_ROWS),
               _q("seed", f"generator seed, 0 to {MAX_SEED} (default 0)", type="integer",
                  minimum=0, maximum=MAX_SEED),
               _q("format", "parquet (default) or csv", enum=list(FORMATS))),
       errors=(BadRequest, *LICENCE),
       content=tuple(FORMATS.values()),
       headers=(("Content-Disposition",
                 "attachment; filename=<name>-dummy-<rows>-<seed>.<format>"),)),
    Op("post", "/v1/queries", "runQuery", "researcher",
       "Run an aggregate query and receive a differentially private release", "QueryResult",
       body="QueryRequest",
       errors=(*ADMISSION, SpendNeedsConfirmation, DatasetUnavailable, ReleaseFailed,
               QueryTimeout)),
    Op("post", "/v1/queries/estimate", "estimateQuery", "researcher",
       "Price a query (epsilon, delta, accuracy) without touching data or budget", "Estimate",
       body="QueryRequest", errors=ADMISSION),
    Op("post", "/v1/queries/estimate/batch", "estimateBatch", "researcher",
       "Price several queries on one dataset together against the budget left, or split a "
       "total epsilon evenly over them; touches no data or budget", "BatchEstimate",
       body="BatchRequest", errors=ADMISSION),
    Op("post", "/v1/synthetic", "postSynthetic", "researcher",
       "Queue a DP synthetic table (MST): 202 with the job; a repeat answers 200 with the "
       "cached or running job (docs/synthetic.md)", "Job", status=202, also=(200,),
       body="SyntheticRequest", errors=(*ADMISSION, ServiceUnavailable),
       headers=(("Location", "the job's status URL"),)),
    Op("post", "/v1/queries/jobs", "submitQueryJob", "researcher",
       "Queue a query as a job (docs/researcher.md): refusals answer at once, free; 202 with "
       "the job (kind query); a repeat of a released query answers 200 with its cached "
       "release, as POST /v1/queries", "QueryJobSubmitted", status=202, also=(200,),
       body="QueryRequest", errors=(*ADMISSION, SpendNeedsConfirmation),
       headers=(("Location", "the job's status URL (202 only)"),)),
    Op("get", "/v1/jobs/{id}", "getJob", ("researcher", "admin", "auditor"),
       "A job's state and progress (its owner, admins and auditors)", "Job",
       params=(_p("id"),), errors=(NotFound,)),
    Op("get", "/v1/jobs/{id}/result", "getJobResult", ("researcher", "admin", "auditor"),
       "A done job's result: a synthetic table (parquet, csv) or its report of DP marginals "
       "(report); a query job's answer as POST /v1/queries returns it (json) or its rows (csv)",
       params=(_p("id"), _q("format", "synthetic: parquet (default), csv or report; query: "
                            "json (default) or csv", enum=[*FORMATS, "report", "json"])),
       errors=(BadRequest, *LICENCE), content=(*FORMATS.values(), JSON),
       headers=(("Content-Disposition", "attachment; filename=<job id>-<what>.<format>"),)),
    Op("get", "/v1/budget", "getBudget", "researcher",
       "Epsilon and delta spent and remaining per licence and dataset", "BudgetList"),
    Op("get", "/v1/queries", "listQueries", "researcher", "The caller's own past queries",
       "QueryHistory", params=(LIMIT, CURSOR), errors=PAGE),
    # --- admin ---
    Op("get", "/v1/admin/licences", "listLicences", "admin", "List licences", "LicenceList",
       params=(_text("subject", "only this subject's licences"),
               _q("expiring_within_days", "only licences ending within N days",
                  type="integer", minimum=0, maximum=MAX_EXPIRY_DAYS)),
       errors=(BadRequest,)),
    Op("post", "/v1/admin/licences", "createLicence", "admin",
       "Issue a licence (at most one active licence per subject and dataset)", "Licence",
       status=201, body="LicenceCreate", errors=(*BODY, Conflict), proposes=True),
    Op("get", "/v1/admin/licences/{id}", "getLicence", "admin", "Read a licence", "Licence",
       params=(_p("id"),), errors=(NotFound,)),
    Op("patch", "/v1/admin/licences/{id}", "updateLicence", "admin",
       "Change a licence; budget-relevant changes need a reason (audited)", "Licence",
       body="LicencePatch", params=(_p("id"),), errors=(*BODY, NotFound, Conflict),
       proposes=True),
    Op("get", "/v1/admin/tiers", "listTiers", "admin", "Current tiers", "TierList"),
    Op("get", "/v1/admin/tiers/{name}", "getTier", "admin", "A tier, current or by version",
       "TierVersion", params=(_p("name"), VERSION), errors=(BadRequest, NotFound)),
    Op("put", "/v1/admin/tiers/{name}", "putTier", "admin",
       "Create (201) or replace (200) a tier (validated, versioned, audited)", "Tier",
       body="TierInput", params=(_p("name"),), errors=(*BODY, PolicyFileError, Conflict),
       also=(201,), proposes=True),
    Op("get", "/v1/admin/datasets", "listAdminDatasets", "admin", "Current datasets",
       "DatasetAdminList"),
    Op("get", "/v1/admin/datasets/{name}", "getDataset", "admin",
       "A dataset, current or by version", "DatasetVersion", params=(_p("name"), VERSION),
       errors=(BadRequest, NotFound)),
    Op("put", "/v1/admin/datasets/{name}", "putDataset", "admin",
       "Create (201) or replace (200) a dataset (validated, versioned, audited; invalidates "
       "its cache)", "Dataset", body="DatasetInput", params=(_p("name"),),
       errors=(*BODY, PolicyFileError, Conflict), also=(201,), proposes=True),
    Op("post", "/v1/admin/revocations", "revokeToken", "admin",
       "Refuse a token (by jti) from now on", "Revocation", status=201,
       body="RevocationRequest", errors=BODY),
    # --- admin: the steward's tools (web/steward.py) ---
    Op("get", "/v1/admin/licences/{id}/budget", "getLicenceBudget", "admin",
       "Spent, granted, limit and remaining per dataset of a licence, with every budget "
       "layer (licence, subject, organisation, dataset; exact decimal text)",
       "LicenceBudget", params=(_p("id"),), errors=(NotFound,)),
    Op("get", "/v1/admin/licences/{id}/grants", "listGrants", "admin",
       "The licence's budget grants, oldest first", "GrantList", params=(_p("id"),),
       errors=(NotFound,)),
    Op("post", "/v1/admin/licences/{id}/grants", "createGrant", "admin",
       "Top up a licence's budget (layer licence) or its subject's across all their licences "
       "(layer subject) for one dataset, with a reason (audited)", "Grant",
       status=201, body="GrantRequest", params=(_p("id"),), errors=(*BODY, NotFound, Conflict),
       proposes=True),
    Op("post", "/v1/admin/licences/import", "importLicences", "admin",
       "Issue licences from CSV: every problem listed, all or none (dry_run checks only)",
       "ImportResult", status=201, body="LicenceCsv", body_media="text/csv",
       params=(_q("dry_run", "true: check only, issue nothing", enum=["true", "false"]),
               _text("reason", "why (required to issue; kept on each audit record)")),
       errors=(*BODY, Conflict), also=(200,)),
    Op("get", "/v1/admin/data-files", "listDataFiles", "admin",
       "Parquet and CSV files in the data folder a dataset can be registered from",
       "DataFiles"),
    Op("get", "/v1/admin/data-files/schema", "proposeSchema", "admin",
       "Column names and types proposed from a data file's schema (never its values)",
       "SchemaProposal",
       params=(_text("source", "a file path relative to policies.data_dir"),),
       errors=(BadRequest, PolicyFileError, DatasetUnavailable)),
    # --- admin: four-eyes proposals and incident controls (web/governance.py) ---
    Op("get", "/v1/admin/proposals", "listProposals", "admin",
       "Proposals, newest first (those past their expiry are marked expired first)",
       "ProposalList", params=(_q("status", enum=list(STATUSES)),), errors=(BadRequest,)),
    Op("get", "/v1/admin/proposals/{id}", "getProposal", "admin", "One proposal", "Proposal",
       params=(_p("id"),), errors=(NotFound,)),
    Op("post", "/v1/admin/proposals/{id}/approve", "approveProposal", "admin",
       "Approve (a second admin, not one it benefits): the change is validated again and "
       "applied", "ProposalDecision",
       body="ReasonRequest", params=(_p("id"),), errors=DECIDE),
    Op("post", "/v1/admin/proposals/{id}/reject", "rejectProposal", "admin",
       "Reject a proposal (its proposer may withdraw it)", "ProposalDecision",
       body="ReasonRequest", params=(_p("id"),), errors=DECIDE),
    Op("post", "/v1/admin/datasets/{name}/freeze", "freezeDataset", "admin",
       "Incident control: refuse every query of the dataset at once (423), with the reason",
       "Dataset", body="ReasonRequest", params=(_p("name"),), errors=FREEZE),
    Op("post", "/v1/admin/datasets/{name}/unfreeze", "unfreezeDataset", "admin",
       "Propose lifting a freeze (always four-eyes)", "Proposal", status=202,
       body="ReasonRequest", params=(_p("name"),), errors=FREEZE),
    Op("post", "/v1/admin/organisations/{name}/suspend", "suspendOrganisation", "admin",
       "Incident control: suspend every active licence of the organisation at once",
       "OrganisationSuspension", body="ReasonRequest", params=(_p("name"),), errors=BODY),
    Op("post", "/v1/admin/organisations/{name}/reactivate", "reactivateOrganisation", "admin",
       "Propose reactivating the licences its suspension holds (always four-eyes)", "Proposal",
       status=202, body="ReasonRequest", params=(_p("name"),), errors=(*BODY, Conflict)),
    # --- auditor ---
    Op("get", "/v1/audit/events", "auditEvents", "auditor",
       "Audit records, oldest first, paginated by seq", "AuditEvents",
       params=(_text("actor"), _text("dataset"), _q("action", enum=list(ACTIONS)),
               _q("outcome", enum=list(OUTCOMES)), _text("licence_id"), SINCE, UNTIL, LIMIT,
               CURSOR),
       errors=PAGE),
    Op("get", "/v1/audit/verify", "auditVerify", "auditor",
       "Recompute the hash chain; report the first bad seq; carries a signed head",
       "AuditVerify"),
    Op("get", "/v1/audit/export", "auditExport", "auditor",
       "The whole log, streamed (itself audited)",
       params=(_q("format", "jsonl (default) or csv", enum=["jsonl", "csv"]),),
       errors=(BadRequest,), content=("application/x-ndjson", "text/csv"),
       headers=(("Content-Disposition", "attachment; filename=audit-<seq>.<format>"),
                ("Enclave-Audit-Seq", "seq of this export's own audit.export record, its end"),
                ("Enclave-Audit-Valid", "csv only: whether the exported chain verified"),
                ("Enclave-Signed-Head", "csv only: the signed head, as compact JSON"))),
    Op("get", "/v1/audit/summary", "auditSummary", "auditor",
       "Epsilon, releases, cache hits and refusals per actor and dataset", "AuditSummary",
       params=(SINCE, UNTIL), errors=(BadRequest,)),
    Op("get", "/v1/audit/licences/{id}/budget", "auditLicenceBudget", "auditor",
       "Every budget layer of a licence, exactly as the admin route answers", "LicenceBudget",
       params=(_p("id"),), errors=(NotFound,)),
    Op("get", "/v1/audit/key", "auditKey", "auditor",
       "The Ed25519 public key that signs audit chain heads", "AuditKey"),
    Op("get", "/v1/transparency", "transparencyReport", "auditor",
       "Privacy loss, queries, licences and incidents per dataset and period, from the audit "
       "log, with its signed head (public instead when transparency.public is true)",
       "TransparencyReport",
       params=(_q("from", "first day, inclusive (default: the log's first day)", **_DAY),
               _q("to", "last day, exclusive (default: the day after the last record)", **_DAY),
               _q("period", "month, quarter, year or all (default)", enum=list(PERIODS)),
               _q("format", "json (default, canonical), csv or html", enum=list(REPORT_FORMATS))),
       errors=(BadRequest,), content=tuple(REPORT_MEDIA.values()),
       headers=(("Enclave-Audit-Seq", "seq of the last record the report counts (upto)"),
                ("Enclave-Signed-Head", "the report's signed head, as compact JSON"))),
)  # fmt: skip


PROPOSED: dict[str, Any] = {
    "description": "a change that raises risk, proposed: a second admin approves it",
    "content": {JSON: {"schema": ref("Proposal")}},
    "headers": {"Location": {"description": "the proposal", "schema": {"type": "string"}}},
}


def _problem_responses(errors: Errors) -> dict[str, Any]:
    by_status: dict[int, list[type[EnclaveError]]] = {}
    for cls in errors:
        by_status.setdefault(cls.status, []).append(cls)
    out: dict[str, Any] = {}
    for status in sorted(by_status):
        classes = by_status[status]
        uris = list(dict.fromkeys(c.type_uri() for c in classes))
        narrowed = {"properties": {"type": {"enum": uris}, "status": {"const": status}}}
        resp: dict[str, Any] = {
            "description": "; ".join(dict.fromkeys(c.title for c in classes)),
            "content": {PROBLEM: {"schema": {"allOf": [ref("Problem"), narrowed]}}},
        }
        if status == 401:
            resp["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if status in (429, 503):
            resp["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
        out[str(status)] = resp
    return out


def _roles(op: Op) -> tuple[str, ...]:
    return () if op.role is None else (op.role,) if isinstance(op.role, str) else op.role


def _operation(op: Op) -> dict[str, Any]:
    errors = op.errors if op.role is None else (*AUTHENTICATED, *op.errors)
    if op.path == "/readyz":
        errors = (*errors, StoreUnavailable)
    schema: dict[str, Any] = ref(op.response) if op.response else {"type": "string"}
    if op.op_id == "openapi":
        schema = {"type": "object"}
    success: dict[str, Any] = {
        "description": op.summary,
        "content": {media: {"schema": schema} for media in op.content},
    }
    if op.headers:
        success["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in op.headers
        }
    out: dict[str, Any] = {
        "operationId": op.op_id,
        "summary": op.summary,
        "tags": [_roles(op)[0] if op.role else "operations"],
        "responses": {
            str(op.status): success,
            **{str(extra): success for extra in op.also},
            **({"202": PROPOSED} if op.proposes else {}),
            **_problem_responses(errors),
        },
        "x-problem-types": list(dict.fromkeys(c.type_uri() for c in errors)),
    }
    if op.path == "/readyz":
        out["responses"]["503"] = {
            "description": "not ready",
            "content": {JSON: {"schema": ref("Ready")}},
        }
    if op.role is None:
        out["security"] = []
        out["x-public"] = True
    else:
        out["security"] = [{"bearerAuth": []}]
        roles = _roles(op)
        out["x-required-role"] = roles[0]
        if len(roles) > 1:
            out["x-roles"] = list(roles)  # any one of them will do
    if op.params:
        out["parameters"] = [p.to_json() for p in op.params]
    if op.body:
        content = {op.body_media: {"schema": ref(op.body)}}
        out["requestBody"] = {"required": True, "content": content}
    return out


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict each call)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Enclave Gateway",
            "version": __version__,
            "description": (
                "Licensed researchers run aggregate SQL over sensitive microdata and receive "
                "differentially private answers. Every operation names the role it needs in "
                "`x-required-role`; roles come from the bearer JWT. Errors are RFC 9457 "
                "problem details."
            ),
        },
        "tags": [
            {"name": "researcher", "description": "licensed analysts"},
            {"name": "admin", "description": "data stewards"},
            {"name": "auditor", "description": "oversight: the audit log"},
            {"name": "operations", "description": "public health, metrics and this document"},
        ],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": component_schemas(),
            "x-problem-types": problem_catalogue(),
        },
    }


@cache
def _document_bytes() -> bytes:
    return json.dumps(build_document(), indent=1).encode()


@routes.get("/openapi.json")
@public
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_document_bytes(), content_type=JSON)
