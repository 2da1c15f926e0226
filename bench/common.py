"""Shared plumbing for the benchmarks: arguments, machine facts, results sections, data,
bench deployments and a real ``enclave serve`` subprocess.

Decisions:

- **A real server process.** Every HTTP benchmark starts ``python -m enclave serve`` on a free
  loopback port and talks to it with aiohttp, so the numbers include the real middleware,
  token verification, store, DuckDB threads and the process's own memory (``VmHWM``).
- **A bench tier.** The deployment gets ``policies/tiers/bench.yaml`` with a huge budget and
  rate limit, and one licence (subject ``bench``) on it, so thousands of queries are never
  refused. Everything else (policy, plan, noise, budget debit, audit append) is the real path.
- **Distinct queries.** Each repetition varies epsilon by 1e-6, so the release cache (keyed
  on plan, version and epsilon) never answers unless a benchmark repeats on purpose.
- **Cached data.** Generated Parquet files are kept under ``bench/out/data/`` (git-ignored)
  and hard-linked into each deployment's ``data/`` folder (a symlink would resolve outside
  ``policies.data_dir`` and be refused), so the file's mtime and the bounding fingerprint are
  stable between runs.
- **Results.** Each script replaces only its own section of ``bench/RESULTS.md`` (between
  ``<!-- bench:NAME -->`` markers). ``--smoke`` writes to ``bench/out/smoke/RESULTS.md``
  instead, so a smoke run never overwrites real numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
RESULTS = REPO / "bench" / "RESULTS.md"
ISSUER = "https://idp.bench.invalid/realms/enclave"
AUDIENCE = "enclave-gateway"
SUBJECT = "bench"

BENCH_TIER = """name: bench
description: Benchmarks only. A huge budget and rate limit so that no query is refused.
level: 9
aggregates: [count, count_distinct_units, sum, avg, quantile]
max_epsilon_per_query: 10.0
budget:
  epsilon: 1000000.0  # the largest budget a tier may have
  delta: 1.0e-3
min_noisy_count: 10
group_by:
  max_columns: 3
  max_groups: 2000
  allow_undeclared_keys: false
filters: true
rate_limit_per_minute: 100000000
allowed_jurisdictions: [GB]
"""


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds, no targets")
    p.add_argument("--results", type=Path, default=None, help="results file to update")
    p.add_argument("--out", type=Path, default=OUT, help="work folder (default bench/out)")
    return p


def results_path(args: argparse.Namespace) -> Path:
    if args.results is not None:
        return Path(args.results)
    return Path(args.out) / "smoke" / "RESULTS.md" if args.smoke else RESULTS


def machine_facts() -> str:
    """One line: date, cores, RAM, CPU and the versions that matter."""
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(f"{name} {version(name)}" for name in ("duckdb", "opendp", "aiohttp"))
    return (
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; commit {_commit()}; "
        f"{os.cpu_count()} cores "
        f"({cpu}), {mem_kb / 1024 / 1024:.1f} GiB RAM; Python {platform.python_version()}, "
        f"{versions}"
    )


def load_text() -> str:
    """The machine's load averages now, as ``uptime`` prints them (1, 5, 15 minutes)."""
    try:
        one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    except (OSError, ValueError):
        return "unknown"
    return f"load average {one}, {five}, {fifteen}"


def _commit() -> str:
    """The checked-out commit, ``+`` if the tree has local changes (read-only git calls)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "enclave"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+" if dirty else "")


def write_section(path: Path, name: str, title: str, body: str) -> None:
    """Replace (or append) the section ``name`` of the results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    section = f"{begin}\n## {title}\n\n_{machine_facts()}_\n\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
    print(f"[bench] wrote section '{name}' of {path}", flush=True)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (q in [0, 1]); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dataset(out: Path, rows: int) -> Path:
    """The cached synthetic visits file with ``rows`` rows (generated on first use)."""
    from enclave.engine.synth import generate_visits

    path = Path(out) / "data" / f"visits-{rows}.parquet"
    if not path.exists():
        log(f"generating {rows:,} synthetic visits into {path} ...")
        tmp = path.with_name(f".{path.name}.tmp")
        generate_visits(tmp, rows=rows, seed=7)
        os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Deployment:
    folder: Path
    config: Path
    data: Path  # the deployment's own link to the dataset file
    token: str


