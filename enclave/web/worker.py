"""One worker process of a gateway running ``server.processes`` > 1 (``web/workers.py``).

Started by the supervisor as ``python -m enclave.web.worker``: it reads its ``WorkerSpec``
(pickled by the supervisor, on its stdin), serves the full application (its own store
connection, DuckDB warehouse, JWKS cache) on the listening socket it inherited, and writes one
byte to its ready pipe once the application has started. It exits when the supervisor sends
SIGTERM (aiohttp drains the requests in flight first) or, through ``PR_SET_PDEATHSIG``, when the
supervisor dies.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from enclave.config import Config
from enclave.engine.child import die_with_parent
from enclave.errors import EnclaveError
from enclave.web.access_log import ACCESS_LOG_FORMAT

SHUTDOWN_TIMEOUT_S = 60.0  # requests in flight at SIGTERM get this long to finish


@dataclass(frozen=True)
class WorkerSpec:
    config: Config
    number: int  # 1..server.processes
    supervisor: int  # the supervisor's pid: a worker whose parent is gone exits
    sock_fd: int  # the listening socket, inherited
    ready_fd: int  # the write end of the ready pipe, inherited
    metrics_dir: Path


def main() -> None:
    spec: WorkerSpec = pickle.load(sys.stdin.buffer)  # noqa: S301 - our parent wrote it
    die_with_parent(signal.SIGTERM)
    if os.getppid() != spec.supervisor:  # the supervisor died before the line above
        raise SystemExit(1)
    from enclave.cli.common import setup_logging
    from enclave.web.app import create_app

    setup_logging(worker=spec.number)
    sock = socket.socket(fileno=spec.sock_fd)
    app = create_app(spec.config, worker=spec.number, metrics_dir=spec.metrics_dir)
    app.cleanup_ctx.append(_ready(spec.ready_fd))
    try:
        web.run_app(
            app,
            sock=sock,
            print=None,
            access_log_format=ACCESS_LOG_FORMAT,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
    except EnclaveError as err:  # start-up failed: the supervisor reports it
        print(f"error: worker {spec.number}: {err.detail}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _ready(fd: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context, last in line: every resource is open, so tell the supervisor."""

    async def ready(app: web.Application) -> AsyncIterator[None]:
        os.write(fd, b"1")
        os.close(fd)
        yield

    return ready


if __name__ == "__main__":
    main()
