"""Quantiles from histogram counts: OpenDP's scores and map, in time independent of rows."""

from __future__ import annotations

import random
from typing import Any

import opendp.prelude as dp
import pytest

from enclave.dp.calibrate import quantile_builder
from enclave.dp.mechanisms import enable_dp
from enclave.dp.quantile import histogram_arrays, quantile_release, score_constants
from enclave.query.stats import candidate_grid

ALPHAS = [0.5, 0.1, 0.9, 0.25, 0.75, 0.333, 0.01, 0.99, 1e-9]


def opendp_scores(cands: tuple[float, ...], alpha: float, values: list[float]) -> list[int]:
    enable_dp()
    score = dp.t.make_quantile_score_candidates(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.symmetric_distance(),
        list(cands),
        alpha,
    )
    return [int(s) for s in score(values)]


def histogram(values: list[float]) -> dict[float, int]:
    out: dict[float, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("integer", [True, False])
def test_histogram_scores_are_opendp_scores(alpha: float, integer: bool) -> None:
    rng = random.Random(f"{alpha}-{integer}")
    cands = candidate_grid(0.0, 100.0 if integer else 50000.0, integer)
    rel = quantile_release(cands, alpha, 2.0, 5)
    for _ in range(5):
        n = rng.randrange(0, 3000)
        values = [
            rng.choice(cands) if rng.random() < 0.3 else rng.uniform(cands[0] - 5, cands[-1] + 5)
            for _ in range(n)
        ]
        assert rel.scores(histogram(values)).tolist() == opendp_scores(cands, alpha, values)
        assert rel.scores(values).tolist() == opendp_scores(cands, alpha, values)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("scale", [0.5, 3.0, 1234.5])
def test_release_map_is_make_private_quantile_map_exactly(alpha: float, scale: float) -> None:
    cands = candidate_grid(0.0, 110.0, True)
    rel = quantile_release(cands, alpha, scale, 5)  # raises if the maps differ
    charged = quantile_builder(cands, alpha)(scale)
    num, den, _ = rel.alpha_num, rel.alpha_den, rel.size_limit
    assert (num, den) == score_constants(alpha)[:2]
    for d in (1, 5, 17):
        d_mid = d * max(num, den - num)  # OpenDP's score sensitivity, unknown size
        assert rel.select.map(d_mid) == charged.map(d)


def test_release_cost_does_not_depend_on_rows() -> None:
    """2^50 rows in one bin: nothing is expanded (the old release allocated every row)."""
    cands = candidate_grid(0.0, 100.0, False)
    rel = quantile_release(cands, 0.5, 1e-6, 5)  # almost no noise
    hist = {10.0: 2**50, 90.0: 2**50 + 2, 95.5: 1}
    keys, counts = histogram_arrays(hist)
    assert counts.tolist() == [2**50, 2**50 + 2, 1] and keys.tolist() == [10.0, 90.0, 95.5]
    got = rel(hist)
    assert got in cands and 10.0 <= got <= 90.0
    assert rel({}) in cands  # no rows: still a candidate, same work


@pytest.mark.parametrize(
    "hostile",
    [
        {float("nan"): 5, 3.0: 2},
        {None: 5, 3.0: 2},
        {3.0: -7, 4.0: None},
        {"junk": 3, 3.0: 2},
        {float("inf"): 2, float("-inf"): 1},
        [float("nan"), None, 2.0],
    ],
)
def test_histogram_arrays_are_total(hostile: Any) -> None:
    rel = quantile_release(candidate_grid(0.0, 10.0, True), 0.5, 1.0, 1)
    assert rel(hostile) in rel.candidates.tolist()


def test_vector_and_exact_integer_scores_agree() -> None:
    cands = candidate_grid(0.0, 100.0, False)
    rel = quantile_release(cands, 0.3, 2.0, 5)
    rng = random.Random(3)
    hist = {rng.uniform(-5, 105): rng.randrange(0, 10**9) for _ in range(800)}
    keys, counts = histogram_arrays(hist)
    lt = keys.searchsorted(rel.candidates, side="left").tolist()
    le = keys.searchsorted(rel.candidates, side="right").tolist()
    exact = rel._exact_scores(counts.tolist(), lt, le)
    assert rel.scores(hist).tolist() == exact.tolist()
    huge = {1.0: 2**61, 2.0: 2**61, 3.0: 5}  # sums past int64: the exact path, still a release
    assert rel(huge) in cands


def test_score_constants_are_opendps_for_every_level() -> None:
    """Every level from 0.001 to 0.999 and random ones: OpenDP's own (alpha_num, alpha_den),
    read back from its scores of one value between two candidates (levels such as 0.043, whose
    float product with 10000 falls just below a whole number, once answered 500)."""
    rng = random.Random(7)
    levels = [i / 1000 for i in range(1, 1000)] + [rng.random() for _ in range(200)]
    for alpha in levels:
        below, above = opendp_scores((0.0, 1.0), alpha, [0.5])  # num, then den - num
        assert score_constants(alpha)[:2] == (below, below + above), alpha
