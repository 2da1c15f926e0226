"""The release step, padded to a deadline that does not depend on the data.

The time from "data read" (the engine's rows are in hand) to the response is observable, and
a release whose work grows with what the data holds would tell, by its duration alone, how
many keys a filter matched. Every per-group step of the release is a vector operation or
touches only DP outputs (``dp/release.py``), and a quantile costs ``O(candidates)``
(``dp/quantile.py``); what still grows with the data is:

- with undeclared group keys: OpenDP's sampling of one noise value per key found (partition
  selection, ``dp/partition.py``), and building the exact groups from the engine's rows
  (``query/compile.assemble``): about 10 us per distinct key on an idle core;
- otherwise: only the engine rows ``assemble`` reads and discards (values of declared
  category columns outside the declared set) and quantile histogram entries, a few per
  candidate gap: microseconds.

So a plan with undeclared keys releases no sooner than ``server.release_deadline_ms`` after
the data was read (``deadline_for``), whether the release succeeds or fails; below the
number of keys the step can handle in that time, its duration says nothing about the data.
Beyond, the excess grows by the per-key cost (``bench/timing.py`` measures both; docs/privacy.md
states the residual). Other plans are not padded: their release work is fixed by public
parameters (declared groups, aggregates, candidates), and padding them would cost every
query the deadline. The step runs in a worker thread, so the event loop serves other
requests while it runs or waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from enclave.dp.mechanisms import PricedPlan

T = TypeVar("T")


def deadline_for(priced: PricedPlan, release_deadline_ms: float) -> float:
    """Seconds the release step of ``priced`` is padded to (0: not padded); public inputs."""
    return release_deadline_ms / 1000.0 if priced.n_groups is None else 0.0


async def padded(step: Callable[[], T], deadline_s: float) -> T:
    """Run ``step`` off the loop; return or raise no sooner than ``deadline_s`` from now."""
    started = time.monotonic()
    try:
        result = await asyncio.to_thread(step)
    except asyncio.CancelledError:
        raise
    except Exception:
        await _sleep_until(started + deadline_s)
        raise
    await _sleep_until(started + deadline_s)
    return result


async def _sleep_until(moment: float) -> None:
    rest = moment - time.monotonic()
    if rest > 0:
        await asyncio.sleep(rest)
