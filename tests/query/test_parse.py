"""The SQL subset → Plan: a catalogue of accepted queries with the plan each must produce,
and the exact refusal messages the contract's examples name."""

from __future__ import annotations

import datetime as dt

import pytest

from enclave.errors import UnsupportedQuery
from enclave.models import ColumnSpec, DatasetSpec
from enclave.query.parse import MAX_SQL_CHARS, PARSE_CACHE_SIZE, cached_plan, parse_query
from enclave.query.plan import (
    Aggregate,
    And,
    Between,
    Comparison,
    GroupColumn,
    InList,
    IsNull,
    Not,
    Or,
    OrderItem,
    Plan,
)


def visits_spec(**over: object) -> DatasetSpec:
    """The contract's example dataset, built in code."""
    fields: dict[str, object] = {
        "name": "visits",
        "description": "Synthetic hospital visits.",
        "source": "visits.parquet",
        "source_path": "/nonexistent/visits.parquet",
        "privacy_unit": "person_id",
        "max_rows_per_unit": 5,
        "min_tier": ("standard",),
        "allowed_jurisdictions": None,
        "columns": (
            ColumnSpec("person_id", "identifier"),
            ColumnSpec("age", "int", bounds=(0, 110)),
            ColumnSpec("sex", "category", values=("F", "M")),
            ColumnSpec("region", "category", values=("north", "south", "east", "west", "central")),
            ColumnSpec("cost", "float", bounds=(0, 50000)),
            ColumnSpec("visit_date", "date", bounds=(dt.date(2015, 1, 1), dt.date(2025, 12, 31))),
        ),
    }
    fields.update(over)
    return DatasetSpec(**fields)  # type: ignore[arg-type]


SPEC = visits_spec()
COUNT = Aggregate(kind="count", alias="count")
UNITS = Aggregate(kind="count_distinct_units", alias="count_distinct")
REGION = GroupColumn("region", "region")
SEX = GroupColumn("sex", "sex")
D2020 = dt.date(2020, 1, 1)


def plan(*select: object, **kw: object) -> Plan:
    return Plan(dataset="visits", select=select, **kw)  # type: ignore[arg-type]


