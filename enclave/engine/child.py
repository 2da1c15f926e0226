"""Dataset preparation in child processes: bounded in number, with a deadline, killable.

Reading a source can take long (a huge file) or never end (a view that computes forever, a
source that blocks); a thread stuck in a read cannot be stopped, a process can. ``ChildPool``
runs one function per fresh child process, at most ``size`` at a time, and kills the child
(``SIGKILL``) when it passes its deadline or its caller is cancelled. Nothing of the gateway's
event loop, query threads or Python's shared default executor waits on a child: the parent
watches the result pipe and the process sentinel with ``loop.add_reader``, and starts
children on the pool's own small thread pool.

Children come from a ``forkserver`` with the engine preloaded (a fork of a clean,
single-threaded server: ~20 ms to start instead of ~250 ms for ``spawn``), never a fork of the
threaded gateway. A child asks the kernel to kill it when its parent dies (Linux
``PR_SET_PDEATHSIG``), so a gateway killed with ``kill -9`` leaves no stuck reader behind.

A child reports ``("ok", value)`` or ``("error", text)``, where the text is a
``DatasetUnavailable`` detail (fixed texts only) and its log records at WARNING and above,
which the parent logs under the same logger names. Any other failure, a crash or the deadline
becomes ``DatasetUnavailable`` with a fixed text.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from enclave.errors import DatasetUnavailable

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_REAP_S = 10.0
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["enclave.engine.bounding", "enclave.engine.schema"])

LogLine = tuple[str, int, str]


class ChildPool:
    """At most ``size`` child processes at a time, each killed at its deadline."""

    def __init__(self, size: int) -> None:
        self._slots = asyncio.Semaphore(size)
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="enclave-child")
        self._running: set[int] = set()

    def running(self) -> frozenset[int]:
        """Process ids of the children running now."""
        return frozenset(self._running)

    async def call(self, deadline_s: float, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a child; its value, or ``DatasetUnavailable`` (fixed texts).

        ``fn`` and its arguments must be picklable (a module-level function, plain values).
        The deadline starts when the child starts, not while waiting for a slot.
        """
        async with self._slots:
            return await self._run(deadline_s, fn, args)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _run(self, deadline_s: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        loop = asyncio.get_running_loop()
        reader, writer = _CONTEXT.Pipe(duplex=False)
        proc = _CONTEXT.Process(target=_child_main, args=(writer, fn, args), daemon=True)
        try:
            try:
                await loop.run_in_executor(self._threads, proc.start)
            finally:
                writer.close()
            pid = proc.pid or 0
            self._running.add(pid)
            try:
                await _readable(reader.fileno(), deadline_s)
            except TimeoutError:
                log.warning("a dataset preparation passed its deadline; its process was killed")
                raise DatasetUnavailable("the dataset could not be prepared in time") from None
            try:
                status, payload, lines = reader.recv()
            except (EOFError, OSError):
                raise DatasetUnavailable("the dataset could not be prepared") from None
        finally:
            reader.close()
            self._running.discard(proc.pid or 0)
            await _reap(proc)
        for name, level, message in lines:
            logging.getLogger(name).log(level, "%s", message)
        if status != "ok":
            raise DatasetUnavailable(str(payload))
        return payload


async def _readable(fd: int, timeout_s: float) -> None:
    """Wait until ``fd`` is readable (data or end of file); ``TimeoutError`` after the limit."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, timeout_s)
    finally:
        loop.remove_reader(fd)


async def _reap(proc: Any) -> None:
    """Kill ``proc`` if it still runs and wait (off the loop's threads) until it is gone."""
    if proc.pid is None:  # never started
        return
    if proc.exitcode is None:
        proc.kill()
    with contextlib.suppress(TimeoutError, ValueError, OSError):
        await _readable(proc.sentinel, _REAP_S)
    proc.join(0)
    if proc.exitcode is None:
        log.error("a preparation process did not exit after SIGKILL")
        return
    proc.close()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[LogLine] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, record.levelno, record.getMessage()))


def die_with_parent(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


def _child_main(writer: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    die_with_parent(signal.SIGKILL)
    collect = _Collect()
    root = logging.getLogger()
    root.handlers[:] = [collect]
    root.setLevel(logging.WARNING)
    try:
        result: tuple[str, Any, list[LogLine]] = ("ok", fn(*args), collect.lines)
    except DatasetUnavailable as exc:
        result = ("error", exc.detail, collect.lines)
    except Exception as exc:  # anything else: a fixed text, the class name in the log only
        collect.lines.append(
            (log.name, logging.WARNING, f"preparation failed ({type(exc).__name__})")
        )
        result = ("error", "the dataset could not be prepared", collect.lines)
    with contextlib.suppress(BrokenPipeError):  # the parent stopped waiting (its deadline)
        writer.send(result)
    writer.close()
