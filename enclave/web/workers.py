"""Several worker processes behind one listening socket (``server.processes`` > 1).

``serve_workers(config, host, port)`` is what ``enclave serve`` runs when the config asks for
more than one process. The parent becomes a supervisor that serves no request itself:

1. **Listens once.** It binds and listens on ``host:port`` before anything else (a port in use
   fails at once, with the address in the message). Every worker inherits this one socket and
   accepts from it; the kernel hands each new connection to one of them. The port stays bound
   while a worker restarts, so no connection is refused meanwhile.
2. **Prepares the state once** (``prepare_state``): the store's migrations (each adapter runs
   them under its own lock), the policy seed at first start and the truncation seed shared
   through the store, so workers never race to do them and a broken store or policy fails the
   start with one clear message before any worker exists.
3. **Starts the workers** (``python -m enclave.web.worker``, a fresh interpreter each, never a
   fork of this process), each running the full application with its own store connection,
   DuckDB warehouse and JWKS cache, and waits until every one has said it is ready. A worker
   that exits before that fails the whole start: the others are stopped, and the exit status
   is 1 with a line naming the worker (its own error line comes just before).
4. **Supervises.** A worker that dies later (a crash, ``kill -9``, out of memory) is logged
   with its exit status and restarted; one that dies again within ``QUICK_EXIT_S`` of its
   start waits ``1, 2, 4, ... 30`` seconds before the next attempt, so a crash loop does not
   spin.
5. **Stops.** SIGTERM or SIGINT: every worker gets SIGTERM once and drains (aiohttp stops
   accepting and lets requests in flight finish, for up to ``worker.SHUTDOWN_TIMEOUT_S``);
   a worker still running after ``STOP_GRACE_S`` more is killed. Exit status 0. Workers run in
   their own session, so a Ctrl-C in a terminal reaches them only through the supervisor.
   A worker whose supervisor dies gets SIGTERM from the kernel (``PR_SET_PDEATHSIG``).

Everything workers must agree on lives in the store, exactly as for replicas (budget, release
cache, rate-limit counts, revocations, licences, policies, the truncation seed, the audit
chain); what each keeps in memory is either keyed by what it read from the store (policy
objects), safe to be per process (verified tokens, JWKS keys, the memo of keys already over
their rate limit in this window), or the engine's views over bounded files that the workers
share through ``engine.state_dir`` (prepared once, under a file lock: ``engine/bounding.py``).

Metrics: prometheus-client multiprocess mode in a private directory made here and removed at
exit (``enclave/metrics.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from enclave.config import Config
from enclave.policy.registry import registry_for
from enclave.store import connected_store
from enclave.web.app import shared_truncation_key
from enclave.web.worker import SHUTDOWN_TIMEOUT_S, WorkerSpec

log = logging.getLogger("enclave.workers")
BACKLOG = 128
QUICK_EXIT_S = 10.0  # a worker dying this soon after its start backs off before restarting
MAX_BACKOFF_S = 30.0
STOP_GRACE_S = 10.0  # beyond the workers' own shutdown timeout
START_TIMEOUT_S = 900.0  # a worker not ready after this fails the start
POLL_S = 0.5


class StartFailed(Exception):
    """A worker could not start; the message says which and how it ended."""


def listen(host: str, port: int) -> socket.socket:
    """The one listening socket the workers share (``StartFailed`` if it cannot be bound)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StartFailed(f"cannot listen on {host}:{port} ({why})") from None


async def prepare_state(config: Config) -> None:
    """What runs once before any worker serves: migrations, first-start seed, shared seed."""
    async with connected_store(config.store.url) as store:
        await registry_for(store, config).seed()
        await shared_truncation_key(store, config.engine.state_dir)


def serve_workers(config: Config, host: str, port: int) -> None:
    """Listen, prepare, run ``server.processes`` workers until SIGTERM/SIGINT (see above).
    Raises ``EnclaveError`` (store or policies) or ``StartFailed`` (cannot listen, a worker
    did not start)."""
    sock = listen(host, port)
    metrics_dir = Path(tempfile.mkdtemp(prefix="enclave-metrics-"))
    try:
        asyncio.run(prepare_state(config))
        Supervisor(config, sock, metrics_dir).run(host, port)
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


@dataclass
class Slot:
    """One worker position (``number`` 1..N) and the process filling it now."""

    number: int
    proc: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None  # read end of its ready pipe until it said ready
    ready: bool = False
    started: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None
    starts: int = 0  # how many processes have filled it