ACCEPTED: list[tuple[str, Plan]] = [
    ("SELECT COUNT(*) FROM visits", plan(COUNT)),
    ("select count(*) from VISITS", plan(COUNT)),
    ('SELECT COUNT(*) FROM "Visits"', plan(COUNT)),
    ("SELECT COUNT(*) FROM visits;", plan(COUNT)),
    ("SELECT COUNT(*) FROM visits ;; ", plan(COUNT)),
    ("FROM visits SELECT COUNT(*)", plan(COUNT)),
    ("SELECT COUNT(*) -- a comment\nFROM visits /* another */", plan(COUNT)),
    ("SELECT COUNT(*) AS n FROM visits", plan(Aggregate("count", "n"))),
    ("SELECT COUNT(*) n FROM visits", plan(Aggregate("count", "n"))),
    (
        'SELECT COUNT(*) AS "Number of visits" FROM visits',
        plan(Aggregate("count", "Number of visits")),
    ),
    ("SELECT COUNT(DISTINCT person_id) FROM visits", plan(UNITS)),
    (
        'SELECT COUNT(DISTINCT "PERSON_ID") AS people FROM visits',
        plan(Aggregate("count_distinct_units", "people")),
    ),
    ("SELECT COUNT(DISTINCT (person_id)) FROM visits", plan(UNITS)),
    ("SELECT SUM(age) FROM visits", plan(Aggregate("sum", "sum_age", "age"))),
    ("SELECT SUM((cost)) AS total FROM visits", plan(Aggregate("sum", "total", "cost"))),
    ("SELECT AVG(cost) FROM visits", plan(Aggregate("avg", "avg_cost", "cost"))),
    ('SELECT AVG("Cost") FROM visits', plan(Aggregate("avg", "avg_cost", "cost"))),
    ("SELECT MEDIAN(age) FROM visits", plan(Aggregate("quantile", "median_age", "age", 0.5))),
    (
        "SELECT QUANTILE_CONT(cost, 0.9) FROM visits",
        plan(Aggregate("quantile", "quantile_cost_0.9", "cost", 0.9)),
    ),
    (
        "SELECT quantile_cont(age, .25) AS q1 FROM visits",
        plan(Aggregate("quantile", "q1", "age", 0.25)),
    ),
    (
        "SELECT COUNT(*), COUNT(*) AS n2, SUM(age), AVG(age), MEDIAN(cost) FROM visits",
        plan(
            COUNT,
            Aggregate("count", "n2"),
            Aggregate("sum", "sum_age", "age"),
            Aggregate("avg", "avg_age", "age"),
            Aggregate("quantile", "median_cost", "cost", 0.5),
        ),
    ),
    # the contract's example
    (
        "SELECT region, COUNT(*) AS n, AVG(cost) AS mean_cost FROM visits WHERE age >= 65 "
        "GROUP BY region",
        plan(
            REGION,
            Aggregate("count", "n"),
            Aggregate("avg", "mean_cost", "cost"),
            group_by=("region",),
            where=Comparison("age", ">=", 65),
        ),
    ),
    (
        "SELECT region AS r, COUNT(*) FROM visits GROUP BY region",
        plan(GroupColumn("region", "r"), COUNT, group_by=("region",)),
    ),
    (
        'SELECT "REGION", COUNT(*) FROM visits GROUP BY Region',
        plan(REGION, COUNT, group_by=("region",)),
    ),
    (
        "SELECT COUNT(*), sex, region FROM visits GROUP BY region, sex",
        plan(COUNT, SEX, REGION, group_by=("region", "sex")),
    ),
    (
        "SELECT v.region, COUNT(*) FROM visits AS v GROUP BY v.region",
        plan(REGION, COUNT, group_by=("region",)),
    ),
    (
        "SELECT visits.region, COUNT(*) FROM visits GROUP BY region",
        plan(REGION, COUNT, group_by=("region",)),
    ),
    (
        "SELECT age, COUNT(*) FROM visits GROUP BY age",
        plan(GroupColumn("age", "age"), COUNT, group_by=("age",)),
    ),
    # WHERE forms
    ("SELECT COUNT(*) FROM visits WHERE 65 <= age", plan(COUNT, where=Comparison("age", ">=", 65))),
    ("SELECT COUNT(*) FROM visits WHERE 65 > age", plan(COUNT, where=Comparison("age", "<", 65))),
    ("SELECT COUNT(*) FROM visits WHERE age <> 3", plan(COUNT, where=Comparison("age", "!=", 3))),
    ("SELECT COUNT(*) FROM visits WHERE age != 3", plan(COUNT, where=Comparison("age", "!=", 3))),
    ("SELECT COUNT(*) FROM visits WHERE age = -1", plan(COUNT, where=Comparison("age", "=", -1))),
    (
        "SELECT COUNT(*) FROM visits WHERE age > 20.5",
        plan(COUNT, where=Comparison("age", ">", 20.5)),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE cost < 100",
        plan(COUNT, where=Comparison("cost", "<", 100.0)),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE cost < -1.5e3",
        plan(COUNT, where=Comparison("cost", "<", -1500.0)),
    ),
    ("SELECT COUNT(*) FROM visits WHERE (age = (3))", plan(COUNT, where=Comparison("age", "=", 3))),
    ("SELECT COUNT(*) FROM visits WHERE sex = 'F'", plan(COUNT, where=Comparison("sex", "=", "F"))),
    ("SELECT COUNT(*) FROM visits WHERE 'F' = sex", plan(COUNT, where=Comparison("sex", "=", "F"))),
    (
        "SELECT COUNT(*) FROM visits WHERE region < 'it''s'",  # = refuses undeclared values
        plan(COUNT, where=Comparison("region", "<", "it's")),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE visit_date >= '2020-01-01'",
        plan(COUNT, where=Comparison("visit_date", ">=", D2020)),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE visit_date < DATE '2020-01-01'",
        plan(COUNT, where=Comparison("visit_date", "<", D2020)),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE DATE '2020-01-01' < visit_date",
        plan(COUNT, where=Comparison("visit_date", ">", D2020)),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE region IN ('north', 'east')",
        plan(COUNT, where=InList("region", ("north", "east"))),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE age NOT IN (1, 2)",
        plan(COUNT, where=InList("age", (1, 2), negated=True)),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE NOT age IN (1, 2)",
        plan(COUNT, where=InList("age", (1, 2), negated=True)),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE age BETWEEN 18 AND 65",
        plan(COUNT, where=Between("age", 18, 65)),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE age NOT BETWEEN 18 AND 65",
        plan(COUNT, where=Between("age", 18, 65, negated=True)),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE visit_date BETWEEN '2020-01-01' AND DATE '2020-12-31'",
        plan(COUNT, where=Between("visit_date", D2020, dt.date(2020, 12, 31))),
    ),
    ("SELECT COUNT(*) FROM visits WHERE cost IS NULL", plan(COUNT, where=IsNull("cost"))),
    (
        "SELECT COUNT(*) FROM visits WHERE cost IS NOT NULL",
        plan(COUNT, where=IsNull("cost", negated=True)),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE NOT cost IS NULL",
        plan(COUNT, where=IsNull("cost", negated=True)),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE NOT (age = 3)",
        plan(COUNT, where=Not(Comparison("age", "=", 3))),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE age > 1 AND age < 9 AND sex = 'M'",
        plan(
            COUNT,
            where=And(
                (Comparison("age", ">", 1), Comparison("age", "<", 9), Comparison("sex", "=", "M"))
            ),
        ),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE age > 1 AND "
        "(sex = 'M' OR region = 'east' OR cost IS NULL)",
        plan(
            COUNT,
            where=And(
                (
                    Comparison("age", ">", 1),
                    Or(
                        (
                            Comparison("sex", "=", "M"),
                            Comparison("region", "=", "east"),
                            IsNull("cost"),
                        )
                    ),
                )
            ),
        ),
    ),
    (
        "SELECT COUNT(*) FROM visits WHERE NOT (age > 1 OR age < 0)",
        plan(COUNT, where=Not(Or((Comparison("age", ">", 1), Comparison("age", "<", 0))))),
    ),
    # ORDER BY / LIMIT
    (
        "SELECT region, COUNT(*) AS n FROM visits GROUP BY region ORDER BY n DESC, region LIMIT 3",
        plan(
            REGION,
            Aggregate("count", "n"),
            group_by=("region",),
            order_by=(OrderItem("n", True), OrderItem("region")),
            limit=3,
        ),
    ),
    (
        "SELECT region AS r, COUNT(*) FROM visits GROUP BY region "
        "ORDER BY COUNT(*) ASC, region DESC",
        plan(
            GroupColumn("region", "r"),
            COUNT,
            group_by=("region",),
            order_by=(OrderItem("count"), OrderItem("r", True)),
        ),
    ),
    (
        "SELECT region, AVG(cost) AS c FROM visits GROUP BY region ORDER BY avg(COST) NULLS LAST",
        plan(
            REGION, Aggregate("avg", "c", "cost"), group_by=("region",), order_by=(OrderItem("c"),)
        ),
    ),
    (
        "SELECT SUM(cost) AS cost FROM visits ORDER BY cost",
        plan(Aggregate("sum", "cost", "cost"), order_by=(OrderItem("cost"),)),
    ),
    ("SELECT COUNT(*) FROM visits LIMIT 0", plan(COUNT, limit=0)),
]