def make_deployment(
    folder: Path,
    data_file: Path,
    store_url: str = "sqlite:///state/enclave.db",
    processes: int = 1,
) -> Deployment:
    """A fresh deployment folder: repo policies + bench tier, the dataset, dev keys, a config,
    a seeded store with one bench licence, and a researcher token for it. ``processes``:
    ``server.processes`` (1 by default, so ``Server.status`` reads the one serving process)."""
    from enclave.devkeys import generate_keys, mint_token

    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(REPO / "policies", folder / "policies")
    (folder / "policies" / "tiers" / "bench.yaml").write_text(BENCH_TIER)
    (folder / "data").mkdir(parents=True)
    data = folder / "data" / "visits.parquet"
    try:
        os.link(data_file, data)
    except OSError:
        shutil.copy2(data_file, data)
    keys = generate_keys(folder / "keys", kid="bench-key")
    config = folder / "enclave.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 8080\nquery_timeout_s = 120\n'
        f"processes = {processes}\n\n"
        f'[auth]\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\njwks_file = "keys/jwks.json"\n\n'
        f'[store]\nurl = "{store_url}"\n\n[policies]\ndir = "policies"\ndata_dir = "data"\n\n'
        '[engine]\nstate_dir = "state"\n\n'
        # the bench measures the gateway, not its flood limits (one subject, one address)
        "[limits]\nper_address_per_minute = 100000000\nper_subject_per_minute = 100000000\n"
    )
    asyncio.run(_seed(config))
    token = mint_token(
        keys.private_pem,
        sub=SUBJECT,
        roles=["researcher"],
        issuer=ISSUER,
        audience=AUDIENCE,
        ttl_s=24 * 3600,
        kid="bench-key",
    )
    return Deployment(folder=folder, config=config, data=data, token=token)


async def _seed(config_path: Path) -> None:
    await add_licence(config_path, SUBJECT, "bench", licence_id="lic_bench", seed_policies=True)


async def add_licence(
    config_path: Path,
    subject: str,
    tier: str,
    *,
    licence_id: str | None = None,
    days: int = 30,
    seed_policies: bool = False,
) -> None:
    """Issue a benchmark licence straight into the store (seeding the policies first if asked)."""
    from enclave.audit.record import AuditDraft
    from enclave.config import load_config
    from enclave.models import Licence, utcnow
    from enclave.policy.registry import Registry
    from enclave.store import open_store

    cfg = load_config(config_path)
    store = open_store(cfg.store.url)
    await store.open()
    try:
        if seed_policies:
            await Registry(store, cfg.policies.dir, cfg.policies.data_dir).seed()
        now = utcnow()
        lic = Licence(
            id=licence_id or f"lic_{subject}",
            subject=subject,
            organization="Benchmarks",
            tier=tier,
            datasets=("visits",),
            purpose="benchmarks",
            jurisdiction="GB",
            valid_from=now - dt.timedelta(minutes=5),
            valid_until=now + dt.timedelta(days=days),
            created_at=now,
            updated_at=now,
        )
        draft = AuditDraft(
            action="licence.create", outcome="ok", actor="bench", roles=("admin",), client="cli"
        )
        await store.insert_licence(lic, draft)
    finally:
        await store.close()


async def create_database(dsn: str) -> str:
    """Create a throwaway database on ``dsn``'s server; return its URL."""
    import asyncpg

    name = f"enclave_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


async def drop_database(dsn: str, url: str) -> None:
    import asyncpg

    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m enclave serve`` as a subprocess on a free loopback port."""

    def __init__(
        self, deployment: Deployment, log_path: Path, prefix: list[str] | None = None
    ) -> None:
        self.deployment = deployment
        self.prefix = prefix or [sys.executable, "-m", "enclave"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s = float("nan")

    def start(self, timeout_s: float = 600.0) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with self.log_path.open("wb") as logf:
            self.proc = subprocess.Popen(
                [
                    *self.prefix,
                    "serve",
                    "--config",
                    str(self.deployment.config),
                    "--port",
                    str(self.port),
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.deployment.folder,
            )
        asyncio.run(self._wait_ready(timeout_s))
        self.ready_s = time.perf_counter() - started
        return self

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"server exited early; see {self.log_path}")
                try:
                    async with session.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout_s}s; see {self.log_path}")

    def status(self, field: str) -> int:
        """A ``/proc/<pid>/status`` field in KiB (``VmHWM``, ``VmRSS``)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Server:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class QueryError(RuntimeError):
    pass


async def post_query(
    session: aiohttp.ClientSession, server: Server, token: str, sql: str, epsilon: float
) -> tuple[float, dict[str, Any]]:
    """POST one query; return (seconds, JSON body). ``QueryError`` on any non-200."""
    body = {"dataset": "visits", "sql": sql, "epsilon": epsilon}
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    async with session.post(server.url + "/v1/queries", json=body, headers=headers) as resp:
        payload = await resp.json(content_type=None)
        elapsed = time.perf_counter() - started
        if resp.status != 200:
            raise QueryError(f"HTTP {resp.status}: {payload}")
    return elapsed, payload
