"""Quantiles released from a histogram in time independent of the number of rows.

OpenDP's ``make_private_quantile`` is, by its own definition, the chain
``make_quantile_score_candidates >> make_noisy_max(scale * alpha_den, negate=True)`` followed
by ``candidates[index]``. The scoring step reads every row, so releasing through it costs time
in proportion to the rows (76 ms for 1M rows against 0.6 ms for none, measured), and that time
is observable. Here the same scores are computed from the group's histogram (``{value:
count}``, at most a few entries per candidate gap, see ``query/compile.py``) and handed to the
same OpenDP noisy-max measurement, so the release costs ``O(candidates)`` whatever the rows.

Exactness, checked when a ``QuantileRelease`` is built (once per candidates, alpha and scale;
cached) and in ``tests/dp/test_quantile.py``:

- the privacy map of ``make_quantile_score_candidates >> make_noisy_max`` at ``d_in`` equals
  the map of ``make_private_quantile`` at the same scale, which is what pricing charges;
- the scores computed here equal OpenDP's own scores on a probe vector that puts values on,
  between, below and above the candidates (so the ``alpha`` fraction and the size limit are
  OpenDP's own: ``score_candidates_constants`` with an unknown dataset size).

Score of candidate ``c`` (OpenDP's ``score_candidates``): with ``lt = #(x < c)`` and
``gt = #(x > c)``, each capped at ``size_limit``, ``|(den - num) * lt - num * gt|``; the
lowest score is the best. Python integers keep every step exact.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate
from typing import Any

import numpy as np
import opendp.prelude as dp

from enclave.dp.calibrate import enable_dp
from enclave.errors import EnclaveError

U64_MAX = 2**64 - 1
APPROX_DENOMINATOR = 10_000  # OpenDP's alpha granularity when the dataset size is unknown
MAX_BIN = 2**62  # a bin count above this (never seen in practice) is held at it


def score_constants(alpha: float) -> tuple[int, int, int]:
    """``(alpha_num, alpha_den, size_limit)`` as OpenDP's ``score_candidates_constants``."""
    exact = Fraction(alpha)
    if exact.denominator < APPROX_DENOMINATOR:
        num, den = exact.numerator, exact.denominator
    else:  # OpenDP floors the float product (0.043 * 10000 = 429.99...: 429, not 430)
        num, den = math.floor(alpha * APPROX_DENOMINATOR), APPROX_DENOMINATOR
    return num, den, U64_MAX // den


def histogram_arrays(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values (float64) and their counts (int64) from a ``{value: count}``
    histogram, in vector operations.

    Total: NULL and NaN values are dropped (a fixed per-value rule, like NULL), negative or
    missing counts count as 0, and entries whose value converts to the same float are merged.
    A plain sequence of values is accepted too (each counts once).
    """
    if isinstance(values, Mapping):
        try:
            keys = np.fromiter(values.keys(), dtype=np.float64, count=len(values))
            counts = np.fromiter(values.values(), dtype=np.int64, count=len(values))
        except (TypeError, ValueError, ArithmeticError):
            keys, counts = _checked(values.items())
    else:
        keys, counts = _checked((v, 1) for v in values or ())
    keep = ~np.isnan(keys)
    keys, counts = keys[keep], np.maximum(counts[keep], 0)
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    if len(keys) == 0:
        return keys, counts
    distinct, first = np.unique(keys, return_index=True)
    return distinct, np.add.reduceat(counts, first)


def _checked(items: Any) -> tuple[np.ndarray, np.ndarray]:
    """The entries one by one: a value or count that is not a number drops its entry."""
    keys: list[float] = []
    counts: list[int] = []
    for value, count in items:
        try:
            x, n = float(value), int(count or 0)
        except (TypeError, ValueError, ArithmeticError):
            continue
        keys.append(x)
        counts.append(min(max(n, 0), MAX_BIN))
    return np.asarray(keys, dtype=np.float64), np.asarray(counts, dtype=np.int64)


@dataclass(frozen=True)
class QuantileRelease:
    """One quantile's release: histogram scores into OpenDP's noisy max (see module doc)."""

    candidates: np.ndarray  # float64, strictly increasing
    alpha_num: int
    alpha_den: int
    size_limit: int
    select: Any  # OpenDP make_noisy_max over the score vector (lowest score wins)

    def scores(self, values: Any) -> np.ndarray:
        """OpenDP's candidate scores for the histogram (or values) ``values``."""
        keys, counts = histogram_arrays(values)
        lt_at = np.searchsorted(keys, self.candidates, side="left")
        le_at = np.searchsorted(keys, self.candidates, side="right")
        if float(counts.sum(dtype=np.float64)) >= 2.0**62:  # int64 sums could overflow
            return self._exact_scores(counts.tolist(), lt_at.tolist(), le_at.tolist())
        below = np.concatenate(([0], np.cumsum(counts))).astype(np.uint64)
        limit = np.uint64(self.size_limit)
        lt = np.minimum(below[lt_at], limit)
        gt = np.minimum(below[-1] - below[le_at], limit)
        a = np.uint64(self.alpha_den - self.alpha_num) * lt  # <= den * limit < 2^64
        b = np.uint64(self.alpha_num) * gt
        out: np.ndarray = np.where(a >= b, a - b, b - a).astype(np.uint64)
        return out

    def _exact_scores(self, counts: list[int], lt_at: list[int], le_at: list[int]) -> np.ndarray:
        """The same scores in Python integers (for counts too large for int64 sums)."""
        below = [0, *accumulate(counts)]
        lim, num, rest = self.size_limit, self.alpha_num, self.alpha_den - self.alpha_num
        out = [
            abs(rest * min(below[lt], lim) - num * min(below[-1] - below[le], lim))
            for lt, le in zip(lt_at, le_at, strict=True)
        ]
        return np.asarray(out, dtype=np.uint64)

    def __call__(self, values: Any) -> float:
        index = int(self.select(self.scores(values)))
        return float(self.candidates[index])


@functools.lru_cache(maxsize=256)
def quantile_release(
    candidates: tuple[float, ...], alpha: float, scale: float, d_in: int
) -> QuantileRelease:
    """The release for ``make_private_quantile(candidates, alpha, scale)``, checked exact."""
    enable_dp()
    num, den, limit = score_constants(alpha)
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    score = dp.t.make_quantile_score_candidates(
        domain, dp.symmetric_distance(), list(candidates), alpha
    )
    select = dp.m.make_noisy_max(
        score.output_domain, score.output_metric, dp.max_divergence(), scale * den, negate=True
    )
    charged: Any = dp.m.make_private_quantile(
        domain, dp.symmetric_distance(), dp.max_divergence(), list(candidates), alpha, scale
    )
    out = QuantileRelease(np.asarray(candidates, dtype=np.float64), num, den, limit, select)
    chain: Any = score >> select
    if chain.map(d_in) != charged.map(d_in):
        raise EnclaveError("quantile release does not match its charged map")
    probe = _probe(candidates)
    if [int(s) for s in score(probe)] != out.scores(probe).tolist():
        raise EnclaveError("quantile scores do not match OpenDP's")
    return out


def _probe(candidates: Sequence[float]) -> list[float]:
    """Values on, between, below and above the candidates, with uneven multiplicities."""
    c = list(candidates)
    mids = [(a + b) / 2 for a, b in zip(c, c[1:], strict=False)]
    low, high = c[0] - 1.0, c[-1] + 1.0
    return [*c, *c[::3], *mids, *mids[::2], low, low, high, high, high]
