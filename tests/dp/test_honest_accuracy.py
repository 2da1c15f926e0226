"""Honest accuracy: quantiles state their grid and a rank guarantee from public parameters,
and that guarantee holds on the real release path (docs/researcher.md, "Accuracy")."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.dp import calibrate as cal
from enclave.dp.accuracy import bounding_note, noise_accuracy, quantile_accuracy
from enclave.dp.mechanisms import price_plan
from enclave.dp.quantile import quantile_release
from enclave.query.parse import parse_query
from enclave.query.stats import QUANTILE_CANDIDATES, candidate_grid
from tests.dp.test_mechanisms import make_tier
from tests.query.test_parse import SPEC

TIER = make_tier()


def test_quantile_accuracy_from_public_parameters() -> None:
    plan = parse_query(
        "SELECT MEDIAN(age) AS m, MEDIAN(cost) AS c, COUNT(*) AS n FROM visits", SPEC
    )
    priced = price_plan(plan, SPEC, TIER, Decimal("0.9"), None)
    age, cost, n = priced.accuracy["m"], priced.accuracy["c"], priced.accuracy["n"]
    assert age["ci95"] is None and cost["ci95"] is None and n["ci95"] is not None
    assert age["resolution"] == 1.0 and age["candidates"] == 111  # every integer in [0, 110]
    assert cost["candidates"] == QUANTILE_CANDIDATES
    assert math.isclose(cost["resolution"] or 0, 50000 / (QUANTILE_CANDIDATES - 1))
    (m_scale,) = [p.scale for p in priced.aggregates if p.alias == "m"]
    assert age["rank_error95"] == m_scale * math.log(111 / 0.05)
    smaller = price_plan(plan, SPEC, TIER, Decimal("0.3"), None).accuracy["m"]
    assert (smaller["rank_error95"] or 0) > (age["rank_error95"] or 0)  # less epsilon: wider


def test_rank_guarantee_holds_on_the_release_path() -> None:
    """The stated bound covers at least 95% of real releases, and is not loose by 10x."""
    cal.enable_dp()
    cands = candidate_grid(0.0, 110.0, True)
    _, scale, _ = cal.calibrate(cal.quantile_builder(cands, 0.5), 5, 0.05)
    release = quantile_release(cands, 0.5, scale, 5)
    bound = quantile_accuracy(cands, scale)["rank_error95"] or 0.0
    values = np.random.default_rng(1).integers(0, 111, size=3000)
    histogram = {
        float(v): int(c) for v, c in zip(*np.unique(values, return_counts=True), strict=True)
    }
    scores = release.scores(histogram).astype(float) / release.alpha_den  # in rows
    gaps = np.array([scores[cands.index(release(histogram))] for _ in range(300)]) - scores.min()
    assert np.mean(gaps <= bound) >= 0.95
    assert np.mean(gaps <= bound / 10) < 0.95


def test_bounding_note_names_the_unit_and_k() -> None:
    note = bounding_note(SPEC)
    assert note["privacy_unit"] == SPEC.privacy_unit
    assert note["max_rows_per_unit"] == SPEC.max_rows_per_unit
    assert note["counts"] == "bounded rows"
    assert f"at most {SPEC.max_rows_per_unit} of its rows" in note["statement"]


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=1e-9, max_value=1e6),
    st.floats(min_value=1e-9, max_value=1e6),
    st.booleans(),
    st.sampled_from([0.025, 0.05]),
)
def test_noise_accuracy_is_finite_and_grows_with_the_scale(
    a: float, b: float, integer: bool, alpha: float
) -> None:
    """Every stated half-width is a JSON number: finite, at least 0, and no smaller at a larger
    scale (OpenDP's discrete helper overflows to -inf below a scale of about 0.002)."""
    low, high = sorted((a, b))
    w_low, w_high = noise_accuracy(low, integer, alpha), noise_accuracy(high, integer, alpha)
    assert math.isfinite(w_low) and math.isfinite(w_high)
    assert 0.0 <= w_low <= w_high


def test_a_tiny_integer_scale_states_zero() -> None:
    assert noise_accuracy(1e-4, True, 0.05) == 0.0  # the noise is 0 with probability > 95%
    assert noise_accuracy(0.1, True, 0.05) > 0.0
