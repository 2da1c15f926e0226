"""The one error tree of Enclave Gateway.

Every refusal the gateway makes is an ``EnclaveError`` subclass; ``web/problem.py`` renders
it as ``application/problem+json`` by looking up ``status``/``type``/``title`` on the class.
``detail`` is the instance's message: it must never contain a data value, an engine message or
a stack trace. Anything that is not an ``EnclaveError`` renders as a bare 500.

    EnclaveError                       500  internal
    ├── ConfigError                    500  configuration (start-up only)
    ├── PolicyFileError                400  policy-invalid  (tier/dataset validation)
    ├── BadRequest                     400  bad-request
    │   ├── UnsupportedQuery           400  unsupported-query
    │   ├── InvalidCursor              400  invalid-cursor
    │   └── AccuracyUnreachable        422  accuracy-unreachable (no epsilon within the cap)
    ├── AuthenticationError            401  invalid-token
    │   ├── MissingToken               401  missing-token
    │   ├── InvalidToken               401  invalid-token
    │   └── RevokedToken               401  revoked-token
    ├── Forbidden                      403  forbidden
    │   ├── RoleRequired               403  role-required
    │   ├── LicenceRefused             403  licence-refused
    │   │   ├── LicenceSuspended       403  licence-suspended
    │   │   ├── LicenceRevoked         403  licence-revoked
    │   │   ├── LicenceExpired         403  licence-expired
    │   │   └── LicenceNotYetValid     403  licence-not-yet-valid
    │   ├── TierRefused                403  tier-refused
    │   ├── JurisdictionRefused        403  jurisdiction-refused
    │   ├── BudgetExhausted            403  budget-exhausted  (carries ``layer``)
    │   └── SelfApproval               403  self-approval      (four-eyes: proposer or beneficiary)
    ├── NotFound                       404  not-found
    ├── MethodNotAllowed               405  method-not-allowed
    ├── RequestTimeout                 408  request-timeout    (the body arrived too slowly)
    ├── Conflict                       409  conflict
    │   ├── ProposalExpired            409  proposal-expired   (past its expiry; nothing applied)
    │   ├── ProposalStale              409  proposal-stale     (its target changed since)
    │   └── SpendNeedsConfirmation     409  spend-needs-confirmation (over ``max_share``; free)
    ├── PayloadTooLarge                413  payload-too-large
    ├── UnsupportedMediaType           415  unsupported-media-type
    ├── DatasetFrozen                  423  dataset-frozen     (incident control; the reason)
    ├── RateLimited                    429  rate-limited       (carries ``retry_after``)
    ├── ServiceUnavailable             503  unavailable
    │   ├── AuditUnavailable           503  audit-unavailable
    │   ├── StoreUnavailable           503  store-unavailable
    │   └── DatasetUnavailable         503  dataset-unavailable (preparing or failed; one dataset)
    ├── ReleaseFailed                  500  release-failed    (charged: data was read)
    └── QueryTimeout                   504  query-timeout     (charged once the engine ran)
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

PROBLEM_BASE = "https://enclave-gateway.org/problems/"
LOGGED_FRAMES = 4  # innermost traceback frames named in a log line (``describe``)


class EnclaveError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"
    outcome: ClassVar[str] = "error"  # audit outcome: "denied" for refusals, "error" for failures

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title

    @classmethod
    def type_uri(cls) -> str:
        return PROBLEM_BASE + cls.type


class ConfigError(EnclaveError):
    type = "configuration"
    title = "Configuration error"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class BadRequest(EnclaveError):
    """``problems``, when given, lists every problem found (rendered as ``problems``)."""

    status = 400
    type = "bad-request"
    title = "Bad request"
    outcome = "denied"

    def __init__(self, detail: str = "", problems: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.problems = list(problems)


class PolicyFileError(BadRequest):
    """A tier or dataset definition failed validation; ``problems`` lists every one."""

    type = "policy-invalid"
    title = "Invalid policy"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class UnsupportedQuery(BadRequest):
    type = "unsupported-query"
    title = "Unsupported query"


class InvalidCursor(BadRequest):
    type = "invalid-cursor"
    title = "Invalid cursor"


class AccuracyUnreachable(BadRequest):
    """An accuracy target that no epsilon within the tier's cap meets (public parameters
    only: the detail states the best ci95 the cap achieves)."""

    status = 422
    type = "accuracy-unreachable"
    title = "Accuracy target unreachable"


class AuthenticationError(EnclaveError):
    status = 401
    type = "invalid-token"
    title = "Authentication failed"
    outcome = "denied"


class MissingToken(AuthenticationError):
    type = "missing-token"
    title = "Bearer token required"


class InvalidToken(AuthenticationError):
    type = "invalid-token"
    title = "Invalid token"


class RevokedToken(AuthenticationError):
    type = "revoked-token"
    title = "Token revoked"


class Forbidden(EnclaveError):
    status = 403
    type = "forbidden"
    title = "Forbidden"
    outcome = "denied"


class RoleRequired(Forbidden):
    type = "role-required"
    title = "Role required"


class LicenceRefused(Forbidden):
    type = "licence-refused"
    title = "Licence does not permit this request"


class LicenceSuspended(LicenceRefused):
    type = "licence-suspended"
    title = "Licence suspended"


class LicenceRevoked(LicenceRefused):
    type = "licence-revoked"
    title = "Licence revoked"


class LicenceExpired(LicenceRefused):
    type = "licence-expired"
    title = "Licence expired"


class LicenceNotYetValid(LicenceRefused):
    type = "licence-not-yet-valid"
    title = "Licence not yet valid"


class TierRefused(Forbidden):
    type = "tier-refused"
    title = "Tier policy does not permit this query"


class JurisdictionRefused(Forbidden):
    type = "jurisdiction-refused"
    title = "Jurisdiction not permitted"


class BudgetExhausted(Forbidden):
    """``layer`` names the budget that would be exceeded (``licence``, ``subject``,
    ``organisation`` or ``dataset``; rendered as the member ``layer``)."""

    type = "budget-exhausted"
    title = "Privacy budget exhausted"

    def __init__(self, detail: str = "", layer: str = "licence") -> None:
        super().__init__(detail)
        self.layer = layer


class SelfApproval(Forbidden):
    """An approval by the proposal's proposer, or by an admin it benefits: the subject of the
    licence it issues, changes or tops up, of any licence of the organisation it reactivates,
    or of a licence on the tier or dataset it changes
    (``governance.proposal.approval_conflict``)."""

    type = "self-approval"
    title = "A proposal is approved by a second admin, neither its proposer nor its beneficiary"


class NotFound(EnclaveError):
    status = 404
    type = "not-found"
    title = "Not found"
    outcome = "denied"


class MethodNotAllowed(EnclaveError):
    status = 405
    type = "method-not-allowed"
    title = "Method not allowed"
    outcome = "denied"


class Conflict(EnclaveError):
    status = 409
    type = "conflict"
    title = "Conflict"
    outcome = "denied"


class ProposalExpired(Conflict):
    type = "proposal-expired"
    title = "Proposal expired; nothing was applied"


class ProposalStale(Conflict):
    type = "proposal-stale"
    title = "The proposal's target changed since it was proposed; nothing was applied"


class DatasetFrozen(EnclaveError):
    """A steward froze the dataset (an incident control): every query and estimate is refused
    until a second admin approves unfreezing it. The detail carries the steward's reason."""

    status = 423
    type = "dataset-frozen"
    title = "Dataset frozen"
    outcome = "denied"


