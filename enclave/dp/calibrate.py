"""OpenDP measurement builders and scale calibration, shared by pricing and release.

Every measurement is built from ``dp.m`` directly with an explicit scale (never ``dp.Context``,
whose scale search costs seconds per query). A scale is calibrated so that OpenDP's own privacy
map, evaluated at the declared sensitivity, never exceeds the epsilon share it must fit: build
at a reference scale, take the ratio (every map used here is ``d_in / scale`` times a
constant), rebuild, and nudge the scale up while float rounding makes the map exceed the share.

Caching (the hot path; every input here is public: bounds, ``k``, epsilon shares, never data):

- A ``Builder`` is a frozen value (mechanism kind and its public parameters), so it can key a
  cache. The map at the reference scale is kept per ``(builder, d_in)``: a calibration is then
  one build and one map, and the map of the measurement actually returned is always evaluated
  (the answer never rests on a cached ratio alone).
- Whole calibrations are kept per ``(builder, d_in, target)``: repeats of an epsilon share (the
  tier's default epsilon, say) cost no OpenDP call at all. A measurement can be shared: OpenDP
  samples noise when it is *invoked*, so one measurement serves any number of releases, each
  with fresh noise (``tests/dp/test_mechanisms.py`` checks this).
- Caches are bounded LRUs (``functools.lru_cache``, thread-safe); ``d_in`` is keyed with its
  type, so ``5`` and ``5.0`` never share an entry.

``calibrate`` still accepts any callable ``scale -> measurement``; only ``Builder`` values are
cached.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Context, Decimal, localcontext
from typing import Any, Literal

import opendp.prelude as dp

from enclave.errors import EnclaveError

_enabled = False

REFERENCE_SCALE = 1.0
CALIBRATION_CACHE_SIZE = 1024  # entries; each holds one OpenDP measurement (a few hundred bytes)

#: Sums and products of floats' exact values (the default context keeps 28 digits and rounds
#: half-even, which can round a sum *down* so that it "fits"): 2000 digits hold any few doubles
#: exactly, and should one ever need rounding it rounds up, toward refusing.
UPWARD = Context(prec=2000, rounding=ROUND_CEILING)

Build = Callable[[float], Any]
Kind = Literal["count", "float", "quantile", "threshold"]


def enable_dp() -> None:
    """Enable OpenDP's ``contrib`` features (idempotent; called once at start-up)."""
    global _enabled
    if not _enabled:
        dp.enable_features("contrib")
        _enabled = True


@dataclass(frozen=True)
class Builder:
    """A measurement family with its public parameters; ``builder(scale)`` builds one.

    Hashable, so calibrations can be cached per builder. ``space`` names what decides the
    input domain, metric and output measure (not the candidates, alpha or threshold).
    """

    kind: Kind
    int_type: str = "i64"
    candidates: tuple[float, ...] = ()
    alpha: float = 0.0
    threshold: int = 0

    @property
    def space(self) -> tuple[str, str]:
        return (self.kind, self.int_type if self.kind == "count" else "")

    def __call__(self, scale: float) -> Any:
        enable_dp()
        domain, metric = _space_objects(self.space)
        if self.kind in ("count", "float"):  # vector (discrete) Laplace over counts / sums (l1)
            return dp.m.make_laplace(domain, metric, scale=scale)
        if self.kind == "quantile":  # exponential-mechanism scoring over one group's values
            return dp.m.make_private_quantile(
                domain,
                metric,
                dp.max_divergence(),
                candidates=list(self.candidates),
                alpha=self.alpha,
                scale=scale,
            )
        # partition selection over a map of string keys to i64 counts
        return dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=self.threshold)


@functools.lru_cache(maxsize=16)
def _space_objects(space: tuple[str, str]) -> tuple[Any, Any]:
    """The OpenDP input domain and metric of a builder's space, built once per process.

    Building them costs more than the measurement itself (each is several FFI calls), and
    OpenDP only reads them: ``make_*`` copies what it needs, so one object serves every build.
    """
    enable_dp()
    kind, int_type = space
    if kind == "count":  # discrete Laplace over integer counts: integer outputs
        return dp.vector_domain(dp.atom_domain(T=int_type)), dp.l1_distance(T=int_type)
    if kind == "float":  # Laplace over float sums (exact, 2^-1074 grid)
        return dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float)
    if kind == "quantile":
        return dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance()
    return (
        dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64")),
        dp.l01inf_distance(dp.absolute_distance(T="i64")),
    )


def count_builder(int_type: str = "i64") -> Builder:
    """Vector discrete Laplace over integer counts (l1 distance): integer outputs."""
    return Builder("count", int_type=int_type)


def float_builder() -> Builder:
    """Vector Laplace over float sums (OpenDP samples it exactly on a 2^-1074 grid)."""
    return Builder("float")


def quantile_builder(candidates: Sequence[float], alpha: float) -> Builder:
    """OpenDP's private quantile (exponential-mechanism scoring) over one group's values."""
    return Builder("quantile", candidates=tuple(float(c) for c in candidates), alpha=float(alpha))


def threshold_builder(threshold: int) -> Builder:
    """Laplace threshold (partition selection) over a map of string keys to i64 counts."""
    return Builder("threshold", threshold=int(threshold))


def epsilon_of(distance: Any) -> float:
    """The epsilon of a privacy map's answer: a float (pure DP) or an (epsilon, delta) pair."""
    if isinstance(distance, tuple):
        return float(distance[0])
    return float(distance)


def calibrate(build: Build, d_in: Any, target: float) -> tuple[Any, float, float]:
    """Return ``(measurement, scale, epsilon)`` with ``measurement.map(d_in) <= target``."""
    if not target > 0 or not math.isfinite(target):
        raise EnclaveError("epsilon share must be positive and finite")
    if isinstance(build, Builder):
        return _calibrated(build, _typed(d_in), target)
    return _calibrate(build, d_in, epsilon_of(build(REFERENCE_SCALE).map(d_in)), target)


