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
"""

from __future__ import annotations

import functools

import opendp.prelude as dp


@functools.lru_cache(maxsize=1024)  # public inputs only; one OpenDP call per scale, not group
def noise_accuracy(scale: float, integer: bool, alpha: float) -> float:
    """Half-width of a ``1 - alpha`` interval for Laplace noise of ``scale``."""
    if integer:
        return float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha))
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