class Supervisor:
    def __init__(self, config: Config, sock: socket.socket, metrics_dir: Path) -> None:
        self.config = config
        self.sock = sock
        self.metrics_dir = metrics_dir
        self.slots = [Slot(n) for n in range(1, config.server.processes + 1)]
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        wake_r, self.wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.wake_r = wake_r
        self.selector.register(wake_r, selectors.EVENT_READ)

    # --- the loop --------------------------------------------------------------------------

    def run(self, host: str, port: int) -> None:
        old = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        old[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _wake_only)
        old_wakeup = signal.set_wakeup_fd(self.wake_w)
        try:
            try:
                for slot in self.slots:
                    self._spawn(slot)
                self._start(host, port)
                while not self.stopping:
                    self._wait(POLL_S)
                    self._check(starting=False)
            finally:
                self._stop()  # our handlers stay: a second signal cannot cut the drain short
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.selector.close()
            os.close(self.wake_r)
            os.close(self.wake_w)

    def _start(self, host: str, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(slot.ready for slot in self.slots):
            if self.stopping:
                return
            if time.monotonic() > deadline:
                raise StartFailed(f"workers not ready after {START_TIMEOUT_S:.0f} s")
            self._wait(POLL_S)
            self._check(starting=True)
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "serving on http://%s:%d with %d worker processes (pids %s)",
            shown, port, len(self.slots), ", ".join(str(s.proc.pid) for s in self.slots if s.proc),
        )  # fmt: skip

    def _wait(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            fd = int(key.fd)
            if fd == self.wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(fd, 512):
                        pass
                continue
            slot = next(s for s in self.slots if s.ready_fd == fd)
            got = os.read(fd, 1)
            self._close_ready(slot)
            if got:
                slot.ready = True
                if slot.starts > 1 and slot.proc is not None:
                    log.info("worker %d (pid %d) is serving", slot.number, slot.proc.pid)

    def _check(self, *, starting: bool) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is not None:
                self._exited(slot, starting, now)
            elif slot.proc is None and slot.restart_at is not None and now >= slot.restart_at:
                self._spawn(slot)

    def _exited(self, slot: Slot, starting: bool, now: float) -> None:
        assert slot.proc is not None  # noqa: S101 - checked by the caller
        code, pid = slot.proc.returncode, slot.proc.pid
        slot.proc = None
        self._close_ready(slot)
        with contextlib.suppress(OSError):
            mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with status {code}"
        if starting:
            raise StartFailed(f"worker {slot.number} (pid {pid}) {how} before serving")
        if now - slot.started < QUICK_EXIT_S:
            slot.quick_exits += 1
        else:
            slot.quick_exits = 0
        delay = 0.0 if slot.quick_exits == 0 else min(2.0 ** (slot.quick_exits - 1), MAX_BACKOFF_S)
        slot.ready = False
        slot.restart_at = now + delay
        log.warning("worker %d (pid %d) %s; restarting it in %.0f s", slot.number, pid, how, delay)

    # --- workers ---------------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        ready_r, ready_w = os.pipe()
        spec = WorkerSpec(
            config=self.config,
            number=slot.number,
            supervisor=os.getpid(),
            sock_fd=self.sock.fileno(),
            ready_fd=ready_w,
            metrics_dir=self.metrics_dir,
        )
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir))
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "enclave.web.worker"],
                stdin=subprocess.PIPE,
                pass_fds=(self.sock.fileno(), ready_w),
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(ready_w)
        assert proc.stdin is not None  # noqa: S101 - stdin=PIPE
        try:
            proc.stdin.write(pickle.dumps(spec))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; the loop reports how
        slot.proc, slot.ready_fd, slot.ready = proc, ready_r, False
        slot.started, slot.restart_at = time.monotonic(), None
        slot.starts += 1
        self.selector.register(ready_r, selectors.EVENT_READ)

    def _close_ready(self, slot: Slot) -> None:
        if slot.ready_fd is not None:
            self.selector.unregister(slot.ready_fd)
            os.close(slot.ready_fd)
            slot.ready_fd = None

    def _stop(self) -> None:
        """SIGTERM to every worker (once), wait for them to drain, kill what is left."""
        live = [s.proc for s in self.slots if s.proc is not None and s.proc.poll() is None]
        if live:
            log.info("stopping: %d worker(s) finish the requests in flight", len(live))
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S + STOP_GRACE_S
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        for slot in self.slots:
            slot.proc = None
            self._close_ready(slot)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("received %s", _signal_name(signum))
        self.stopping = True


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _wake_only(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD: nothing to do here; the wakeup fd ends the wait and the loop looks."""


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
