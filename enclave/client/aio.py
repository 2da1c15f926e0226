"""``EnclaveClient``: the researcher's async client, on ``aiohttp.ClientSession``.

It speaks the documented HTTP API and nothing else: JSON in, JSON out, and every error response
parsed back into the ``enclave.errors`` class the server raised (``problems.py``).

Decisions:

- The token goes only into the ``Authorization`` header, never into a URL, a log, a repr or an
  exception. Transport failures are re-raised as ``EnclaveError`` subclasses *without* the
  aiohttp exception chained to them, since some aiohttp exceptions carry the request headers.
- Redirects are not followed: the gateway never redirects, and following one would hand the
  bearer token to whatever the ``Location`` names. A 3xx is reported as an error.
- A session passed in is the caller's to close; one the client makes is its own, opened on
  first use and closed by ``close()`` or ``async with``.
- A client-side timeout becomes ``QueryTimeout`` and an unreachable gateway
  ``ServiceUnavailable``: the same classes a caller already handles for the server's 504/503.
- Epsilon is never spent by surprise: ``query`` sends ``max_share = confirm_share`` (default
  25%), so the gateway refuses, free and before reading any data, a run that would spend more
  than that share of the budget left on that licence and dataset (409
  ``spend-needs-confirmation``). Only then does the client fetch a free estimate and let
  ``confirm(estimate)`` decide (``False``: ``SpendNotConfirmed`` is raised and nothing is
  run) or, without a ``confirm``, issue a ``LargeSpendWarning``; then it sends the query again
  without ``max_share``. A query within the share is one request. ``confirm_share=None``
  sends no ``max_share``.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from enclave.client.dummy import parquet_frame, parquet_records
from enclave.client.problems import error_from_response
from enclave.client.results import BatchEstimate, Estimate, HistoryPage, QueryResult
from enclave.errors import (
    EnclaveError,
    QueryTimeout,
    ReleaseFailed,
    ServiceUnavailable,
    SpendNeedsConfirmation,
)

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CONFIRM_SHARE = 0.25
Targets = Mapping[str, float]  # output column -> the ci95 wanted


class LargeSpendWarning(UserWarning):
    """A query is about to spend more than ``confirm_share`` of the epsilon left."""


class SpendNotConfirmed(Exception):
    """``confirm`` declined a query's spend: nothing was sent to run. ``estimate`` holds the
    free estimate it was shown."""

    def __init__(self, estimate: Estimate) -> None:
        super().__init__(spend_message(estimate))
        self.estimate = estimate


def spend_message(estimate: Estimate) -> str:
    """``this query spends epsilon 1.0, 40% of the 2.5 left on visits``."""
    return (
        f"this query spends epsilon {estimate.epsilon:g}, {estimate.share_of_remaining:.0%} "
        f"of the {estimate.budget.epsilon_remaining:g} left on {estimate.dataset}"
    )


class EnclaveClient:
    """Async client for one gateway and one bearer token.

    >>> async with EnclaveClient("https://enclave.example.org", token) as client:
    ...     result = await client.query("SELECT COUNT(*) AS n FROM visits", "visits")
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        confirm_share: float | None = DEFAULT_CONFIRM_SHARE,
        confirm: Callable[[Estimate], bool] | None = None,
    ) -> None:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("url must be an http:// or https:// address with a host")
        if parsed.user or parsed.password or parsed.query_string or parsed.fragment:
            raise ValueError("url must not carry credentials, a query or a fragment")
        if not token or any(c.isspace() for c in token):
            raise ValueError("token must be a non-empty string without whitespace")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if confirm_share is not None and not 0 <= confirm_share <= 1:
            raise ValueError("confirm_share must lie in [0, 1], or be None")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._session = session
        self._owns_session = session is None
        self.confirm_share = confirm_share
        self.confirm = confirm

    def __repr__(self) -> str:
        return f"EnclaveClient(url={self.url!r})"

    async def __aenter__(self) -> EnclaveClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client made it (a session passed in is left open)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- the researcher's endpoints -------------------------------------------------------

    async def datasets(self) -> list[dict[str, Any]]:
        """Datasets the caller's licences cover, with columns, types, bounds and values."""
        body = await self._request("GET", "/v1/datasets")
        return _list_of_dicts(body, "datasets")

    async def estimate(
        self,
        sql: str,
        dataset: str,
        epsilon: float | None = None,
        *,
        accuracy: Targets | None = None,
    ) -> Estimate:
        """Price a query without running it: cost, accuracy, cached, within budget. With
        ``accuracy={"n": 50}`` the gateway quotes the smallest epsilon whose ci95 for column
        ``n`` is at most 50 (instead of an ``epsilon``)."""
        body = _query(sql, dataset, epsilon, accuracy)
        return Estimate.from_json(await self._request("POST", "/v1/queries/estimate", body=body))

    async def estimate_batch(
        self,
        queries: Sequence[str | Mapping[str, Any]],
        dataset: str,
        total_epsilon: float | None = None,
    ) -> BatchEstimate:
        """Price several queries on ``dataset`` together against the budget left. Each query
        is SQL text, or ``{"sql": ..., "epsilon": ...}`` / ``{"sql": ..., "accuracy": {"n":
        50}}``; ``total_epsilon`` splits one total evenly over queries that give neither."""
        items = [
            {"sql": q}
            if isinstance(q, str)
            else _query(q.get("sql", ""), None, q.get("epsilon"), q.get("accuracy"))
            for q in queries
        ]
        body: dict[str, Any] = {"dataset": dataset, "queries": items}
        if total_epsilon is not None:
            body["total_epsilon"] = total_epsilon
        answer = await self._request("POST", "/v1/queries/estimate/batch", body=body)
        return BatchEstimate.from_json(answer)

    async def query(
        self,
        sql: str,
        dataset: str,
        epsilon: float | None = None,
        *,
        accuracy: Targets | None = None,
    ) -> QueryResult:
        """Run a query. Without ``epsilon`` or ``accuracy`` the tier's ``default_epsilon`` is
        spent. A large spend is confirmed or warned about first (see ``confirm_share``)."""
        body = _query(sql, dataset, epsilon, accuracy)
        return QueryResult.from_json(await self._guarded("/v1/queries", body, accuracy))

    async def _guarded(self, path: str, body: dict[str, Any], accuracy: Targets | None) -> Any:
        """Send a run with ``max_share``; a refusal is confirmed (or warned about) from a free
        estimate, then the run is sent again without it (see the module docstring)."""
        if self.confirm_share is not None:
            try:
                return await self._request(
                    "POST", path, body={**body, "max_share": self.confirm_share}
                )
            except SpendNeedsConfirmation:
                estimate = await self.estimate(
                    body["sql"], body["dataset"], body.get("epsilon"), accuracy=accuracy
                )
                if self.confirm is None:
                    warnings.warn(spend_message(estimate), LargeSpendWarning, stacklevel=3)
                elif not self.confirm(estimate):
                    raise SpendNotConfirmed(estimate) from None
        return await self._request("POST", path, body=body)

    async def submit_query(
        self,
        sql: str,
        dataset: str,
        epsilon: float | None = None,
        *,
        accuracy: Targets | None = None,
    ) -> dict[str, Any]:
        """Queue a long query as a job (docs/researcher.md), with the same spend guard as
        ``query``: the job (``id``, ``status_url``), or for a repeat of a released query its
        cached answer at once (the body ``query`` parses; no job)."""
        body = _query(sql, dataset, epsilon, accuracy)
        submitted: dict[str, Any] = await self._guarded("/v1/queries/jobs", body, accuracy)
        return submitted

    async def job_answer(self, job_id: str) -> QueryResult:
        """A done query job's answer: what ``query`` returns for the same query."""
        path = f"/v1/jobs/{quote(job_id, safe='')}/result"
        return QueryResult.from_json(await self._request("GET", path, params={"format": "json"}))

    async def query_job(
        self,
        sql: str,
        dataset: str,
        epsilon: float | None = None,
        *,
        accuracy: Targets | None = None,
        timeout: float = 3600.0,
        poll: float = 1.0,
    ) -> QueryResult:
        """Run a query as a job and wait for it (``jobs.timeout_s`` on the gateway, not
        ``server.query_timeout_s``). A refusal raises at once, as ``query``; a failed job
        raises the error a synchronous query would have (e.g. ``QueryTimeout``)."""
        submitted = await self.submit_query(sql, dataset, epsilon, accuracy=accuracy)
        if "status_url" not in submitted:  # a cached repeat: answered at once
            return QueryResult.from_json(submitted)
        await self.wait_job(str(submitted["id"]), timeout, poll)
        return await self.job_answer(str(submitted["id"]))

    async def dummy_file(
        self, dataset: str, rows: int = 1000, seed: int = 0, format: str = "parquet"
    ) -> bytes:
        """Dummy rows shaped like ``dataset``, from its public metadata only, as Parquet or
        CSV bytes. Free (no budget) and reproducible: the same seed gives the same bytes."""
        params = {"rows": str(rows), "seed": str(seed), "format": format}
        path = f"/v1/datasets/{quote(dataset, safe='')}/dummy"
        return await self._send("GET", path, params=params)

    async def dummy_records(
        self, dataset: str, rows: int = 1000, seed: int = 0
    ) -> list[dict[str, Any]]:
        """The dummy rows as one dict per row (no pandas needed)."""
        return parquet_records(await self.dummy_file(dataset, rows, seed))

    async def dummy(self, dataset: str, rows: int = 1000, seed: int = 0) -> Any:
        """The dummy rows as a ``pandas.DataFrame`` (extra ``enclave-gateway[pandas]``)."""
        return parquet_frame(await self.dummy_file(dataset, rows, seed))

    async def submit_synthetic(
        self, dataset: str, columns: list[str], epsilon: float, rows: int, bins: int | None = None
    ) -> dict[str, Any]:
        """Queue a DP synthetic table (docs/synthetic.md); the job as the gateway answers it
        (a repeat of a finished request answers its cached job, free)."""
        body: dict[str, Any] = {
            "dataset": dataset,
            "columns": list(columns),
            "epsilon": epsilon,
            "rows": rows,
        }
        if bins is not None:
            body["bins"] = bins
        job: dict[str, Any] = await self._request("POST", "/v1/synthetic", body=body)
        return job

    async def job(self, job_id: str) -> dict[str, Any]:
        """A job's state (``queued``, ``running``, ``done``, ``failed``) and progress."""
        job: dict[str, Any] = await self._request("GET", f"/v1/jobs/{quote(job_id, safe='')}")
        return job

    async def wait_job(
        self, job_id: str, timeout: float = 3600.0, poll: float = 1.0
    ) -> dict[str, Any]:
        """Poll until the job is done (returned) or failed (raised: a query job's problem as
        the error it names, else ``ReleaseFailed`` with its title); ``QueryTimeout`` after
        ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            job = await self.job(job_id)
            if job.get("state") == "done":
                return job
            if job.get("state") == "failed":
                raise _job_error(job.get("problem") or {})
            if loop.time() > deadline:
                raise QueryTimeout(f"job {job_id} not done within {timeout:g} s")
            await asyncio.sleep(poll)

    async def job_result(self, job_id: str, format: str = "parquet") -> bytes:
        """A done job's file: ``parquet``, ``csv`` or ``report`` (JSON bytes)."""
        path = f"/v1/jobs/{quote(job_id, safe='')}/result"
        return await self._send("GET", path, params={"format": format})

    async def synthetic(
        self,
        dataset: str,
        columns: list[str],
        epsilon: float,
        rows: int,
        bins: int | None = None,
        timeout: float = 3600.0,
    ) -> Any:
        """Release a DP synthetic table and wait for it: a ``pandas.DataFrame`` (extra
        ``enclave-gateway[pandas]``); the job's report is in ``frame.attrs["report"]``."""
        job = await self.submit_synthetic(dataset, columns, epsilon, rows, bins)
        done = await self.wait_job(str(job["id"]), timeout=timeout)
        frame = parquet_frame(await self.job_result(str(done["id"])))
        frame.attrs["report"] = _decode(await self.job_result(str(done["id"]), "report"))
        frame.attrs["job"] = done
        return frame

    async def budget(self) -> list[dict[str, Any]]:
        """Per licence and dataset: epsilon/delta spent, remaining, limit, and renewal."""
        body = await self._request("GET", "/v1/budget")
        return _list_of_dicts(body, "budgets")

    async def history(self, limit: int | None = None, cursor: str | None = None) -> HistoryPage:
        """One page of the caller's own past queries; pass ``next_cursor`` to continue."""
        params: dict[str, str] = {}
        if limit is not None:
            params["limit"] = str(limit)
        if cursor is not None:
            params["cursor"] = cursor
        body = await self._request("GET", "/v1/queries", params=params)
        return HistoryPage.from_json(body)

    # -- transport ------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        return _decode(await self._send(method, path, body=body, params=params))

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> bytes:
        session = self._get_session()
        failure: EnclaveError | None = None
        try:
            async with session.request(
                method,
                self.url + path,
                json=body,
                params=params,
                headers=self._headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                status, headers, content = resp.status, resp.headers.copy(), await resp.read()
        except TimeoutError:
            failure = QueryTimeout(f"no answer from the gateway within {self.timeout:g} s")
        except aiohttp.ClientError as exc:
            # built outside the handler below so the aiohttp exception is not chained
            failure = ServiceUnavailable(f"could not reach the gateway ({type(exc).__name__})")
        if failure is not None:
            raise failure
        if not 200 <= status < 300:
            raise error_from_response(status, headers, content)
        return content


def _query(
    sql: str, dataset: str | None, epsilon: float | None, accuracy: Targets | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"sql": sql} if dataset is None else {"dataset": dataset, "sql": sql}
    if epsilon is not None:
        body["epsilon"] = epsilon
    if accuracy is not None:
        body["accuracy"] = {column: {"ci95": ci95} for column, ci95 in accuracy.items()}
    return body


def _job_error(problem: dict[str, Any]) -> EnclaveError:
    """A failed job's problem as the error it names (a query job's carry their type and
    status), else ``ReleaseFailed`` with its title."""
    status = problem.get("status")
    if isinstance(status, int) and isinstance(problem.get("type"), str):
        return error_from_response(status, {}, json.dumps(problem).encode())
    return ReleaseFailed(str(problem.get("title", "the job failed")))


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        pass
    raise EnclaveError("the gateway's answer was not JSON")


def _list_of_dicts(body: Any, key: str) -> list[dict[str, Any]]:
    items = body.get(key) if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise EnclaveError(f"the gateway's answer lacks a valid '{key}'")
    return items