def _typed(d_in: Any) -> tuple[Any, ...]:
    """``d_in`` with the type of every part, as a cache key (``5`` and ``5.0`` differ)."""
    parts = d_in if isinstance(d_in, tuple) else (d_in,)
    return (isinstance(d_in, tuple), *((type(p).__name__, p) for p in parts))


def _untyped(key: tuple[Any, ...]) -> Any:
    parts = tuple(p for _, p in key[1:])
    return parts if key[0] else parts[0]


@functools.lru_cache(maxsize=CALIBRATION_CACHE_SIZE)
def _calibrated(build: Builder, d_key: tuple[Any, ...], target: float) -> tuple[Any, float, float]:
    return _calibrate(build, _untyped(d_key), _reference_epsilon(build, d_key), target)


@functools.lru_cache(maxsize=CALIBRATION_CACHE_SIZE)
def _reference_epsilon(build: Builder, d_key: tuple[Any, ...]) -> float:
    return epsilon_of(build(REFERENCE_SCALE).map(_untyped(d_key)))


def _calibrate(build: Build, d_in: Any, eps_ref: float, target: float) -> tuple[Any, float, float]:
    if eps_ref == 0.0:  # zero sensitivity (bounds [0, 0]): any scale is free
        meas = build(REFERENCE_SCALE)
        return meas, REFERENCE_SCALE, 0.0
    # one ulp up: the map (``d_in / scale``, rounded up by OpenDP) then fits on the first
    # build in practice, instead of half the time; the noise grows by 2^-52 relative
    scale = math.nextafter(REFERENCE_SCALE * eps_ref / target, math.inf)
    for attempt in range(200):
        meas = build(scale)
        eps = epsilon_of(meas.map(d_in))
        if eps <= target:
            return meas, scale, eps
        scale = math.nextafter(scale, math.inf) * (1.0 + 2.0 ** min(-52 + attempt, -4))
    raise EnclaveError("could not calibrate a noise scale")  # pragma: no cover


def space_of(build: Builder) -> str:
    """OpenDP's own text of the input domain, metric and output measure of ``build``.

    Cached per ``Builder.space``: the candidates, alpha and threshold do not change them.
    """
    return _space_text(build.space)


@functools.lru_cache(maxsize=64)
def _space_text(space: tuple[str, str]) -> str:
    kind, int_type = space
    example = {
        "count": Builder("count", int_type=int_type),
        "float": Builder("float"),
        "quantile": Builder("quantile", candidates=(0.0, 1.0), alpha=0.5),
        "threshold": Builder("threshold", threshold=1),
    }[kind]
    meas = example(REFERENCE_SCALE)
    return f"{meas.input_domain}|{meas.input_metric}|{meas.output_measure}"


def largest_float_at_most(value: Decimal) -> float:
    """The largest float whose exact value does not exceed ``value``."""
    out = float(value)
    while Decimal(out) > value:
        out = math.nextafter(out, -math.inf)
    return out


def even_share(budget: Decimal, parts: int) -> float:
    """A float share with ``parts * share <= budget`` exactly (checked in Decimal)."""
    share = largest_float_at_most(budget / parts)
    with localcontext(UPWARD):
        while Decimal(share) * parts > budget:
            share = math.nextafter(share, 0.0)
    return share


def decimal_sum(values: Iterable[float]) -> Decimal:
    """The exact sum of floats' exact values (rounded up, were it ever inexact)."""
    total = Decimal(0)
    with localcontext(UPWARD):
        for value in values:
            total += Decimal(value)
    return total


@functools.lru_cache(maxsize=256)
def release_delta(scale: float, d_in: tuple[int, int, int], threshold: int) -> float:
    """The delta of releasing a key whose noisy count is at least ``threshold``.

    OpenDP's Laplace threshold measurement keeps a key when its noisy count is ``>=
    threshold``, but its privacy map adds up the noise tail strictly above ``threshold -
    linf`` (opendp/opendp#2922): it leaves out the mass at exactly the threshold, so it
    under-states delta by a factor ``e^(1/scale)`` for a lone key. The tail that releasing at
    ``>= threshold`` really has, ``P[Z >= threshold - linf]``, is the tail OpenDP's map sums
    for ``threshold - 1``; that map is this delta (``1 - (1 - tail)^l0`` over ``l0`` keys).
    """
    if threshold - 1 < d_in[2]:
        raise EnclaveError("a partition threshold must exceed the per-key sensitivity")
    return float(threshold_builder(threshold - 1)(scale).map(d_in)[1])


@functools.lru_cache(maxsize=256)
def threshold_for_delta(scale: float, d_in: tuple[int, int, int], delta: float) -> int:
    """The smallest threshold whose true delta (``release_delta``) is at most ``delta``.

    A key is released at noisy count ``>=`` this threshold. Exponential search then bisection
    on OpenDP's own map (of the threshold one below), so the delta charged is exactly what
    OpenDP computes for the tail the release really has.
    """
    floor = max(0, d_in[2])  # thresholds up to here are invalid (release_delta refuses them)
    high = floor + 1
    while release_delta(scale, d_in, high) > delta:
        high = floor + 2 * (high - floor)
        if high > 2**62:
            raise EnclaveError("no partition-selection threshold meets the delta target")
    low = floor
    while high - low > 1:  # invariant: release_delta(high) <= delta; low fails or is invalid
        mid = (low + high) // 2
        if release_delta(scale, d_in, mid) <= delta:
            high = mid
        else:
            low = mid
    return high