@pytest.mark.parametrize(("sql", "expected"), ACCEPTED, ids=[s for s, _ in ACCEPTED])
def test_accepted_query_produces_plan(sql: str, expected: Plan) -> None:
    got = parse_query(sql, SPEC)
    assert got == expected
    assert got.normalized() == expected.normalized()


def test_literal_types_are_exact() -> None:
    where = parse_query("SELECT COUNT(*) FROM visits WHERE age = 3 AND cost = 3", SPEC).where
    assert isinstance(where, And)
    age, cost = where.items
    assert isinstance(age, Comparison) and type(age.value) is int
    assert isinstance(cost, Comparison) and type(cost.value) is float


def test_equivalent_spellings_share_a_cache_key() -> None:
    a = parse_query("select region, count(*) from visits where 65 <= age group by region", SPEC)
    b = parse_query(
        'SELECT "REGION", COUNT(*) FROM "VISITS" WHERE (AGE >= 65) GROUP BY Region;', SPEC
    )
    assert a.normalized() == b.normalized()


def test_dataset_name_comes_from_spec() -> None:
    spec = visits_spec(name="Clinic_Visits")
    assert parse_query("SELECT COUNT(*) FROM clinic_visits", spec).dataset == "Clinic_Visits"


@pytest.mark.parametrize(
    ("sql", "detail"),
    [
        ("SELECT COUNT(*) FROM visits JOIN visits AS b ON 1 = 1", "unsupported: JOIN"),
        ("SELECT COUNT(*) FROM visits, visits AS b", "unsupported: JOIN"),
        ("SELECT COUNT(*) FROM read_parquet('x.parquet')", "unsupported: function read_parquet"),
        ("SELECT SUM(age * 2) FROM visits", "unsupported: arithmetic inside an aggregate"),
        (
            "SELECT CASE WHEN age > 1 THEN 1 END AS c, COUNT(*) FROM visits",
            "unsupported: CASE expression",
        ),
        (
            "SELECT COUNT(*) FROM visits WHERE foo = 1",
            "unknown column 'foo'; the columns are age, sex, region, cost, visit_date",
        ),
        (
            "SELECT person_id, COUNT(*) FROM visits GROUP BY person_id",
            "the privacy unit person_id may only be used in COUNT(DISTINCT person_id)",
        ),
        ("SELECT COUNT(*) FROM visits HAVING COUNT(*) > 1", "unsupported: HAVING"),
        ("SELECT COUNT(*) FROM visits LIMIT 5 OFFSET 1", "unsupported: OFFSET"),
        ("SELECT COUNT(*) FROM visits; SELECT 1", "unsupported: multiple statements"),
        ("", "empty query"),
        ("  -- nothing\n ; ", "empty query"),
        ("PRAGMA database_list", "unsupported statement: PRAGMA"),
        ("SELECT COUNT(age) FROM visits", "unsupported: COUNT(column); use COUNT(*)"),
        (
            "SELECT region FROM visits GROUP BY region",
            "at least one aggregate (COUNT, SUM, AVG, MEDIAN, QUANTILE_CONT) is required",
        ),
        (
            "SELECT region, COUNT(*) FROM visits",
            "column region is selected but not in GROUP BY (rows are never released)",
        ),
        (
            "SELECT COUNT(*) FROM visits GROUP BY region",
            "GROUP BY column region must also be selected",
        ),
        ("SELECT COUNT(*) AS n, SUM(age) AS N FROM visits", "duplicate output column name 'N'"),
        ("SELECT SUM(sex) FROM visits", "SUM needs an int or float column; sex is category"),
        (
            "SELECT AVG(visit_date) FROM visits",
            "AVG needs an int or float column; visit_date is date",
        ),
        (
            "SELECT QUANTILE_CONT(age, 1) FROM visits",
            "QUANTILE_CONT needs a numeric level strictly between 0 and 1",
        ),
        (
            "SELECT COUNT(*) FROM visits WHERE age = 'old'",
            "type mismatch: age is int, compared with a string literal",
        ),
        (
            "SELECT COUNT(*) FROM visits WHERE sex = 1",
            "type mismatch: sex is category, compared with a number literal",
        ),
        (
            "SELECT COUNT(*) FROM visits WHERE visit_date = '01/02/2020'",
            "date literal for visit_date must be written YYYY-MM-DD",
        ),
        (
            "SELECT COUNT(*) FROM visits WHERE visit_date = '2020-02-30'",
            "invalid date literal for visit_date",
        ),
        ("SELECT COUNT(*) FROM visits ORDER BY age", "ORDER BY age: not an output column"),
        ("SELECT COUNT(*) FROM visits LIMIT -1", "LIMIT must be a non-negative integer literal"),
        (
            "SELECT COUNT(*) FROM other",
            "unsupported: FROM must name the dataset visits and nothing else",
        ),
        ("SELECT COUNT(*) FROM visits WHERE x.age = 1", "unknown table 'x'"),
        ("SELECT COUNT(* FROM visits", "could not parse SQL near line 1, column 19"),
        ("SELECT", "FROM visits is required"),
    ],
)
def test_refusal_names_the_unsupported_part(sql: str, detail: str) -> None:
    with pytest.raises(UnsupportedQuery) as info:
        parse_query(sql, SPEC)
    assert info.value.detail == detail
    assert info.value.status == 400


