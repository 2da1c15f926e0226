"""The SQL subset → a typed ``Plan``. The only code that reads a user's SQL; it never runs it.

The parser is an allow-list, in two passes:

1. **Tokens** (sqlglot's DuckDB tokenizer). Exactly one non-empty statement, starting with
   ``SELECT`` (or DuckDB's ``FROM ... SELECT``); no ``::``, no ``?``/``$n`` placeholders, and
   every name written before ``(`` must be one of the five aggregate functions. Checking
   function names on tokens names them as the user wrote them (``read_parquet``, not sqlglot's
   canonical spelling) and stops synonyms sqlglot would silently map onto an allowed node
   (``PERCENTILE_CONT(x, q)`` → ``QUANTILE_CONT``). With ``CAST``/``::`` refused here, the only
   ``Cast`` node left in the tree is a typed literal such as ``DATE '2020-01-01'``.
2. **Tree** (sqlglot's DuckDB parser). Each accepted node kind lists the arguments it may
   carry; any other argument that is set (``joins``, ``having``, ``qualify``, ``offset``,
   ``symmetric``...) is refused by name, so a sqlglot upgrade that adds syntax cannot slip
   through unnoticed.

Names resolve against the dataset's declared columns: ASCII names case-insensitively (as
DuckDB does), others only exactly, so a Unicode look-alike (Cyrillic ``і``, the Kelvin sign
that ``str.lower()`` folds to ``k``) is an unknown column rather than a match. The plan holds
the declared names. Refusal messages may quote identifiers and function names, never literal
values or sqlglot's own messages.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import replace
from typing import Any, NoReturn

import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import Token, TokenType

from enclave.errors import UnsupportedQuery
from enclave.models import ColumnSpec, DatasetSpec
from enclave.query.plan import (
    Aggregate,
    And,
    Between,
    CompareOp,
    Comparison,
    GroupColumn,
    InList,
    IsNull,
    Literal_,
    Not,
    Or,
    OrderItem,
    Plan,
    Predicate,
    SelectItem,
)

MAX_SQL_CHARS = 10_000
MAX_DEPTH = 64  # nesting of AND/OR/NOT/parentheses in WHERE
_INT64_MAX = 2**63 - 1
_AGG_FUNCTIONS = frozenset({"COUNT", "SUM", "AVG", "MEDIAN", "QUANTILE_CONT"})
_NUMERIC = frozenset({"int", "float"})
_INT_RE = re.compile(r"[0-9]+")
_FLOAT_RE = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_DIALECT = DuckDB()

_COMPARISONS: dict[type[exp.Expr], CompareOp] = {
    exp.EQ: "=",
    exp.NEQ: "!=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
}
_FLIPPED: dict[CompareOp, CompareOp] = {
    "=": "=",
    "!=": "!=",
    "<": ">",
    "<=": ">=",
    ">": "<",
    ">=": "<=",
}
_ARITHMETIC = (
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Mod,
    exp.IntDiv,
    exp.Pow,
    exp.Neg,
    exp.BitwiseAnd,
    exp.BitwiseOr,
    exp.BitwiseXor,
    exp.BitwiseNot,
    exp.BitwiseLeftShift,
    exp.BitwiseRightShift,
)
# Most specific first: the first matching class names the refused construct.
_NODE_NAMES: tuple[tuple[type[exp.Expr] | tuple[type[exp.Expr], ...], str], ...] = (
    ((exp.Subquery, exp.Select, exp.Exists, exp.Any, exp.All), "subquery"),
    (exp.Union, "UNION"),
    (exp.Intersect, "INTERSECT"),
    (exp.Except, "EXCEPT"),
    (exp.Window, "window function"),
    (exp.Filter, "aggregate FILTER"),
    (exp.WithinGroup, "WITHIN GROUP"),
    ((exp.Case, exp.If), "CASE expression"),
    (exp.Cast, "CAST"),
    ((exp.Placeholder, exp.Parameter), "parameter placeholder"),
    (exp.DPipe, "string concatenation"),
    ((exp.Like, exp.ILike, exp.SimilarTo, exp.Glob, exp.RegexpLike), "LIKE / pattern matching"),
    (_ARITHMETIC, "arithmetic"),
    (exp.Star, "SELECT *"),
    (exp.Null, "NULL literal (use IS [NOT] NULL)"),
    (exp.Boolean, "boolean literal"),
    ((exp.RawString, exp.National, exp.ByteString, exp.HexString), "special string literal"),
    ((exp.Tuple, exp.Array, exp.Struct, exp.Bracket, exp.Dot), "composite value"),
    (exp.Interval, "INTERVAL"),
    (exp.Collate, "COLLATE"),
    (exp.Distinct, "DISTINCT"),
)
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


def refuse(detail: str) -> NoReturn:
    raise UnsupportedQuery(detail)


def parse_query(sql: str, spec: DatasetSpec) -> Plan:
    """Parse one statement of the SQL subset on ``spec`` into a ``Plan``, or raise
    ``UnsupportedQuery`` naming the first unsupported part."""
    if not isinstance(sql, str):
        refuse("the query must be a string")
    if len(sql) > MAX_SQL_CHARS:
        refuse(f"query longer than {MAX_SQL_CHARS} characters")
    try:
        tokens = _DIALECT.tokenize(sql)
    except SqlglotError:
        refuse("could not parse SQL (invalid token)")
    _check_tokens(tokens)
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


def _check_tokens(tokens: list[Token]) -> None:
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    statements = [s for s in statements if s]
    if not statements:
        refuse("empty query")
    if len(statements) > 1:
        refuse("unsupported: multiple statements")
    first = statements[0][0]
    if first.token_type == TokenType.WITH:
        refuse("unsupported: WITH (common table expression)")
    if first.token_type not in (TokenType.SELECT, TokenType.FROM):
        word = first.text.upper() if _WORD_RE.fullmatch(first.text) else ""
        refuse(f"unsupported statement: {word}" if word else "only SELECT queries are supported")
    body = statements[0]
    for token, following in zip(body, [*body[1:], None], strict=True):
        kind = token.token_type
        if kind == TokenType.FROM and following is not None:
            if following.token_type == TokenType.STRING:  # DuckDB reads 'x' in FROM as a file
                refuse("unsupported: a file or URL in FROM")
        if kind == TokenType.DCOLON:
            refuse("unsupported: CAST (::)")
        if kind in (TokenType.PLACEHOLDER, TokenType.PARAMETER):
            refuse("unsupported: parameter placeholder")
        if following is None or following.token_type != TokenType.L_PAREN:
            continue
        name = token.text
        if kind == TokenType.IDENTIFIER:  # a quoted name used as a function
            refuse(f"unsupported: function {_safe_name(name)}")
        if kind == TokenType.VAR and name.upper() not in _AGG_FUNCTIONS:
            if name.upper() in ("CAST", "TRY_CAST"):
                refuse("unsupported: CAST")
            refuse(f"unsupported: function {_safe_name(name)}")


def _safe_name(name: str) -> str:
    return name if _WORD_RE.fullmatch(name) else "(unprintable name)"


def _quote(name: str) -> str:
    """An identifier from the SQL, fit for an error message (bounded, printable)."""
    shown = "".join(c if c.isprintable() else "?" for c in name[:64])
    return "'" + shown + ("...'" if len(name) > 64 else "'")


def describe(node: exp.Expr) -> str:
    """Name a refused construct without quoting any literal value."""
    for classes, label in _NODE_NAMES:
        if isinstance(node, classes):
            return label
    if isinstance(node, exp.Anonymous):
        return f"function {_safe_name(node.name)}"
    if isinstance(node, exp.Func):
        return f"function {_safe_name(node.sql_name())}"
    return f"{type(node).__name__} expression"


def _only(node: exp.Expr, allowed: set[str], labels: dict[str, str] | None = None) -> None:
    """Refuse any argument of ``node`` that is set and not in ``allowed``."""
    for key, value in node.args.items():
        if key in allowed or value is None or value is False or value == []:
            continue
        label = (labels or {}).get(key, key.rstrip("_").upper().replace("_", " "))
        refuse(f"unsupported: {label}")


def _unparen(node: Any) -> Any:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


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
        _only(root, {"expressions", "from_", "where", "group", "order", "limit"}, _SELECT_CLAUSES)
        self._from(root.args.get("from_"))
        group_by = self._group_by(root.args.get("group"))
        select = self._select(root.expressions, group_by)
        where_node = root.args.get("where")
        where = None
        if where_node is not None:
            _only(where_node, {"this"})
            where = self._predicate(where_node.this, 0)
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
        _only(node, {"this"})
        table = node.this
        if not isinstance(table, exp.Table):
            refuse(f"unsupported: {describe(table)} in FROM")
        _only(table, {"this", "alias"}, {"joins": "JOIN", "laterals": "LATERAL"})
        ident = table.this
        if isinstance(ident, exp.Func):
            refuse(f"unsupported: {describe(ident)}")
        if not isinstance(ident, exp.Identifier) or not _same_name(ident.name, self.spec.name):
            refuse(f"unsupported: FROM must name the dataset {self.spec.name} and nothing else")
        alias = table.args.get("alias")
        if alias is not None:
            _only(alias, {"this"}, {"columns": "column aliases on the table"})
            self.table_alias = alias.name

    # -- columns --------------------------------------------------------------------------

    def _column(self, node: exp.Expr, *, allow_unit: bool = False) -> ColumnSpec:
        node = _unparen(node)
        if not isinstance(node, exp.Column):
            refuse(f"unsupported: {describe(node)}")
        _only(node, {"this", "table"})
        if isinstance(node.this, exp.Star):
            refuse("unsupported: SELECT *")
        qualifier = node.args.get("table")
        if qualifier is not None:
            names = [self.spec.name] + ([self.table_alias] if self.table_alias else [])
            if not any(_same_name(qualifier.name, n) for n in names):
                refuse(f"unknown table {_quote(qualifier.name)}")
        col = next((c for c in self.spec.columns if _same_name(node.name, c.name)), None)
        if col is None:
            refuse(f"unknown column {_quote(node.name)}")
        if col.type == "identifier" and not (allow_unit and col.name == self.spec.privacy_unit):
            self._identifier_misuse(col)
        return col

    def _identifier_misuse(self, col: ColumnSpec) -> NoReturn:
        unit = self.spec.privacy_unit
        if col.name == unit:
            refuse(f"the privacy unit {unit} may only be used in COUNT(DISTINCT {unit})")
        refuse(f"column {col.name} is an identifier and cannot be used in a query")

    def _group_by(self, node: exp.Group | None) -> tuple[str, ...]:
        if node is None:
            return ()
        _only(node, {"expressions"}, {"all": "GROUP BY ALL", "grouping_sets": "GROUPING SETS"})
        names: list[str] = []
        for item in node.expressions:
            if isinstance(_unparen(item), exp.Literal):
                refuse("unsupported: GROUP BY position; name the column")
            name = self._column(item).name
            if name in names:
                refuse(f"column {name} appears twice in GROUP BY")
            names.append(name)
        return tuple(names)

    # -- SELECT ---------------------------------------------------------------------------

    def _select(self, items: list[exp.Expr], group_by: tuple[str, ...]) -> tuple[SelectItem, ...]:
        out: list[SelectItem] = []
        for raw in items:
            node, alias = raw, None
            if isinstance(raw, exp.Alias):
                _only(raw, {"this", "alias"})
                node, alias = raw.this, raw.alias
                if not alias or len(alias) > 128 or not alias.isprintable():
                    refuse("unsupported: output alias must be 1-128 printable characters")
            node = _unparen(node)
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
        if not any(isinstance(s, Aggregate) for s in out):
            refuse("at least one aggregate (COUNT, SUM, AVG, MEDIAN, QUANTILE_CONT) is required")
        for name in group_by:
            if not any(isinstance(s, GroupColumn) and s.column == name for s in out):
                refuse(f"GROUP BY column {name} must also be selected")
        seen: set[str] = set()
        for s in out:
            key = s.alias.lower()
            if key in seen:
                refuse(f"duplicate output column name {_quote(s.alias)}")
            seen.add(key)
        return tuple(out)

    def _aggregate(self, node: exp.Expr, alias: str | None) -> Aggregate | None:
        """The aggregate ``node`` stands for, or None when it is not an aggregate call."""
        if isinstance(node, exp.Count):
            _only(node, {"this", "big_int"})
            arg = node.this
            if isinstance(arg, exp.Star):
                return Aggregate(kind="count", alias=alias or "count")
            if isinstance(arg, exp.Distinct):
                _only(arg, {"expressions"})
                if len(arg.expressions) == 1:
                    inner = _unparen(arg.expressions[0])
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
        _only(node, allowed)
        col = self._agg_argument(node.this)
        if col.type not in _NUMERIC:
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
        q = _number(q_node) if q_node is not None else None
        if q is None or not 0 < q < 1:
            refuse("QUANTILE_CONT needs a numeric level strictly between 0 and 1")
        q = float(q)
        return Aggregate(
            kind="quantile", alias=alias or f"quantile_{col.name}_{q!r}", column=col.name, q=q
        )

    def _agg_argument(self, node: exp.Expr) -> ColumnSpec:
        node = _unparen(node)
        if isinstance(node, _ARITHMETIC):
            refuse("unsupported: arithmetic inside an aggregate")
        if isinstance(node, exp.Distinct):
            refuse("unsupported: DISTINCT inside SUM/AVG/MEDIAN/QUANTILE_CONT")
        if not isinstance(node, exp.Column):
            refuse(f"unsupported: {describe(node)} inside an aggregate")
        return self._column(node)

    # -- WHERE ----------------------------------------------------------------------------

    def _predicate(self, node: exp.Expr, depth: int) -> Predicate:
        if depth > MAX_DEPTH:
            refuse("WHERE clause nested too deeply")
        node = _unparen(node)
        if isinstance(node, exp.And | exp.Or):
            # A chain `a AND b AND c` is one level, however long (sqlglot nests it left-deep).
            cls = type(node)
            operands, stack = [], [node]
            while stack:
                current = _unparen(stack.pop())
                if type(current) is cls:
                    stack.extend([current.expression, current.this])
                else:
                    operands.append(current)
            items = tuple(self._predicate(part, depth + 1) for part in operands)
            return And(items) if cls is exp.And else Or(items)
        if isinstance(node, exp.Not):
            inner = self._predicate(node.this, depth + 1)
            if isinstance(inner, InList | Between | IsNull):  # x NOT IN / NOT BETWEEN / IS NOT NULL
                return replace(inner, negated=not inner.negated)
            return Not(inner)
        op = _COMPARISONS.get(type(node))
        if op is not None:
            left, right = _unparen(node.this), _unparen(node.expression)
            if isinstance(left, exp.Column) and isinstance(right, exp.Column):
                refuse("unsupported: comparison between two columns")
            if not isinstance(left, exp.Column):
                if not isinstance(right, exp.Column):
                    odd = left if _literal(left) is None else right
                    refuse(f"unsupported: {describe(odd)} in a comparison")
                left, right, op = right, left, _FLIPPED[op]
            col = self._column(left)
            return Comparison(column=col.name, op=op, value=self._value(right, col))
        if isinstance(node, exp.In):
            _only(node, {"this", "expressions"}, {"query": "subquery", "unnest": "UNNEST"})
            col = self._column(node.this)
            if not node.expressions:
                refuse("unsupported: empty IN list")
            return InList(
                column=col.name, values=tuple(self._value(v, col) for v in node.expressions)
            )
        if isinstance(node, exp.Between):
            _only(node, {"this", "low", "high"}, {"symmetric": "BETWEEN SYMMETRIC"})
            col = self._column(node.this)
            low, high = self._value(node.args["low"], col), self._value(node.args["high"], col)
            return Between(column=col.name, low=low, high=high)
        if isinstance(node, exp.Is):
            _only(node, {"this", "expression", "negate"})
            if not isinstance(node.expression, exp.Null):
                refuse(f"unsupported: IS {describe(node.expression)}")
            col = self._column(node.this)
            return IsNull(column=col.name, negated=bool(node.args.get("negate")))
        if isinstance(node, exp.Column):
            self._column(node)  # unknown column / privacy unit messages first
            refuse("unsupported: a bare column as a condition; compare it with a literal")
        refuse(f"unsupported: {describe(node)} in WHERE")

    def _value(self, node: exp.Expr, col: ColumnSpec) -> Literal_:
        """A literal, typed for ``col``; the message names the column, never the value."""
        if col.type == "identifier":
            self._identifier_misuse(col)
        literal = _literal(_unparen(node))
        if literal is None:
            refuse(f"unsupported: {describe(_unparen(node))} where a literal is expected")
        kind, value = literal
        if col.type in _NUMERIC and kind == "number":
            return (
                float(value)
                if col.type == "float"
                else int(value)
                if isinstance(value, int)
                else float(value)
            )
        if col.type == "category" and kind == "string":
            return str(value)
        if col.type == "date" and kind in ("string", "date"):
            value = str(value)
            if not _DATE_RE.fullmatch(value):
                refuse(f"date literal for {col.name} must be written YYYY-MM-DD")
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                refuse(f"invalid date literal for {col.name}")
        refuse(f"type mismatch: {col.name} is {col.type}, compared with a {kind} literal")

    # -- ORDER BY / LIMIT -----------------------------------------------------------------

    def _order_by(
        self, node: exp.Order | None, select: tuple[SelectItem, ...]
    ) -> tuple[OrderItem, ...]:
        if node is None:
            return ()
        _only(node, {"expressions"})
        out: list[OrderItem] = []
        for ordered in node.expressions:
            _only(ordered, {"this", "desc", "nulls_first"})
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
        node = _unparen(node)
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
        _only(
            node, {"expression"}, {"offset": "OFFSET", "limit_options": "LIMIT PERCENT / WITH TIES"}
        )
        value = _literal(_unparen(node.expression))
        if value is None or value[0] != "number" or not isinstance(value[1], int) or value[1] < 0:
            refuse("LIMIT must be a non-negative integer literal")
        return int(value[1])


def _number(node: exp.Expr) -> int | float | None:
    lit = _literal(_unparen(node))
    return lit[1] if lit is not None and lit[0] == "number" else None


def _literal(node: exp.Expr) -> tuple[str, Any] | None:
    """``("number", int|float)``, ``("string", str)``, ``("date", str)`` or None."""
    negative = False
    if isinstance(node, exp.Neg):
        negative, node = True, _unparen(node.this)
    if isinstance(node, exp.Cast) and not negative:
        _only(node, {"this", "to", "_type"})
        inner = node.this
        if (
            node.to.is_type(exp.DataType.Type.DATE)
            and isinstance(inner, exp.Literal)
            and inner.is_string
        ):
            return ("date", inner.this)
        refuse(f"unsupported: {node.to.sql(dialect='duckdb')[:32]} literal")
    if not isinstance(node, exp.Literal) or type(node) is not exp.Literal:
        return None
    text = node.this
    if node.is_string:
        return None if negative else ("string", text)
    value: int | float
    if _INT_RE.fullmatch(text):
        value = int(text)
        if value > _INT64_MAX:
            refuse("numeric literal out of range")
    elif _FLOAT_RE.fullmatch(text):
        value = float(text)
        if not math.isfinite(value):
            refuse("numeric literal out of range")
    else:
        refuse("unsupported numeric literal")
    return ("number", -value if negative else value)
