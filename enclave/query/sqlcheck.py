"""Checks below the statement level: the token pass, node vocabulary, literals, WHERE conditions.

``parse.py`` owns the statement (FROM, the select list, GROUP BY, ORDER BY, LIMIT); this module
owns what that walk asks about single expressions. Nothing here knows the dataset except
through the ``column`` resolver ``read_predicate`` is handed.

- **Tokens** (``check_tokens``). Exactly one non-empty statement, starting with ``SELECT`` (or
  DuckDB's ``FROM ... SELECT``); no ``::``, no ``?``/``$n`` placeholders, and every name
  written before ``(`` must be one of the five aggregate functions. Checking function names on
  tokens names them as the user wrote them (``read_parquet``, not sqlglot's canonical
  spelling) and stops synonyms sqlglot would silently map onto an allowed node
  (``PERCENTILE_CONT(x, q)`` → ``QUANTILE_CONT``). With ``CAST``/``::`` refused here, the only
  ``Cast`` node left in the tree is a typed literal such as ``DATE '2020-01-01'``.
- **Nodes** (``allow_only``, ``describe``). Each accepted node kind lists the arguments it may
  carry; any other argument that is set is refused by name, so a sqlglot upgrade that adds
  syntax cannot slip through unnoticed. ``describe`` names a refused construct from its class,
  never from its text, so no literal value reaches a message.
- **Literals** (``read_literal``). Plain numbers within int64 and finite floats, strings, and
  ``DATE 'YYYY-MM-DD'``; a value is typed for the column it is compared with.
- **Declared values** (``check_declared``). ``=``, ``!=`` and ``IN`` on a category with
  declared values accept only those values; a refusal suggests the likely one (``'North'``:
  did you mean ``'north'``?) without quoting the literal. ``suggest`` also serves unknown
  column names. Both read the public schema only, and run before anything is charged.
- **Conditions** (``read_predicate``). Comparisons, IN, BETWEEN, IS [NOT] NULL of one column
  against literals, combined with AND/OR/NOT up to ``MAX_DEPTH`` levels.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, NoReturn

from sqlglot import exp
from sqlglot.tokenizer_core import Token, TokenType

from enclave.errors import UnsupportedQuery
from enclave.models import ColumnSpec
from enclave.query.plan import (
    And,
    Between,
    CompareOp,
    Comparison,
    InList,
    IsNull,
    Literal_,
    Not,
    Or,
    Predicate,
)

MAX_DEPTH = 64  # nesting of AND/OR/NOT/parentheses in WHERE
MAX_LISTED = 20  # a refusal lists the declared values of a category up to this many
NUMERIC = frozenset({"int", "float"})
_INT64_MAX = 2**63 - 1
_AGG_FUNCTIONS = frozenset({"COUNT", "SUM", "AVG", "MEDIAN", "QUANTILE_CONT"})
_INT_RE = re.compile(r"[0-9]+")
_FLOAT_RE = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

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
ARITHMETIC = (
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
    (ARITHMETIC, "arithmetic"),
    (exp.Star, "SELECT *"),
    (exp.Null, "NULL literal (use IS [NOT] NULL)"),
    (exp.Boolean, "boolean literal"),
    ((exp.RawString, exp.National, exp.ByteString, exp.HexString), "special string literal"),
    ((exp.Tuple, exp.Array, exp.Struct, exp.Bracket, exp.Dot), "composite value"),
    (exp.Interval, "INTERVAL"),
    (exp.Collate, "COLLATE"),
    (exp.Distinct, "DISTINCT"),
)


def refuse(detail: str) -> NoReturn:
    raise UnsupportedQuery(detail)


def refuse_identifier(col: ColumnSpec, unit: str) -> NoReturn:
    """Refuse an identifier column used anywhere but ``COUNT(DISTINCT unit)``."""
    if col.name == unit:
        refuse(f"the privacy unit {unit} may only be used in COUNT(DISTINCT {unit})")
    refuse(f"column {col.name} is an identifier and cannot be used in a query")


# -- tokens ---------------------------------------------------------------------------------


def check_tokens(tokens: list[Token]) -> None:
    """Refuse what must not reach the parser; see the module docstring."""
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


# -- nodes ----------------------------------------------------------------------------------


def quote(name: str) -> str:
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


def allow_only(node: exp.Expr, allowed: set[str], labels: dict[str, str] | None = None) -> None:
    """Refuse any argument of ``node`` that is set and not in ``allowed``."""
    for key, value in node.args.items():
        if key in allowed or value is None or value is False or value == []:
            continue
        label = (labels or {}).get(key, key.rstrip("_").upper().replace("_", " "))
        refuse(f"unsupported: {label}")


def unparen(node: Any) -> Any:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


# -- literals -------------------------------------------------------------------------------


def read_number(node: exp.Expr) -> int | float | None:
    lit = read_literal(unparen(node))
    return lit[1] if lit is not None and lit[0] == "number" else None


def read_literal(node: exp.Expr) -> tuple[str, Any] | None:
    """``("number", int|float)``, ``("string", str)``, ``("date", str)`` or None."""
    negative = False
    if isinstance(node, exp.Neg):
        negative, node = True, unparen(node.this)
    if isinstance(node, exp.Cast) and not negative:
        allow_only(node, {"this", "to", "_type"})
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


def _read_value(node: exp.Expr, col: ColumnSpec, unit: str) -> Literal_:
    """A literal, typed for ``col``; the message names the column, never the value."""
    if col.type == "identifier":
        refuse_identifier(col, unit)
    literal = read_literal(unparen(node))
    if literal is None:
        refuse(f"unsupported: {describe(unparen(node))} where a literal is expected")
    kind, value = literal
    if col.type in NUMERIC and kind == "number":
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


def check_declared(col: ColumnSpec, value: Literal_) -> None:
    """Refuse a category literal that is not one of the column's declared values.

    The declared values are public, so the mistake is refused before anything is charged,
    with the declared value it most likely meant. The literal itself is never quoted.
    """
    if col.type != "category" or not col.values or value in col.values:
        return
    text = str(value)
    same_case = [v for v in col.values if v.lower() == text.lower()]
    hint = same_case or suggest(text, col.values)
    if hint:
        advice = "did you mean " + " or ".join(quote(v) for v in hint) + "?"
    elif len(col.values) <= MAX_LISTED:
        advice = "declared values: " + ", ".join(quote(v) for v in col.values)
    else:
        advice = "GET /v1/datasets lists the declared values"
    refuse(f"{col.name} is compared with a value it does not declare; {advice}")


def suggest(written: str, known: Iterable[str]) -> list[str]:
    """Up to three of ``known`` closest to ``written`` (case-insensitive), best first."""
    by_lower: dict[str, str] = {}
    for name in known:
        by_lower.setdefault(name.lower(), name)
    close = difflib.get_close_matches(written.lower(), list(by_lower), n=3, cutoff=0.6)
    return [by_lower[c] for c in close]


# -- conditions -----------------------------------------------------------------------------


def read_predicate(
    node: exp.Expr, column: Callable[[exp.Expr], ColumnSpec], unit: str, depth: int = 0
) -> Predicate:
    """The WHERE condition ``node`` as a ``Predicate``.

    ``column`` resolves a node to a declared column the query may use, refusing unknown names
    and identifiers (the parser's name resolution); ``unit`` is the privacy unit, named when
    a value would be typed for an identifier column anyway.
    """
    if depth > MAX_DEPTH:
        refuse("WHERE clause nested too deeply")
    node = unparen(node)
    if isinstance(node, exp.And | exp.Or):
        # A chain `a AND b AND c` is one level, however long (sqlglot nests it left-deep).
        cls = type(node)
        operands, stack = [], [node]
        while stack:
            current = unparen(stack.pop())
            if type(current) is cls:
                stack.extend([current.expression, current.this])
            else:
                operands.append(current)
        items = tuple(read_predicate(part, column, unit, depth + 1) for part in operands)
        return And(items) if cls is exp.And else Or(items)
    if isinstance(node, exp.Not):
        inner = read_predicate(node.this, column, unit, depth + 1)
        if isinstance(inner, InList | Between | IsNull):  # x NOT IN / NOT BETWEEN / IS NOT NULL
            return replace(inner, negated=not inner.negated)
        return Not(inner)
    op = _COMPARISONS.get(type(node))
    if op is not None:
        left, right = unparen(node.this), unparen(node.expression)
        if isinstance(left, exp.Column) and isinstance(right, exp.Column):
            refuse("unsupported: comparison between two columns")
        if not isinstance(left, exp.Column):
            if not isinstance(right, exp.Column):
                odd = left if read_literal(left) is None else right
                refuse(f"unsupported: {describe(odd)} in a comparison")
            left, right, op = right, left, _FLIPPED[op]
        col = column(left)
        value = _read_value(right, col, unit)
        if op in ("=", "!="):
            check_declared(col, value)
        return Comparison(column=col.name, op=op, value=value)
    if isinstance(node, exp.In):
        allow_only(node, {"this", "expressions"}, {"query": "subquery", "unnest": "UNNEST"})
        col = column(node.this)
        if not node.expressions:
            refuse("unsupported: empty IN list")
        values = tuple(_read_value(v, col, unit) for v in node.expressions)
        for value in values:
            check_declared(col, value)
        return InList(column=col.name, values=values)
    if isinstance(node, exp.Between):
        allow_only(node, {"this", "low", "high"}, {"symmetric": "BETWEEN SYMMETRIC"})
        col = column(node.this)
        low = _read_value(node.args["low"], col, unit)
        high = _read_value(node.args["high"], col, unit)
        return Between(column=col.name, low=low, high=high)
    if isinstance(node, exp.Is):
        allow_only(node, {"this", "expression", "negate"})
        if not isinstance(node.expression, exp.Null):
            refuse(f"unsupported: IS {describe(node.expression)}")
        col = column(node.this)
        return IsNull(column=col.name, negated=bool(node.args.get("negate")))
    if isinstance(node, exp.Column):
        column(node)  # unknown column / privacy unit messages first
        refuse("unsupported: a bare column as a condition; compare it with a literal")
    refuse(f"unsupported: {describe(node)} in WHERE")
