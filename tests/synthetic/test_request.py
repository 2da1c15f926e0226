"""Synthetic requests and binning: from the body and the public schema only."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from enclave.errors import BadRequest, PolicyFileError, TierRefused
from enclave.models import ColumnSpec, DatasetSpec, Tier
from enclave.policy.files import tier_from_dict, tier_to_dict
from enclave.synthetic.mst import SynthColumn, _keyed, numeric_column
from enclave.synthetic.request import SyntheticRequest, check_tier, synth_columns

SPEC = DatasetSpec(
    name="visits",
    description="",
    source="",
    source_path="",
    privacy_unit="person_id",
    max_rows_per_unit=5,
    min_tier=("open",),
    allowed_jurisdictions=None,
    columns=(
        ColumnSpec("person_id", "identifier"),
        ColumnSpec("age", "int", bounds=(0, 110)),
        ColumnSpec("cost", "float", bounds=(0.0, 50000.0)),
        ColumnSpec("region", "category", values=("north", "south")),
        ColumnSpec("code", "category"),
    ),
)


def _req(**over: Any) -> SyntheticRequest:
    body: dict[str, Any] = {"dataset": "visits", "columns": ["age", "region"], "epsilon": 0.5}
    body["rows"] = 100
    body.update(over)
    return SyntheticRequest.from_json(body)


def test_a_body_is_checked_whole() -> None:
    req = _req(epsilon=0.1234567, bins=4)
    assert req.epsilon == Decimal("0.123457") and req.bins == 4  # rounded up to the grid
    with pytest.raises(BadRequest) as err:
        SyntheticRequest.from_json(
            {"dataset": "", "columns": ["a", "A"], "rows": 10**7, "bins": 1, "colour": 1}
        )
    text = err.value.detail
    for part in ("unknown field(s): colour", "'dataset' must be", "names a column twice",
                 "'epsilon' is required", "'rows' must be", "'bins' must be"):  # fmt: skip
        assert part in text
    assert _req().cache_key(SPEC) == _req(columns=["AGE", "Region"]).cache_key(SPEC)
    assert _req().cache_key(SPEC) != _req(rows=101).cache_key(SPEC)


def test_columns_come_from_the_public_schema() -> None:
    cols = synth_columns(SPEC, _req(columns=["Age", "region", "cost"], bins=5))
    assert [c.name for c in cols] == ["age", "region", "cost"]
    assert cols[1].keys == ("north", "south")
    with pytest.raises(BadRequest) as err:
        synth_columns(SPEC, _req(columns=["agee", "person_id", "code"]))
    assert "unknown column 'agee'; did you mean age?" in err.value.detail
    assert "person_id: identifier columns cannot be released" in err.value.detail
    assert "code: a category needs declared values" in err.value.detail


def test_bins_follow_the_declared_bounds_only() -> None:
    age = numeric_column("age", "int", 0, 110, 10)
    assert age.edges[0] == 0 and age.edges[-1] == 111 and len(age.keys) == 10
    assert age.keys[0] == "0..10" and age.keys[-1] == "99..110"
    tiny = numeric_column("flag", "int", 0, 2, 10)  # never more bins than whole numbers
    assert tiny.keys == ("0..0", "1..1", "2..2")
    cost = numeric_column("cost", "float", 0, 100, 4)
    assert cost.edges == (0.0, 25.0, 50.0, 75.0, 100.0)
    assert cost.keys == ("[0, 25)", "[25, 50)", "[50, 75)", "[75, 100]")
    frame = pl.DataFrame(
        {"age#clamped": [0, 10, 11, 110, None], "cost#clamped": [0.0, 24.9, 25.0, 100.0, None]}
    )
    got = frame.select(_keyed(pl, age).alias("a"), _keyed(pl, cost).alias("c"))
    assert got["a"].to_list() == ["0..10", "0..10", "11..21", "99..110", None]
    assert got["c"].to_list() == ["[0, 25)", "[0, 25)", "[25, 50)", "[75, 100]", None]
    region = SynthColumn("region", "category", ("north",))
    assert frame.with_columns(region=pl.lit("x")).select(_keyed(pl, region))["region"][0] == "x"


def test_the_tier_allows_and_caps() -> None:
    base = dict(name="t", description="", aggregates=frozenset({"count"}))
    money = dict(
        max_epsilon_per_query=Decimal(1), budget_epsilon=Decimal(5), budget_delta=Decimal(0)
    )
    off = Tier(**base, **money)  # type: ignore[arg-type]
    with pytest.raises(TierRefused, match="does not allow"):
        check_tier(off, Decimal("0.5"))
    on = Tier(**base, **money, synthetic_allowed=True, synthetic_max_epsilon=Decimal(2))  # type: ignore[arg-type]
    check_tier(on, Decimal(2))
    with pytest.raises(TierRefused, match="cap 2"):
        check_tier(on, Decimal("2.000001"))


def test_tier_files_validate_the_synthetic_fields() -> None:
    body: dict[str, Any] = {
        "name": "t",
        "aggregates": ["count"],
        "max_epsilon_per_query": 1.0,
        "budget": {"epsilon": 5.0},
    }
    assert tier_from_dict(body).synthetic_allowed is False
    tier = tier_from_dict({**body, "synthetic": {"allowed": True, "max_epsilon": 2.0}})
    assert (tier.synthetic_allowed, tier.synthetic_max_epsilon) == (True, Decimal(2))
    assert tier_from_dict(tier_to_dict(tier)) == tier  # the JSON form reads back
    assert tier_from_dict(tier_to_dict(tier_from_dict(body))).synthetic_allowed is False
    with pytest.raises(PolicyFileError) as err:
        tier_from_dict({**body, "synthetic": {"allowed": True, "cap": 1}})
    assert "synthetic.max_epsilon: required" in str(err.value)
    assert "cap" in str(err.value)
    with pytest.raises(PolicyFileError, match="synthetic.max_epsilon"):
        tier_from_dict({**body, "synthetic": {"allowed": True, "max_epsilon": 0}})
    with pytest.raises(PolicyFileError, match="synthetic.allowed"):
        tier_from_dict({**body, "synthetic": {"allowed": "yes", "max_epsilon": 1.0}})
