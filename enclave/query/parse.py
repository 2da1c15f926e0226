"""The SQL subset → a typed ``Plan``. The only code that reads a user's SQL; it never runs it.

The parser is an allow-list, in two passes:

1. **Tokens** (sqlglot's DuckDB tokenizer, checked by ``sqlcheck.check_tokens``). Exactly one
   ``SELECT`` statement; function names checked as written, ``CAST``/``::`` and placeholders
   refused before any tree exists. The reasons are in ``sqlcheck``'s docstring.
2. **Tree** (sqlglot's DuckDB parser). This module walks the statement: FROM, the select
   list and its aggregates, GROUP BY, ORDER BY, LIMIT. Each accepted node kind lists the
   arguments it may carry (``sqlcheck.allow_only``); any other argument that is set
   (``joins``, ``having``, ``qualify``, ``offset``, ``symmetric``...) is refused by name, so a
   sqlglot upgrade that adds syntax cannot slip through unnoticed. Literals and the WHERE
   condition are read by ``sqlcheck``, which resolves names through ``_Builder._column``.

Names resolve against the dataset's declared columns: ASCII names case-insensitively (as
DuckDB does), others only exactly, so a Unicode look-alike (Cyrillic ``і``, the Kelvin sign
that ``str.lower()`` folds to ``k``) is an unknown column rather than a match. The plan holds
the declared names. Refusal messages may quote identifiers and function names, never literal
values or sqlglot's own messages.

Parsing is a pure function of the SQL text and the spec (both immutable values), so accepted
plans are kept in a bounded LRU keyed by ``(sql, spec)`` (``cached_plan`` looks one up
without parsing, so a repeat needs no worker thread): the spec compares every field,
version included, so an edited dataset never meets an old plan. ``Plan`` is frozen, so one
object can be shared by every caller. Refusals are not cached (they are re-parsed; a refused
query costs what it did before).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import SqlglotError

from enclave.models import ColumnSpec, DatasetSpec
from enclave.query.plan import Aggregate, GroupColumn, OrderItem, Plan, SelectItem
from enclave.query.sqlcheck import (
    ARITHMETIC,
    MAX_DEPTH,
    NUMERIC,
    allow_only,
    check_tokens,
    describe,
    quote,
    read_literal,
    read_number,
    read_predicate,
    refuse,
    refuse_identifier,
    suggest,
    unparen,
)

__all__ = ["MAX_AGGREGATES", "MAX_DEPTH", "MAX_QUANTILES", "MAX_SQL_CHARS", "parse_query"]

MAX_SQL_CHARS = 10_000
# Pricing calibrates one OpenDP measurement per aggregate, a quantile's the dearest, and an
# accuracy target re-prices the plan at each step of its search: the plan's shape, not only
# its length, bounds the work done before any data is read.
MAX_AGGREGATES = 64  # aggregates in one query
MAX_QUANTILES = 10  # of which MEDIAN / QUANTILE_CONT
PARSE_CACHE_SIZE = 1024  # plans kept; each key holds at most MAX_SQL_CHARS of text
_DIALECT = DuckDB()
_SELECT_CLAUSES = {  # labels for SELECT's arguments that name a clause
    "with_": "WITH (common table expression)",
    "distinct": "SELECT DISTINCT",
    "joins": "JOIN",
    "laterals": "LATERAL",
    "having": "HAVING",
    "qualify": "QUALIFY",
    "windows": "WINDOW",
    "offset": "OFFSET",
    "sample": "SAMPLE",
    "into": "SELECT INTO",
    "pivots": "PIVOT",
}


def parse_query(sql: str, spec: DatasetSpec) -> Plan:
    """Parse one statement of the SQL subset on ``spec`` into a ``Plan``, or raise
    ``UnsupportedQuery`` naming the first unsupported part."""
    if not isinstance(sql, str):
        refuse("the query must be a string")
    if len(sql) > MAX_SQL_CHARS:
        refuse(f"query longer than {MAX_SQL_CHARS} characters")
    try:
        hash(spec)
    except TypeError:  # a spec holding a mutable value cannot key the cache
        return _parse(sql, spec)
    found = cached_plan(sql, spec)
    if found is not None:
        return found
    plan = _parse(sql, spec)
    with _lock:
        _plans[(sql, spec)] = plan
        while len(_plans) > PARSE_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


def cached_plan(sql: str, spec: DatasetSpec) -> Plan | None:
    """The plan already parsed from ``sql`` on ``spec``, if the cache holds it (a dictionary
    look-up: the pipeline then skips the worker thread); ``None`` otherwise."""
    try:
        with _lock:
            plan = _plans.get((sql, spec))
            if plan is not None:
                _plans.move_to_end((sql, spec))
    except TypeError:  # an unhashable spec is never cached
        return None
    return plan


_plans: OrderedDict[tuple[str, DatasetSpec], Plan] = OrderedDict()  # LRU, oldest first
_lock = threading.Lock()


def _parse(sql: str, spec: DatasetSpec) -> Plan:
    try:
        tokens = _DIALECT.tokenize(sql)
    except SqlglotError:
        refuse("could not parse SQL (invalid token)")
    check_tokens(tokens)
    try:
        statements = sqlglot.parse(sql, read="duckdb")
    except SqlglotError as error:
        refuse("could not parse SQL" + _position(error))
    except RecursionError:
        refuse("query nested too deeply")
    real = [s for s in statements if s is not None and not isinstance(s, exp.Semicolon)]
    if len(real) != 1:  # the token pass already made this so; keep the invariant local
        refuse("exactly one SQL statement is required")
    try:
        return _Builder(spec).build(real[0])
    except RecursionError:
        refuse("query nested too deeply")


def _position(error: SqlglotError) -> str:
    errors = getattr(error, "errors", None) or [{}]
    line, col = errors[0].get("line"), errors[0].get("col")
    return f" near line {line}, column {col}" if isinstance(line, int) else ""


def _same_name(written: str, declared: str) -> bool:
    if written.isascii() and declared.isascii():
        return written.lower() == declared.lower()
    return written == declared


class _Builder:
    """Walks one SELECT tree; holds the spec and the table's alias while doing so."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.table_alias: str | None = None

    # -- statement ------------------------------------------------------------------------

    def build(self, root: exp.Expr) -> Plan:
        if not isinstance(root, exp.Select):
            refuse(f"unsupported: {describe(root)}")
        allow_only(
            root, {"expressions", "from_", "where", "group", "order", "limit"}, _SELECT_CLAUSES
        )
        self._from(root.args.get("from_"))
        group_by = self._group_by(root.args.get("group"), root.expressions)
        select = self._select(root.expressions, group_by)
        where_node = root.args.get("where")
        where = None
        if where_node is not None:
            allow_only(where_node, {"this"})
            where = read_predicate(where_node.this, self._column, self.spec.privacy_unit)
        return Plan(
            dataset=self.spec.name,
            select=select,
            group_by=group_by,
            where=where,
            order_by=self._order_by(root.args.get("order"), select),
            limit=self._limit(root.args.get("limit")),
        )

    def _from(self, node: exp.Expr | None) -> None:
        if node is None:
            refuse(f"FROM {self.spec.name} is required")
        allow_only(node, {"this"})
        table = node.this
        if not isinstance(table, exp.Table):
            refuse(f"unsupported: {describe(table)} in FROM")
        allow_only(table, {"this", "alias"}, {"joins": "JOIN", "laterals": "LATERAL"})
        ident = table.this
        if isinstance(ident, exp.Func):
            refuse(f"unsupported: {describe(ident)}")
        if not isinstance(ident, exp.Identifier) or not _same_name(ident.name, self.spec.name):
            refuse(f"unsupported: FROM must name the dataset {self.spec.name} and nothing else")
        alias = table.args.get("alias")
        if alias is not None:
            allow_only(alias, {"this"}, {"columns": "column aliases on the table"})
            self.table_alias = alias.name

    # -- columns --------------------------------------------------------------------------

    def _column(self, node: exp.Expr, *, allow_unit: bool = False) -> ColumnSpec:
        node = unparen(node)
        if not isinstance(node, exp.Column):
            refuse(f"unsupported: {describe(node)}")
        allow_only(node, {"this", "table"})
        if isinstance(node.this, exp.Star):
            refuse("unsupported: SELECT *")
        qualifier = node.args.get("table")
        if qualifier is not None:
            names = [self.spec.name] + ([self.table_alias] if self.table_alias else [])
            if not any(_same_name(qualifier.name, n) for n in names):
                refuse(f"unknown table {quote(qualifier.name)}")
        col = next((c for c in self.spec.columns if _same_name(node.name, c.name)), None)
        if col is None:
            refuse(f"unknown column {quote(node.name)}" + self._did_you_mean(node.name))
        if col.type == "identifier" and not (allow_unit and col.name == self.spec.privacy_unit):
            refuse_identifier(col, self.spec.privacy_unit)
        return col

    def _did_you_mean(self, written: str) -> str:
        close = suggest(written, [c.name for c in self.spec.columns])
        if close:
            return "; did you mean " + " or ".join(close) + "?"
        usable = [c.name for c in self.spec.columns if c.type != "identifier"]
        return "; the columns are " + ", ".join(usable) if usable else ""

    def _group_by(self, node: exp.Group | None, items: list[exp.Expr]) -> tuple[str, ...]:
        if node is None:
            return ()
        allow_only(node, {"expressions"}, {"all": "GROUP BY ALL", "grouping_sets": "GROUPING SETS"})
        names: list[str] = []
        for item in node.expressions:
            if isinstance(unparen(item), exp.Literal):
                refuse("unsupported: GROUP BY position; name the column")
            self._refuse_alias(unparen(item), items)
            name = self._column(item).name
            if name in names:
                refuse(f"column {name} appears twice in GROUP BY")
            names.append(name)
        return tuple(names)

    def _refuse_alias(self, node: exp.Expr, items: list[exp.Expr]) -> None:
        """GROUP BY an output alias (not a column): say so, and name what to group by."""
        if not isinstance(node, exp.Column) or node.args.get("table") is not None:
            return
        if any(_same_name(node.name, c.name) for c in self.spec.columns):
            return
        for raw in items:
            if not isinstance(raw, exp.Alias) or not _same_name(node.name, raw.alias):
                continue
            target = unparen(raw.this)
            if isinstance(target, exp.Column):
                col = self._column(target)
                refuse(
                    f"GROUP BY {quote(node.name)}: that is an output alias, and GROUP BY takes "
                    f"column names; write GROUP BY {col.name}"
                )
            refuse(
                f"GROUP BY {quote(node.name)}: that is the alias of an aggregate, which cannot "
                "be grouped by; group by the category columns you select"
            )

    # -- SELECT ---------------------------------------------------------------------------

    def _select(self, items: list[exp.Expr], group_by: tuple[str, ...]) -> tuple[SelectItem, ...]:
        out: list[SelectItem] = []
        for raw in items:
            node, alias = raw, None
            if isinstance(raw, exp.Alias):
                allow_only(raw, {"this", "alias"})
                node, alias = raw.this, raw.alias
                if not alias or len(alias) > 128 or not alias.isprintable():
                    refuse("unsupported: output alias must be 1-128 printable characters")
            node = unparen(node)
            if isinstance(node, exp.Star):
                refuse("unsupported: SELECT *")
            agg = self._aggregate(node, alias)
            if agg is not None:
                out.append(agg)
                continue
            col = self._column(node)
            if col.name not in group_by:
                refuse(
                    f"column {col.name} is selected but not in GROUP BY (rows are never released)"
                )
            if any(isinstance(s, GroupColumn) and s.column == col.name for s in out):
                refuse(f"column {col.name} is selected twice")
            out.append(GroupColumn(column=col.name, alias=alias or col.name))
        aggregates = [s for s in out if isinstance(s, Aggregate)]
        if not aggregates:
            refuse("at least one aggregate (COUNT, SUM, AVG, MEDIAN, QUANTILE_CONT) is required")
        if len(aggregates) > MAX_AGGREGATES:
            refuse(f"a query may have at most {MAX_AGGREGATES} aggregates")
        if sum(1 for a in aggregates if a.kind == "quantile") > MAX_QUANTILES:
            refuse(f"a query may have at most {MAX_QUANTILES} quantiles (MEDIAN, QUANTILE_CONT)")
        for name in group_by:
            if not any(isinstance(s, GroupColumn) and s.column == name for s in out):
                refuse(f"GROUP BY column {name} must also be selected")
        seen: set[str] = set()
        for s in out:
            key = s.alias.lower()
            if key in seen:
                refuse(f"duplicate output column name {quote(s.alias)}")
            seen.add(key)
        return tuple(out)

    def _aggregate(self, node: exp.Expr, alias: str | None) -> Aggregate | None:
        """The aggregate ``node`` stands for, or None when it is not an aggregate call."""
        if isinstance(node, exp.Count):
            allow_only(node, {"this", "big_int"})
            arg = node.this
            if isinstance(arg, exp.Star):
                return Aggregate(kind="count", alias=alias or "count")
            if isinstance(arg, exp.Distinct):
                allow_only(arg, {"expressions"})
                if len(arg.expressions) == 1:
                    inner = unparen(arg.expressions[0])
                    if (
                        isinstance(inner, exp.Column)
                        and self._column(inner, allow_unit=True).name == self.spec.privacy_unit
                    ):
                        return Aggregate(
                            kind="count_distinct_units", alias=alias or "count_distinct"
                        )
                unit = self.spec.privacy_unit
                refuse(f"unsupported: COUNT(DISTINCT ...) other than COUNT(DISTINCT {unit})")
            if arg is None:
                refuse("unsupported: COUNT() without an argument; use COUNT(*)")
            self._agg_argument(arg)
            refuse("unsupported: COUNT(column); use COUNT(*)")
        kinds: dict[type[exp.Expr], str] = {
            exp.Sum: "sum",
            exp.Avg: "avg",
            exp.Median: "median",
            exp.PercentileCont: "quantile",
        }
        written = kinds.get(type(node))
        if written is None:
            return None
        allowed = {"this", "expression"} if written == "quantile" else {"this"}
        allow_only(node, allowed)
        col = self._agg_argument(node.this)
        if col.type not in NUMERIC:
            refuse(f"{written.upper()} needs an int or float column; {col.name} is {col.type}")
        if written == "sum":
            return Aggregate(kind="sum", alias=alias or f"sum_{col.name}", column=col.name)
        if written == "avg":
            return Aggregate(kind="avg", alias=alias or f"avg_{col.name}", column=col.name)
        if written == "median":
            return Aggregate(
                kind="quantile", alias=alias or f"median_{col.name}", column=col.name, q=0.5
            )
        q_node = node.args.get("expression")
        q = read_number(q_node) if q_node is not None else None
        if q is None or not 0 < q < 1:
            refuse("QUANTILE_CONT needs a numeric level strictly between 0 and 1")
        q = float(q)
        return Aggregate(
            kind="quantile", alias=alias or f"quantile_{col.name}_{q!r}", column=col.name, q=q
        )

    def _agg_argument(self, node: exp.Expr) -> ColumnSpec:
        node = unparen(node)
        if isinstance(node, ARITHMETIC):
            refuse("unsupported: arithmetic inside an aggregate")
        if isinstance(node, exp.Distinct):
            refuse("unsupported: DISTINCT inside SUM/AVG/MEDIAN/QUANTILE_CONT")
        if not isinstance(node, exp.Column):
            refuse(f"unsupported: {describe(node)} inside an aggregate")
        return self._column(node)

    # -- ORDER BY / LIMIT -----------------------------------------------------------------

    def _order_by(
        self, node: exp.Order | None, select: tuple[SelectItem, ...]
    ) -> tuple[OrderItem, ...]:
        if node is None:
            return ()
        allow_only(node, {"expressions"})
        out: list[OrderItem] = []
        for ordered in node.expressions:
            allow_only(ordered, {"this", "desc", "nulls_first"})
            if ordered.args.get("nulls_first"):
                refuse("unsupported: NULLS FIRST")
            out.append(
                OrderItem(
                    name=self._order_target(ordered.this, select),
                    descending=bool(ordered.args.get("desc")),
                )
            )
        return tuple(out)

    def _order_target(self, node: exp.Expr, select: tuple[SelectItem, ...]) -> str:
        """An output name, or an expression identical to a select item: its output name."""
        node = unparen(node)
        if isinstance(node, exp.Literal):
            refuse("unsupported: ORDER BY position; use an output name")
        if isinstance(node, exp.Column):
            if node.args.get("table") is None:
                for s in select:
                    if _same_name(node.name, s.alias):
                        return s.alias
            col = self._column(node)
            for s in select:
                if isinstance(s, GroupColumn) and s.column == col.name:
                    return s.alias
            refuse(f"ORDER BY {col.name}: not an output column")
        agg = self._aggregate(node, "_")
        if agg is None:
            refuse(f"unsupported: {describe(node)} in ORDER BY")
        for s in select:
            if isinstance(s, Aggregate) and (s.kind, s.column, s.q) == (
                agg.kind,
                agg.column,
                agg.q,
            ):
                return s.alias
        refuse("ORDER BY an aggregate that is not selected")

    def _limit(self, node: exp.Limit | None) -> int | None:
        if node is None:
            return None
        allow_only(
            node, {"expression"}, {"offset": "OFFSET", "limit_options": "LIMIT PERCENT / WITH TIES"}
        )
        value = read_literal(unparen(node.expression))
        if value is None or value[0] != "number" or not isinstance(value[1], int) or value[1] < 0:
            refuse("LIMIT must be a non-negative integer literal")
        return int(value[1])