class SpendNeedsConfirmation(Conflict):
    """A query would spend more than its ``max_share`` of the budget left: refused before
    any data is read, nothing spent. Carries the cost, what is left and the share, so a
    client can ask its user and send the query again without ``max_share``."""

    type = "spend-needs-confirmation"
    title = "Spend needs confirmation"

    def __init__(
        self,
        detail: str = "",
        *,
        cost: tuple[float, float] = (0.0, 0.0),
        remaining: tuple[float, float] = (0.0, 0.0),
        share: float = 0.0,
        max_share: float = 0.0,
    ) -> None:
        super().__init__(detail)
        self.cost, self.remaining = cost, remaining
        self.share, self.max_share = share, max_share

    def extensions(self) -> dict[str, object]:
        """The problem's extension members (``web/problem.py``; read back by the client)."""
        return {
            "cost": {"epsilon": self.cost[0], "delta": self.cost[1]},
            "remaining": {"epsilon": self.remaining[0], "delta": self.remaining[1]},
            "share": self.share,
            "max_share": self.max_share,
        }


class RequestTimeout(EnclaveError):
    status = 408
    type = "request-timeout"
    title = "Request body too slow"
    outcome = "denied"


class PayloadTooLarge(EnclaveError):
    status = 413
    type = "payload-too-large"
    title = "Request body too large"
    outcome = "denied"


class UnsupportedMediaType(EnclaveError):
    status = 415
    type = "unsupported-media-type"
    title = "Unsupported media type"
    outcome = "denied"


class RateLimited(EnclaveError):
    status = 429
    type = "rate-limited"
    title = "Rate limit exceeded"
    outcome = "denied"

    def __init__(self, detail: str = "", retry_after: int = 60, *, audit: bool = True) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))
        # only the refusal that crosses a limit is audited (``enclave/ratelimit.py``)
        self.audit = audit


class ServiceUnavailable(EnclaveError):
    """503: try again later; ``retry_after`` (seconds, fixed per kind: it never depends on
    data) is sent as ``Retry-After``."""

    status = 503
    type = "unavailable"
    title = "Service unavailable"
    retry_after = 5


class AuditUnavailable(ServiceUnavailable):
    type = "audit-unavailable"
    title = "Audit log unavailable; nothing was released"


class StoreUnavailable(ServiceUnavailable):
    type = "store-unavailable"
    title = "State store unavailable"


class ReleaseFailed(EnclaveError):
    """A query failed after its data was read. Its cost was charged (``enclave/charged.py``)
    and the detail is fixed: it never says what in the data made it fail."""

    type = "release-failed"
    title = "Release failed; its cost was charged"
    charged: float = 0.0  # the epsilon charged for it (``charged.read_and_release``)


class DatasetUnavailable(ServiceUnavailable):
    """One dataset cannot answer: its preparation is running, failed or ran out of time.

    The detail is one of a few fixed texts: a source's own error text can quote data or paths.
    """

    type = "dataset-unavailable"
    title = "Dataset unavailable"
    retry_after = 30  # a preparation takes seconds to minutes


class QueryTimeout(EnclaveError):
    status = 504
    type = "query-timeout"
    title = "Query timed out"
    charged: float = 0.0  # the epsilon charged for it (``charged.read_and_release``)


def describe(exc: BaseException) -> str:
    """A log-safe description of an unexpected exception: its type and where it was raised.

    Never its message: a message can quote a data value (an exact sum in an OverflowError, a
    key in a TypeError, DuckDB's text). The innermost frames name code, not data.
    """
    frames = traceback.extract_tb(exc.__traceback__)[-LOGGED_FRAMES:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    return f"{type(exc).__name__} at {where}" if where else type(exc).__name__


def all_error_classes() -> list[type[EnclaveError]]:
    """Every class of the tree, root first (used by the error-shape tests and OpenAPI)."""
    out: list[type[EnclaveError]] = []
    stack: list[type[EnclaveError]] = [EnclaveError]
    while stack:
        cls = stack.pop(0)
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out
