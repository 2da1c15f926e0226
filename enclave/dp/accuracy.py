"""Noise-only intervals computed after release, from noisy values and public scales.

Priced aggregates get ``ci95`` straight from OpenDP's accuracy helpers (a function of the scale
alone). An AVG is a ratio of two noisy values, so its interval depends on the released values;
computing it from them (and the public scales and bounds) is post-processing.

AVG formula, per released group: with ``a_s`` and ``a_c`` the half-widths at level 97.5% of
the sum's and the count's noise (OpenDP's ``*_scale_to_accuracy(scale, 0.025)``), the exact sum
and count lie in ``[S - a_s, S + a_s] x [C - a_c, C + a_c]`` with probability >= 95% (union
bound). If ``C - a_c >= 1`` the exact mean lies between the smallest and largest ratio at the
rectangle's corners; intersected with the declared bounds ``[L, U]``, the half-width is the
larger distance from the released value to either end. Otherwise the interval is uninformative
and the half-width is ``U - L``. The reported ``ci95`` is the widest over released groups.

Quantiles (``quantile_accuracy``) state their grid and a rank guarantee instead of a ``ci95``;
``bounding_note`` says that every answer is about the bounded table. Both read public
parameters only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import opendp.prelude as dp

from enclave.models import DatasetSpec

QUANTILE_BETA = 0.05  # the quantile statement holds with probability at least 1 - beta


@functools.lru_cache(maxsize=1024)  # public inputs only; one OpenDP call per scale, not group
def noise_accuracy(scale: float, integer: bool, alpha: float) -> float:
    """Half-width of a ``1 - alpha`` interval for Laplace noise of ``scale``. At a tiny
    integer scale (below about 0.002: an epsilon in the thousands) OpenDP's closed form
    overflows to -inf; the noise is then 0 with probability above ``1 - alpha``, so the
    half-width, floored as OpenDP allows, is 0."""
    if integer:
        width = float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha))
        return width if math.isfinite(width) and width >= 0.0 else 0.0
    return float(dp.laplacian_scale_to_accuracy(scale, alpha))


def avg_ci95(
    noisy_sum: float,
    noisy_count: int,
    sum_scale: float,
    sum_integer: bool,
    count_scale: float,
    low: float,
    high: float,
) -> float:
    """Half-width of a >= 95% noise-only interval around a released AVG (see module doc)."""
    width = high - low
    a_s = noise_accuracy(sum_scale, sum_integer, 0.025)
    a_c = noise_accuracy(count_scale, True, 0.025)
    value = min(max(float(noisy_sum) / max(noisy_count, 1), low), high)
    if noisy_count - a_c < 1:
        return width
    ratios = [
        s / c
        for s in (noisy_sum - a_s, noisy_sum + a_s)
        for c in (noisy_count - a_c, noisy_count + a_c)
    ]
    lo = min(max(min(ratios), low), high)
    hi = min(max(max(ratios), low), high)
    return min(max(value - lo, hi - value, 0.0), width)


def quantile_accuracy(candidates: Sequence[float], scale: float) -> dict[str, float | None]:
    """What a quantile release guarantees, from public parameters only.

    The released value is one of ``candidates`` (spaced ``resolution`` apart at most), chosen
    by OpenDP's noisy max over scores ``|(1 - q) * below - q * above|`` (rows of the bounded
    table below and above the candidate, in units of rows after dividing out ``alpha_den``),
    with noise of scale ``scale`` in those units. A candidate whose score exceeds the best one
    by ``g`` is chosen with probability at most ``exp(-g / scale)``, so with probability at
    least 95% the released candidate's score exceeds the best candidate's by at most
    ``rank_error95 = scale * ln(m / 0.05)`` rows (``m`` candidates). No noise interval in the
    value's own unit can be stated without the data, so ``ci95`` stays None.
    """
    steps = [b - a for a, b in zip(candidates, candidates[1:], strict=False)]
    return {
        "ci95": None,
        "resolution": max(steps) if steps else 0.0,
        "candidates": float(len(candidates)),
        "rank_error95": scale * math.log(len(candidates) / QUANTILE_BETA),
    }


def bounding_note(spec: DatasetSpec) -> dict[str, Any]:
    """The response's ``bounding``: every answer is about the bounded table, not the source."""
    k = spec.max_rows_per_unit
    unit = spec.privacy_unit
    return {
        "privacy_unit": unit,
        "max_rows_per_unit": k,
        "counts": "bounded rows",
        "statement": (
            f"Every aggregate is computed over the bounded table: each {unit} keeps at most "
            f"{k} of its rows (a fixed random choice), and values are clamped to their "
            "declared bounds. COUNT(*) counts bounded rows, which can be fewer than the "
            "source holds."
        ),
    }
