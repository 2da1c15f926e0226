"""``Client``: a thin blocking wrapper over ``EnclaveClient``, for scripts and notebooks
without an event loop of their own.

It runs the async client on a private event loop (``asyncio.Runner``) that lives as long as
the ``Client``, so one HTTP session serves every call. It must not be called from code that
is already running inside an event loop (an ``async def``, a Jupyter cell under an
autoawaiting kernel, an aiohttp handler): blocking there would stall that loop, and nesting
loops is refused by asyncio anyway. Such calls raise ``RuntimeError`` *before* anything is
sent; use ``EnclaveClient`` and ``await`` instead. One ``Client`` is meant for one thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from enclave.client.aio import DEFAULT_CONFIRM_SHARE, DEFAULT_TIMEOUT_S, EnclaveClient, Targets
from enclave.client.results import BatchEstimate, Estimate, HistoryPage, QueryResult

T = TypeVar("T")

INSIDE_LOOP = (
    "enclave.client.Client is blocking and cannot run inside a running event loop; "
    "use 'await' with enclave.client.EnclaveClient there instead"
)


class Client:
    """Blocking client: the same methods as ``EnclaveClient``, without ``await``.

    >>> with Client("https://enclave.example.org", token) as client:
    ...     print(client.query("SELECT COUNT(*) AS n FROM visits", "visits").rows)
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        confirm_share: float | None = DEFAULT_CONFIRM_SHARE,
        confirm: Callable[[Estimate], bool] | None = None,
    ) -> None:
        self._client = EnclaveClient(
            url, token, timeout=timeout, confirm_share=confirm_share, confirm=confirm
        )
        self._runner: asyncio.Runner | None = None

    def __repr__(self) -> str:
        return f"Client(url={self._client.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session and the private event loop."""
        if self._runner is None:
            return
        _refuse_inside_loop()
        try:
            self._runner.run(self._client.close())
        finally:
            self._runner.close()
            self._runner = None

    def datasets(self) -> list[dict[str, Any]]:
        return self._run(self._client.datasets)

    def estimate(
        self,
        sql: str,
        dataset: str,
        epsilon: float | None = None,
        *,
        accuracy: Targets | None = None,
    ) -> Estimate:
        return self._run(lambda: self._client.estimate(sql, dataset, epsilon, accuracy=accuracy))

    def estimate_batch(
        self,
        queries: Sequence[str | Mapping[str, Any]],
        dataset: str,
        total_epsilon: float | None = None,
    ) -> BatchEstimate:
        return self._run(lambda: self._client.estimate_batch(queries, dataset, total_epsilon))

    def query(
        self,
        sql: str,
        dataset: str,
        epsilon: float | None = None,
        *,
        accuracy: Targets | None = None,
    ) -> QueryResult:
        return self._run(lambda: self._client.query(sql, dataset, epsilon, accuracy=accuracy))

    def submit_query(
        self,
        sql: str,
        dataset: str,
        epsilon: float | None = None,
        *,
        accuracy: Targets | None = None,
    ) -> dict[str, Any]:
        return self._run(
            lambda: self._client.submit_query(sql, dataset, epsilon, accuracy=accuracy)
        )

    def job_answer(self, job_id: str) -> QueryResult:
        return self._run(lambda: self._client.job_answer(job_id))

    def query_job(
        self,
        sql: str,
        dataset: str,
        epsilon: float | None = None,
        *,
        accuracy: Targets | None = None,
        timeout: float = 3600.0,
        poll: float = 1.0,
    ) -> QueryResult:
        return self._run(
            lambda: self._client.query_job(
                sql, dataset, epsilon, accuracy=accuracy, timeout=timeout, poll=poll
            )
        )

    def dummy_file(
        self, dataset: str, rows: int = 1000, seed: int = 0, format: str = "parquet"
    ) -> bytes:
        return self._run(lambda: self._client.dummy_file(dataset, rows, seed, format))

    def dummy_records(self, dataset: str, rows: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
        return self._run(lambda: self._client.dummy_records(dataset, rows, seed))

    def dummy(self, dataset: str, rows: int = 1000, seed: int = 0) -> Any:
        return self._run(lambda: self._client.dummy(dataset, rows, seed))

    def submit_synthetic(
        self, dataset: str, columns: list[str], epsilon: float, rows: int, bins: int | None = None
    ) -> dict[str, Any]:
        return self._run(
            lambda: self._client.submit_synthetic(dataset, columns, epsilon, rows, bins)
        )

    def job(self, job_id: str) -> dict[str, Any]:
        return self._run(lambda: self._client.job(job_id))

    def wait_job(self, job_id: str, timeout: float = 3600.0, poll: float = 1.0) -> dict[str, Any]:
        return self._run(lambda: self._client.wait_job(job_id, timeout, poll))

    def job_result(self, job_id: str, format: str = "parquet") -> bytes:
        return self._run(lambda: self._client.job_result(job_id, format))

    def synthetic(
        self,
        dataset: str,
        columns: list[str],
        epsilon: float,
        rows: int,
        bins: int | None = None,
        timeout: float = 3600.0,
    ) -> Any:
        return self._run(
            lambda: self._client.synthetic(dataset, columns, epsilon, rows, bins, timeout)
        )

    def budget(self) -> list[dict[str, Any]]:
        return self._run(self._client.budget)

    def history(self, limit: int | None = None, cursor: str | None = None) -> HistoryPage:
        return self._run(lambda: self._client.history(limit=limit, cursor=cursor))

    def _run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        # Check before the coroutine exists, so a refusal leaves nothing un-awaited behind.
        _refuse_inside_loop()
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(make())


def _refuse_inside_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(INSIDE_LOOP)
