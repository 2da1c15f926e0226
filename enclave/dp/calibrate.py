"""OpenDP measurement builders and scale calibration, shared by pricing and release.

Every measurement is built from ``dp.m`` directly with an explicit scale (never ``dp.Context``,
whose scale search costs seconds per query). A scale is calibrated so that OpenDP's own privacy
map, evaluated at the declared sensitivity, never exceeds the epsilon share it must fit: build
at a reference scale, take the ratio (every map used here is ``d_in / scale`` times a
constant), rebuild, and nudge the scale up while float rounding makes the map exceed the share.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import opendp.prelude as dp

from enclave.errors import EnclaveError

_enabled = False

# Number of quantile candidates spanning the declared bounds when the column is not a small
# integer range: 512 keeps the output resolution at (U - L) / 511, well under the noise of
# the exponential mechanism for typical epsilons, at ~0.5 ms per group to score.
QUANTILE_CANDIDATES = 512

Build = Callable[[float], Any]


def enable_dp() -> None:
    """Enable OpenDP's ``contrib`` features (idempotent; called once at start-up)."""
    global _enabled
    if not _enabled:
        dp.enable_features("contrib")
        _enabled = True


def epsilon_of(distance: Any) -> float:
    """The epsilon of a privacy map's answer: a float (pure DP) or an (epsilon, delta) pair."""
    if isinstance(distance, tuple):
        return float(distance[0])
    return float(distance)


def calibrate(build: Build, d_in: Any, target: float) -> tuple[Any, float, float]:
    """Return ``(measurement, scale, epsilon)`` with ``measurement.map(d_in) <= target``."""
    if not target > 0 or not math.isfinite(target):
        raise EnclaveError("epsilon share must be positive and finite")
    reference = 1.0
    eps_ref = epsilon_of(build(reference).map(d_in))
    if eps_ref == 0.0:  # zero sensitivity (bounds [0, 0]): any scale is free
        meas = build(reference)
        return meas, reference, 0.0
    scale = reference * eps_ref / target
    for attempt in range(200):
        meas = build(scale)
        eps = epsilon_of(meas.map(d_in))
        if eps <= target:
            return meas, scale, eps
        scale = math.nextafter(scale, math.inf) * (1.0 + 2.0 ** min(-52 + attempt, -4))
    raise EnclaveError("could not calibrate a noise scale")  # pragma: no cover


def largest_float_at_most(value: Decimal) -> float:
    """The largest float whose exact value does not exceed ``value``."""
    out = float(value)
    while Decimal(out) > value:
        out = math.nextafter(out, -math.inf)
    return out


def even_share(budget: Decimal, parts: int) -> float:
    """A float share with ``parts * share <= budget`` exactly (checked in Decimal)."""
    share = largest_float_at_most(budget / parts)
    while Decimal(share) * parts > budget:
        share = math.nextafter(share, 0.0)
    return share


def count_builder(int_type: str = "i64") -> Build:
    """Vector discrete Laplace over integer counts (l1 distance): integer outputs."""

    def build(scale: float) -> Any:
        return dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T=int_type)), dp.l1_distance(T=int_type), scale=scale
        )

    return build


def float_builder() -> Build:
    """Vector Laplace over float sums (OpenDP samples it exactly on a 2^-1074 grid)."""

    def build(scale: float) -> Any:
        return dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T=float, nan=False)),
            dp.l1_distance(T=float),
            scale=scale,
        )

    return build


def quantile_builder(candidates: Sequence[float], alpha: float) -> Build:
    """OpenDP's private quantile (exponential-mechanism scoring) over one group's values."""
    cands = list(candidates)

    def build(scale: float) -> Any:
        return dp.m.make_private_quantile(
            dp.vector_domain(dp.atom_domain(T=float, nan=False)),
            dp.symmetric_distance(),
            dp.max_divergence(),
            candidates=cands,
            alpha=alpha,
            scale=scale,
        )

    return build


def threshold_builder(threshold: int) -> Build:
    """Laplace threshold (partition selection) over a map of string keys to i64 counts."""

    def build(scale: float) -> Any:
        return dp.m.make_laplace_threshold(
            dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64")),
            dp.l01inf_distance(dp.absolute_distance(T="i64")),
            scale=scale,
            threshold=threshold,
        )

    return build


def quantile_candidates(low: float, high: float, integer: bool) -> tuple[float, ...]:
    """Strictly increasing candidates spanning ``[low, high]``.

    A small integer range uses every integer; otherwise ``QUANTILE_CANDIDATES`` evenly spaced
    points (both bounds included). Candidates depend on declared bounds only, never on data.
    """
    if high <= low:
        return (float(low),)
    if integer and high - low + 1 <= QUANTILE_CANDIDATES:
        return tuple(float(v) for v in range(int(low), int(high) + 1))
    n = QUANTILE_CANDIDATES
    points = [low + (high - low) * i / (n - 1) for i in range(n)]
    points[-1] = high
    out: list[float] = []
    for p in points:
        if not out or p > out[-1]:
            out.append(float(p))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def threshold_for_delta(scale: float, d_in: tuple[int, int, int], delta: float) -> int:
    """The smallest integer threshold whose privacy map reports a delta at most ``delta``.

    Exponential search then bisection on OpenDP's own map, so the delta charged is exactly what
    OpenDP computes for the chosen threshold.
    """

    def delta_at(threshold: int) -> float:
        return float(threshold_builder(threshold)(scale).map(d_in)[1])

    high = max(1, d_in[2])
    while delta_at(high) > delta:
        high *= 2
        if high > 2**62:
            raise EnclaveError("no partition-selection threshold meets the delta target")
    low = 0
    while high - low > 1:  # invariant: delta_at(high) <= delta, low fails (or is 0)
        mid = (low + high) // 2
        if delta_at(mid) <= delta:
            high = mid
        else:
            low = mid
    return high