def test_length_limit() -> None:
    base = "SELECT COUNT(*) FROM visits WHERE age > 1"
    padded = base + " " * (MAX_SQL_CHARS - len(base))
    assert parse_query(padded, SPEC).where == Comparison("age", ">", 1)
    with pytest.raises(UnsupportedQuery, match="longer than 10000"):
        parse_query(padded + " ", SPEC)


def test_other_identifier_columns_are_not_the_unit() -> None:
    spec = visits_spec(
        columns=(*SPEC.columns, ColumnSpec("household_id", "identifier")),
    )
    assert parse_query("SELECT COUNT(DISTINCT person_id) FROM visits", spec).aggregates == (UNITS,)
    for sql in (
        "SELECT COUNT(DISTINCT household_id) FROM visits",
        "SELECT COUNT(*) FROM visits WHERE household_id = 3",
        "SELECT household_id, COUNT(*) FROM visits GROUP BY household_id",
    ):
        with pytest.raises(UnsupportedQuery):
            parse_query(sql, spec)


# -- the parse cache: keyed by SQL text and the whole spec ------------------------------------


def test_parse_is_cached_per_sql_and_spec() -> None:
    sql = "SELECT region, COUNT(*) AS n FROM visits WHERE age >= 42 GROUP BY region"
    first = parse_query(sql, SPEC)
    assert parse_query(sql, SPEC) is first  # a repeat is not parsed again
    assert parse_query(sql, visits_spec()) is first  # an equal spec is the same key
    newer = parse_query(sql, visits_spec(version=2))
    assert newer is not first and newer == first  # a new version parses afresh


