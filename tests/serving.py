"""``enclave serve`` as a real subprocess, for the tests that need whole gateways (replicas
on one PostgreSQL, several worker processes): its output goes to a log file kept for failures."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REPO

START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """One ``enclave serve --config CONFIG --port PORT``, running the tree under test."""

    def __init__(self, config: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = config.with_suffix(".log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
        env["PYTHONPATH"] = str(REPO)  # the tree under test, whatever is installed
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "enclave", "serve", "--config", str(config)]
                + ["--port", str(port)],
                cwd=config.parent,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self) -> str:
        return self.text()[-3000:]

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        """Until ``/readyz`` answers 200 (fails the test if the process exits first)."""
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"gateway on {self.port} exited:\n{self.tail()}")
            try:
                async with http.get(self.url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        pytest.fail(f"gateway on {self.port} not ready after {START_TIMEOUT_S}s:\n{self.tail()}")

    async def wait_log(self, pattern: str, timeout_s: float = START_TIMEOUT_S) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.proc.poll() is not None:
                pytest.fail(f"gateway exited ({self.proc.returncode}):\n{self.tail()}")
            await asyncio.sleep(0.1)
        pytest.fail(f"no log line {pattern!r} after {timeout_s}s:\n{self.tail()}")

    def stop(self, kill: bool = False) -> None:
        """Terminate (drain) it, or ``kill`` it; kill if it does not exit within 10 s."""
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@asynccontextmanager
async def serving(
    configs: Sequence[Path],
) -> AsyncIterator[tuple[aiohttp.ClientSession, list[Served]]]:
    """Start a gateway per config together (they race to seed one store), wait until each is
    ready, and stop them all afterwards; yields an HTTP session and the gateways."""
    gateways = [Served(cfg, free_port()) for cfg in configs]
    connector = aiohttp.TCPConnector(limit=200)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(*(g.wait_ready(http) for g in gateways))
            yield http, gateways
    finally:
        for gateway in gateways:
            gateway.stop()
