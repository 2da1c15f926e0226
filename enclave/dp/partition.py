"""Partition selection over a vector of counts: OpenDP's Laplace threshold, vectorised.

OpenDP's ``make_laplace_threshold`` adds discrete Laplace noise to every count of a map and
keeps the keys whose noisy count is ``>= threshold``. Handing it a Python ``dict`` costs as much
again as the noise itself in conversion, per key (measured: about half of its time for 17k
keys), and the time spent per key found in the data is observable. Here the same noise comes
from OpenDP's vector ``make_laplace`` over an ``int64`` array (converted without a Python loop),
at the same scale, and the threshold is one vector comparison: the same algorithm, so the same
output distribution. Pricing charges the threshold measurement's map one below the released
threshold (``calibrate.release_delta``), and checks that both measurements' epsilons agree at
this scale (``ThresholdRelease.check``).

What is left in proportion to the number of keys is OpenDP's sampling of one noise value per
key (see ``bench/timing.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from enclave.dp.calibrate import count_builder, enable_dp, threshold_builder
from enclave.errors import EnclaveError

I64_MIN, I64_MAX = -(2**63), 2**63 - 1  # the domain of every integer measurement


def to_i64(value: Any) -> int:
    """An exact integer statistic clipped to the i64 domain (NULL and non-numbers: 0).

    A fixed per-group map (1-Lipschitz), so a measurement's sensitivity is unchanged.
    """
    try:
        n = int(value or 0)
    except (TypeError, ValueError, ArithmeticError):
        return 0
    return min(max(n, I64_MIN), I64_MAX)


def i64_array(values: Sequence[Any]) -> np.ndarray:
    """``to_i64`` of every value as an ``int64`` array (one conversion when all are ints;
    numpy truncates a float as ``int`` does)."""
    try:
        return np.asarray(values, dtype=np.int64)  # counts: ints in range, one C loop
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        pass
    return np.fromiter((to_i64(v) for v in values), dtype=np.int64, count=len(values))


@dataclass(frozen=True)
class ThresholdRelease:
    """Noise on every count (OpenDP vector discrete Laplace), keep noisy ``>= threshold``."""

    noise: Any  # dp.m.make_laplace over vector<i64>, l1 distance, at the selection's scale
    threshold: int

    def __call__(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the released counts and their noisy values."""
        if len(counts) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        noisy = np.asarray(self.noise(counts), dtype=np.int64)
        kept = np.flatnonzero(noisy >= self.threshold)
        return kept, noisy[kept]

    def check(self, charged: Any, k: int) -> None:
        """Same scale as ``charged`` (the threshold measurement priced): equal epsilons."""
        if float(self.noise.map(k)) != float(charged.map((k, k, k))[0]):
            raise EnclaveError("partition release does not match its charged measurement")


@functools.lru_cache(maxsize=256)
def threshold_release(scale: float, threshold: int, k: int) -> ThresholdRelease:
    """The release for a threshold of ``threshold`` at ``scale``, checked against pricing."""
    enable_dp()
    out = ThresholdRelease(count_builder()(scale), threshold)
    out.check(threshold_builder(threshold)(scale), k)
    return out