def test_cached_plan_looks_up_without_parsing_and_is_bounded() -> None:
    sql = "SELECT COUNT(*) AS n FROM visits WHERE age >= 17"
    fresh = visits_spec(version=77)
    assert cached_plan(sql, fresh) is None  # never parsed on this spec: the caller parses
    plan = parse_query(sql, fresh)
    assert cached_plan(sql, fresh) is plan and cached_plan(sql, visits_spec(version=78)) is None
    assert cached_plan("SELECT COUNT(*) FROM visits JOIN x", fresh) is None  # refusals: never
    for i in range(PARSE_CACHE_SIZE):  # the oldest entries make way
        text = f"SELECT COUNT(*) AS n FROM visits WHERE age >= {i}"  # noqa: S608 - an int
        parse_query(text, visits_spec(version=79))
    assert cached_plan(sql, fresh) is None


def test_parse_cache_never_serves_a_stale_spec() -> None:
    sql = "SELECT SUM(cost) AS total FROM visits"
    assert parse_query(sql, SPEC).aggregates[0].column == "cost"
    # the same version, the column retyped or removed: refused, never the cached plan
    retyped = tuple(ColumnSpec("cost", "category", values=("a",)) if c.name == "cost" else c
                    for c in SPEC.columns)  # fmt: skip
    with pytest.raises(UnsupportedQuery, match="SUM needs an int or float column"):
        parse_query(sql, visits_spec(columns=retyped))
    dropped = tuple(c for c in SPEC.columns if c.name != "cost")
    with pytest.raises(UnsupportedQuery, match="unknown column"):
        parse_query(sql, visits_spec(columns=dropped))
    renamed = parse_query("SELECT COUNT(*) FROM clinic", visits_spec(name="clinic"))
    assert renamed.dataset == "clinic"
    with pytest.raises(UnsupportedQuery, match="FROM must name the dataset clinic"):
        parse_query("SELECT COUNT(*) FROM visits", visits_spec(name="clinic"))


def test_refusals_are_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(UnsupportedQuery, match="JOIN"):
            parse_query("SELECT COUNT(*) FROM visits JOIN visits v2 ON TRUE", SPEC)
