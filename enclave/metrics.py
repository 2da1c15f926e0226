"""Prometheus metrics, one registry per application (no process globals).

Labels never carry a subject, licence or dataset: ``/metrics`` is served without a token, so
it only tells operators how the service behaves, not who asked what. The only label values
are route templates (``/v1/admin/licences/{id}``, never the id), a closed set of methods,
status codes and problem types from ``errors.py``: every label set is bounded by the code.

    enclave_requests_total{route,method,status}   every HTTP request (middleware)
    enclave_request_seconds{route}                latency histogram (middleware)
    enclave_releases_total                        query answers returned, cached repeats too
    enclave_cache_hits_total                      of those, repeats served from the cache
    enclave_refusals_total{reason}                problem responses, by problem type
    enclave_epsilon_spent_total                   epsilon charged, all licences together (a
                                                  failure after the data was read too)
    enclave_jobs_total{kind,state}                jobs this process ended (done, failed)
    enclave_worker_requests_total{worker}         requests answered by each worker process
    enclave_audit_commits_total                   group commits of audit records (store/group.py)
    enclave_audit_committed_records_total         records they held (÷ commits: mean batch size)

Several worker processes (``server.processes`` > 1): prometheus-client's multiprocess mode.
Each worker writes its values to memory-mapped files in one directory that the supervisor
makes for this run (``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor in the workers'
environment before anything is imported) and removes at exit; ``/metrics``, answered by
whichever worker accepts the scrape, merges every worker's files, so a scrape sees the whole
gateway (counters and histograms summed over workers, a restarted worker's counts included).
``worker`` (1..processes, a bounded label) tells how the load is spread.

A cached repeat counts as a release (an answer went out) and as a cache hit, and spends no
epsilon; ``releases - cache_hits`` is the number of fresh noisy releases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    worker: str = "1"  # this process's worker number
    multiprocess_dir: Path | None = None  # shared with the other workers (see above)

    def __post_init__(self) -> None:
        if self.multiprocess_dir is not None and not getattr(
            values.ValueClass, "_multiprocess", False
        ):
            raise RuntimeError(
                "PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client loads"
            )
        r = self.registry
        self.requests = Counter(
            "enclave_requests_total",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "enclave_request_seconds",
            "Request latency by route",
            ["route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.releases = Counter("enclave_releases_total", "Noisy results released", registry=r)
        self.cache_hits = Counter(
            "enclave_cache_hits_total",
            "Repeated queries answered from the release cache",
            registry=r,
        )
        self.refusals = Counter(
            "enclave_refusals_total",
            "Refused requests by problem type",
            ["reason"],
            registry=r,
        )
        self.epsilon = Counter(
            "enclave_epsilon_spent_total",
            "Epsilon charged, summed over all licences",
            registry=r,
        )
        self.worker_requests = Counter(
            "enclave_worker_requests_total",
            "HTTP requests answered by each worker process",
            ["worker"],
            registry=r,
        ).labels(self.worker)
        self.audit_commits = Counter(
            "enclave_audit_commits_total",
            "Transactions that committed audit records (group commit), by this process",
            registry=r,
        )
        self.audit_records = Counter(
            "enclave_audit_committed_records_total",
            "Audit records committed by those transactions",
            registry=r,
        )
        self.jobs = Counter(
            "enclave_jobs_total",
            "Jobs ended by this process, by kind and final state",
            ["kind", "state"],
            registry=r,
        )

    def record_release(self, cached: bool, epsilon: float) -> None:
        """One answer returned to a researcher (``epsilon`` is what it charged)."""
        self.releases.inc()
        if cached:
            self.cache_hits.inc()
        self.record_charge(epsilon)

    def record_charge(self, epsilon: float) -> None:
        """Epsilon charged: by a release, or by a failure after the data was read (charged
        as a release is, so counted alike)."""
        if epsilon > 0:
            self.epsilon.inc(epsilon)

    def record_job(self, kind: str, state: str, epsilon: float) -> None:
        """A job ended here (``epsilon``: what its end charged, 0 if nothing)."""
        self.jobs.labels(kind, state).inc()
        self.record_charge(epsilon)

    def record_commit(self, records: int) -> None:
        """One group commit of ``records`` audit records (``Store.observe_commits``)."""
        self.audit_commits.inc()
        self.audit_records.inc(records)

    def record_refusal(self, problem_type: str) -> None:
        self.refusals.labels(problem_type).inc()

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return bytes(generate_latest(self.registry))
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return bytes(generate_latest(merged))
