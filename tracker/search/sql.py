"""MLflow's search grammar compiled to one parameterised SQL statement over the views."""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from tracker.search.grammar import Comparison, ExperimentComparison, Kind, Op, OrderKey
from tracker.stores.base import DOUBLE_MAX
from tracker.stores.schema import (
    experiment_tags,
    experiments,
    latest_metrics,
    run_inputs,
    run_params,
    run_tags,
    runs,
)
from tracker.stores.sql import Statement, in_list, in_params, in_size

__all__ = [
    "EXPERIMENT_COLUMNS",
    "RUN_COLUMNS",
    "Bytewise",
    "RunSearch",
    "Term",
    "experiment_search",
    "fingerprint",
    "glob_pattern",
    "like_pattern",
    "run_search",
]

R, X, XT = runs, experiments, experiment_tags
RUN_COLUMNS: Final = (
    R.c.run_id, R.c.experiment_id, R.c.run_name, R.c.user_id, R.c.status, R.c.start_time,
    R.c.end_time, R.c.lifecycle_stage, R.c.artifact_uri,
)  # fmt: skip
"""The run columns a search selects first; its order terms follow them."""
EXPERIMENT_COLUMNS: Final = (
    X.c.experiment_id, X.c.name, X.c.artifact_location, X.c.lifecycle_stage, X.c.creation_time,
    X.c.last_update_time,
)  # fmt: skip

# SQL Server's default collations are usually case-insensitive; this one compares code units.
_MSSQL_BINARY: Final = "Latin1_General_100_BIN2"
# MySQL and MariaDB sort a TEXT value by its first max_sort_length bytes (default 1024) only;
# sorting and comparing a prefix short enough to fit keeps ORDER BY and the keyset predicate
# in agreement (256 characters are at most 1024 bytes of utf8mb4).
_MYSQL_SORT_CHARS: Final = 256
_CONTEXT_TAG: Final = "mlflow.data.context"


# -- dialect pieces ---------------------------------------------------------------------------


class Bytewise(sa.sql.functions.FunctionElement[str]):
    """A text column compared and sorted by code point on every backend, as Python compares
    str, whatever the database's collation: SQLite's BINARY is the default and MariaDB's
    columns are created binary, but a PostgreSQL database may sort by a locale, and SQL
    Server's default collation ignores case. On MySQL/MariaDB only a prefix is used (see
    `_MYSQL_SORT_CHARS`)."""

    type = sa.Unicode()
    name = "bytewise"
    inherit_cache = True


@compiles(Bytewise)
def _bytewise(element: Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(Bytewise, "postgresql")
def _bytewise_postgresql(element: Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return f'{compiler.process(element.clauses, **kw)} COLLATE "C"'


@compiles(Bytewise, "mysql")
@compiles(Bytewise, "mariadb")
def _bytewise_mysql(element: Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return f"SUBSTRING({compiler.process(element.clauses, **kw)}, 1, {_MYSQL_SORT_CHARS})"


@compiles(Bytewise, "mssql")
def _bytewise_mssql(element: Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.clauses, **kw)} COLLATE {_MSSQL_BINARY}"


class _InputContext(sa.sql.functions.FunctionElement[str]):
    """The `mlflow.data.context` tag of a run_inputs row, read from its JSON `data`."""

    type = sa.Unicode()
    name = "input_context"
    inherit_cache = True


# The JSON path is a constant of ours, never a value from a filter.
@compiles(_InputContext)
def _context_sqlite(element: _InputContext, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_extract({compiler.process(element.clauses, **kw)}, '$.tags.\"{_CONTEXT_TAG}\"')"


@compiles(_InputContext, "postgresql")
def _context_postgresql(element: _InputContext, compiler: SQLCompiler, **kw: Any) -> str:
    data = compiler.process(element.clauses, **kw)
    return f"(CAST({data} AS JSON) -> 'tags' ->> '{_CONTEXT_TAG}')"


@compiles(_InputContext, "mysql")
@compiles(_InputContext, "mariadb")
def _context_mysql(element: _InputContext, compiler: SQLCompiler, **kw: Any) -> str:
    data = compiler.process(element.clauses, **kw)
    return f"JSON_UNQUOTE(JSON_EXTRACT({data}, '$.tags.\"{_CONTEXT_TAG}\"'))"


@compiles(_InputContext, "mssql")
def _context_mssql(element: _InputContext, compiler: SQLCompiler, **kw: Any) -> str:
    return f"JSON_VALUE({compiler.process(element.clauses, **kw)}, '$.tags.\"{_CONTEXT_TAG}\"')"


# -- LIKE patterns ------------------------------------------------------------------------------


def _like_parts(pattern: str) -> list[tuple[bool, str]]:
    """(is_wildcard, character) of a LIKE pattern: % and _ are wildcards, a backslash makes
    the next character literal (PostgreSQL's and MySQL's default escape, the backends MLflow
    is mostly run on); a trailing backslash stands for itself."""
    out: list[tuple[bool, str]] = []
    chars = iter(pattern)
    for c in chars:
        if c == "\\":
            out.append((False, next(chars, "\\")))
        else:
            out.append((c in "%_", c))
    return out


def like_pattern(pattern: str, family: str) -> str:
    """A pattern for `LIKE ... ESCAPE '\\'` meaning what `pattern` means on every backend."""
    special = "%_\\[" if family == "mssql" else "%_\\"  # SQL Server's LIKE has [...] classes
    return "".join(c if wild or c not in special else "\\" + c for wild, c in _like_parts(pattern))


def glob_pattern(pattern: str) -> str:
    """SQLite's GLOB pattern for a LIKE pattern: the same match, case-sensitive (SQLite's LIKE
    ignores ASCII case, and the one switch for that, a PRAGMA, is per connection)."""
    glob = {"%": "*", "_": "?"}
    literal = {"*": "[*]", "?": "[?]", "[": "[[]"}
    return "".join(glob[c] if wild else literal.get(c, c) for wild, c in _like_parts(pattern))


def _text_match(family: str, column: sa.ColumnElement[Any], op: Op, value: Any) -> Any:
    """`column op value` for text: = != LIKE case-sensitive, ILIKE not, on every backend."""
    if family == "mssql" and op is not Op.ILIKE:
        column = column.collate(_MSSQL_BINARY)
    if op is Op.EQ:
        return column == value
    if op is Op.NE:
        return column != value
    if op is Op.LIKE:
        if family == "sqlite":
            return column.op("GLOB")(value)
        return column.like(value, escape="\\")
    if op is Op.ILIKE:
        return sa.func.lower(column).like(sa.func.lower(value), escape="\\")
    raise AssertionError(op)  # the grammar allows no other comparator on text


def _number_match(column: sa.ColumnElement[Any], op: Op, value: Any) -> Any:
    return {
        Op.EQ: column.__eq__, Op.NE: column.__ne__, Op.LT: column.__lt__, Op.LE: column.__le__,
        Op.GT: column.__gt__, Op.GE: column.__ge__,
    }[op](value)  # fmt: skip


# -- statement shapes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Clause:
    """A comparison without its values (they are bound): what a cached statement depends on.
    `field` names the column of an attribute or dataset comparison and is None where the key
    is bound (metrics, params, tags); `n` is the IN-list's padded length; `number` the bound
    type of a numeric value (float or int)."""

    kind: Kind
    field: str | None
    op: Op
    n: int = 0
    number: str = ""


@dataclass(frozen=True, slots=True)
class _Order:
    kind: Kind
    field: str | None
    ascending: bool


@dataclass(frozen=True, slots=True)
class Term:
    """One ORDER BY term of a run search: `rank` (0 a value, 1 NaN, 2 missing; always
    ascending), `int` (times), `float` (metric values) or `text`."""

    type: str
    descending: bool


def _bind(name: str, value: Any) -> sa.BindParameter[Any]:
    """A bind parameter typed by its value, so drivers that type parameters (asyncpg) know
    what `lower($1)` or `$1 > x` mean."""
    type_: sa.types.TypeEngine[Any] = sa.Unicode()
    if isinstance(value, float):
        type_ = sa.Double()
    elif isinstance(value, int):
        type_ = sa.BigInteger()
    return sa.bindparam(name, type_=type_)


def _clause_shape(c: Comparison) -> _Clause:
    field = c.key if c.kind in (Kind.ATTRIBUTE, Kind.DATASET) else None
    n = in_size(len(c.value)) if isinstance(c.value, tuple) else 0
    number = type(c.value).__name__ if isinstance(c.value, int | float) else ""
    return _Clause(c.kind, field, c.op, n, number)


def _value_params(i: int, c: Comparison, family: str, params: dict[str, Any]) -> None:
    """Bind comparison i's key and value(s) into `params`, as its statement names them."""
    if c.kind in (Kind.METRIC, Kind.PARAM, Kind.TAG):
        params[f"k{i}"] = c.key
    value = c.value
    if isinstance(value, tuple):
        params.update(in_params(value, f"v{i}_"))
        return
    if value is None:
        return
    if isinstance(value, float) and math.isinf(value) and family in ("mysql", "mssql"):
        value = math.copysign(DOUBLE_MAX, value)  # the views clamp ±Inf there
    elif isinstance(value, str) and c.op is Op.LIKE:
        value = glob_pattern(value) if family == "sqlite" else like_pattern(value, family)
    elif isinstance(value, str) and c.op is Op.ILIKE:
        value = like_pattern(value, family)
    params[f"v{i}"] = value


def _sample(clause: _Clause) -> Any:
    """A value of the clause's bound type, for typing its parameter."""
    return {"float": 0.0, "int": 0}.get(clause.number, "")


def _string_filter(
    family: str, column: sa.ColumnElement[Any], i: int, clause: _Clause
) -> sa.ColumnElement[bool]:
    if clause.op in (Op.IN, Op.NOT_IN):
        values = in_list(clause.n, f"v{i}_")
        inside = column.in_(values)
        if family == "mssql":
            inside = column.collate(_MSSQL_BINARY).in_(values)
        return inside if clause.op is Op.IN else sa.not_(inside)
    return _text_match(family, column, clause.op, _bind(f"v{i}", ""))  # type: ignore[no-any-return]


# -- runs ---------------------------------------------------------------------------------------


def _order_terms(order: tuple[_Order, ...]) -> tuple[Term, ...]:
    terms: list[Term] = []
    for o in order:
        desc = not o.ascending
        if o.kind is Kind.METRIC:
            terms += [Term("rank", False), Term("float", desc)]
        elif o.kind in (Kind.PARAM, Kind.TAG):
            terms += [Term("rank", False), Term("text", desc)]
        elif o.field in ("start_time", "end_time"):
            if o.field == "end_time":
                terms.append(Term("rank", False))
            terms.append(Term("int", desc))
        else:
            terms.append(Term("text", desc))
    return tuple(terms)


def _full_order(order: tuple[OrderKey, ...]) -> tuple[_Order, ...]:
    """The order keys with MLflow's tie-breaks: start_time DESC unless ordered by, then run_id."""
    shapes = [
        _Order(o.kind, o.key if o.kind is Kind.ATTRIBUTE else None, o.ascending) for o in order
    ]
    fields = {o.field for o in shapes if o.kind is Kind.ATTRIBUTE}
    if "start_time" not in fields:
        shapes.append(_Order(Kind.ATTRIBUTE, "start_time", False))
    if "run_id" not in fields:
        shapes.append(_Order(Kind.ATTRIBUTE, "run_id", True))
    return tuple(shapes)


@lru_cache(maxsize=512)
def _run_statement(
    family: str,
    clauses: tuple[_Clause, ...],
    order: tuple[_Order, ...],
    n_experiments: int,
    stages: tuple[str, ...],
    status: bool,
    cursor: tuple[bool, ...] | None,
) -> Statement:
    """The search statement of one shape; `cursor` says which cursor values are NULL (None:
    the first page). Cached: the same shape is the same statement object, compiled once."""
    source: sa.FromClause = R
    where: list[sa.ColumnElement[bool]] = [
        R.c.experiment_id.in_(in_list(n_experiments, "e")),
        R.c.lifecycle_stage.in_([sa.literal(v) for v in stages]),
    ]
    if status:
        where.append(R.c.status == sa.bindparam("status", type_=sa.Unicode()))
    views = {Kind.METRIC: latest_metrics, Kind.PARAM: run_params, Kind.TAG: run_tags}
    for i, clause in enumerate(clauses):
        if clause.kind in views:
            view = views[clause.kind]
            key_column = view.c[f"{clause.kind.value}_key"]
            if clause.op in (Op.IS_NULL, Op.IS_NOT_NULL):
                found = sa.exists().where(
                    view.c.run_id == R.c.run_id, key_column == _bind(f"k{i}", "")
                )
                where.append(found if clause.op is Op.IS_NOT_NULL else sa.not_(found))
                continue
            # The key is the view's primary key with run_id: at most one row joins, so an
            # inner join filters without repeating runs, and lets the planner start from it.
            v = view.alias(f"f{i}")
            source = source.join(
                v, sa.and_(v.c.run_id == R.c.run_id, v.c[key_column.name] == _bind(f"k{i}", ""))
            )
            if clause.kind is Kind.METRIC:
                # NaN is NULL in metric_value: it matches != only, as IEEE (and Python) say.
                match = _number_match(v.c.metric_value, clause.op, _bind(f"v{i}", 0.0))
                where.append(sa.or_(match, v.c.is_nan == 1) if clause.op is Op.NE else match)
            else:
                value = v.c[f"{clause.kind.value}_value"]
                where.append(_string_filter(family, value, i, clause))
        elif clause.kind is Kind.ATTRIBUTE:
            column = R.c[clause.field or ""]
            if clause.number:
                where.append(_number_match(column, clause.op, _bind(f"v{i}", _sample(clause))))
            else:
                where.append(_string_filter(family, column, i, clause))
        else:  # a dataset: does the run have an input that matches
            fields: dict[str, sa.ColumnElement[Any]] = {
                "name": run_inputs.c.dataset_name,
                "digest": run_inputs.c.dataset_digest,
                "context": _InputContext(run_inputs.c.data),
            }
            matched = fields[clause.field or ""]
            where.append(
                sa.exists().where(
                    run_inputs.c.run_id == R.c.run_id, _string_filter(family, matched, i, clause)
                )
            )
    exprs: list[sa.ColumnElement[Any]] = []
    for j, o in enumerate(order):
        if o.kind in views:
            view = views[o.kind]
            v = view.alias(f"o{j}")
            key = v.c[f"{o.kind.value}_key"]
            source = source.outerjoin(
                v, sa.and_(v.c.run_id == R.c.run_id, key == _bind(f"ok{j}", ""))
            )
            if o.kind is Kind.METRIC:
                # MLflow's order: values, then NaN, then runs without the metric.
                exprs.append(sa.case((v.c.run_id.is_(None), 2), (v.c.is_nan == 1, 1), else_=0))
                exprs.append(v.c.metric_value)
            else:
                value = v.c[f"{o.kind.value}_value"]
                exprs += [sa.case((value.is_(None), 1), else_=0), Bytewise(value)]
        elif o.field in ("start_time", "end_time"):
            column = R.c[o.field]
            if o.field == "end_time":
                exprs.append(sa.case((column.is_(None), 1), else_=0))
            exprs.append(column)
        else:
            exprs.append(Bytewise(R.c[o.field or ""]))
    terms = _order_terms(order)
    assert len(terms) == len(exprs)
    if cursor is not None:
        where.append(_after(exprs, terms, cursor))
    return (
        sa.select(*RUN_COLUMNS, *(e.label(f"t{j}") for j, e in enumerate(exprs)))
        .select_from(source)
        .where(*where)
        .order_by(*(e.desc() if t.descending else e for e, t in zip(exprs, terms, strict=True)))
        .limit(sa.bindparam("limit"))
    )


def _after(
    exprs: Sequence[sa.ColumnElement[Any]], terms: Sequence[Term], nulls: tuple[bool, ...]
) -> sa.ColumnElement[bool]:
    """Rows strictly after the cursor (c0, c1, ...) in the order of `exprs`: the keyset
    predicate, (t0 > c0) OR (t0 = c0 AND t1 > c1) OR ..., with `>` meaning after for each
    term's direction. A NULL cursor value (a NaN or missing run's value) is equalled by NULL
    and has nothing after it within its rank."""
    disjuncts: list[sa.ColumnElement[bool]] = []
    equal: list[sa.ColumnElement[bool]] = []
    for j, (expr, term, null) in enumerate(zip(exprs, terms, nulls, strict=True)):
        c = _bind(f"c{j}", {"text": "", "float": 0.0}.get(term.type, 0))
        if not null:
            after = expr < c if term.descending else expr > c
            disjuncts.append(sa.and_(*equal, after))
        equal.append(expr.is_(None) if null else expr == c)
    return sa.or_(*disjuncts)


@dataclass(frozen=True, slots=True)
class RunSearch:
    """A compiled run search: call `statement(n_experiments, cursor)` per IN-list chunk."""

    family: str
    clauses: tuple[_Clause, ...]
    order: tuple[_Order, ...]
    terms: tuple[Term, ...]
    stages: tuple[str, ...]
    status: bool
    params: dict[str, Any]

    def statement(self, n_experiments: int, cursor: Sequence[Any] | None) -> Statement:
        nulls = None if cursor is None else tuple(v is None for v in cursor)
        return _run_statement(
            self.family, self.clauses, self.order, n_experiments, self.stages, self.status, nulls
        )

    def cursor_params(self, cursor: Sequence[Any]) -> dict[str, Any]:
        return {f"c{j}": v for j, v in enumerate(cursor) if v is not None}

    def sort_key(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """The order of a row (run columns, then terms) in Python, as the SQL sorts it: for
        merging the pages of several IN-list chunks."""
        out: list[Any] = []
        for term, value in zip(self.terms, row[len(RUN_COLUMNS) :], strict=True):
            if term.type == "text":
                text = "" if value is None else str(value)
                out.append(_Reversed(text) if term.descending else text)
            else:
                number = 0 if value is None else value
                out.append(-number if term.descending else number)
        return tuple(out)


@functools.total_ordering
class _Reversed:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.text == other.text

    def __lt__(self, other: _Reversed) -> bool:
        return self.text > other.text

    def __hash__(self) -> int:
        return hash(self.text)


def run_search(
    family: str,
    comparisons: tuple[Comparison, ...],
    order: tuple[OrderKey, ...],
    *,
    stages: tuple[str, ...],
    status: str | None = None,
) -> RunSearch:
    """Compile a parsed search_runs filter and order_by for a backend family.

    The statement selects RUN_COLUMNS and then one column per order term (`RunSearch.terms`);
    it binds the experiment ids as e0, e1... (`in_params(ids, "e")`), `limit`, and, after the
    first page, the last row's terms as the cursor. Every value and key is a bound parameter.
    Order: the keys given, then start_time DESC unless given, then run_id; NULLs (a run
    without the metric, param or tag; an unfinished run's end_time) last in both
    directions, a NaN metric just before them, as MLflow orders.
    """
    params: dict[str, Any] = {}
    for i, c in enumerate(comparisons):
        _value_params(i, c, family, params)
    full = _full_order(order)
    for j, o in enumerate(order):
        if o.kind is not Kind.ATTRIBUTE:
            params[f"ok{j}"] = o.key
    if status is not None:
        params["status"] = status
    return RunSearch(
        family, tuple(_clause_shape(c) for c in comparisons), full, _order_terms(full), stages,
        status is not None, params,
    )  # fmt: skip


# -- experiments ------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _experiment_statement(
    family: str, clauses: tuple[_Clause, ...], order: tuple[_Order, ...], stages: tuple[str, ...]
) -> Statement:
    source: sa.FromClause = X
    where: list[sa.ColumnElement[bool]] = [X.c.lifecycle_stage.in_([sa.literal(v) for v in stages])]
    for i, clause in enumerate(clauses):
        if clause.kind is Kind.TAG:
            key = _bind(f"k{i}", "")
            if clause.op in (Op.IS_NULL, Op.IS_NOT_NULL):
                found = sa.exists().where(
                    XT.c.experiment_id == X.c.experiment_id, XT.c.tag_key == key
                )
                where.append(found if clause.op is Op.IS_NOT_NULL else sa.not_(found))
                continue
            t = XT.alias(f"f{i}")
            source = source.join(
                t, sa.and_(t.c.experiment_id == X.c.experiment_id, t.c.tag_key == key)
            )
            where.append(_string_filter(family, t.c.tag_value, i, clause))
        elif clause.number:
            column = X.c[clause.field or ""]
            where.append(_number_match(column, clause.op, _bind(f"v{i}", _sample(clause))))
        else:
            where.append(_string_filter(family, X.c[clause.field or ""], i, clause))
    keys: list[sa.ColumnElement[Any]] = []
    for o in order:
        exprs: list[sa.ColumnElement[Any]]
        if o.field == "experiment_id":
            # Decimal ids in numeric order (MLflow's are integers): shorter first.
            exprs = [sa.func.char_length(X.c.experiment_id), Bytewise(X.c.experiment_id)]
        elif o.field == "name":
            exprs = [Bytewise(X.c.name)]
        else:
            exprs = [X.c[o.field or ""]]
        keys += [e if o.ascending else e.desc() for e in exprs]
    return (
        sa.select(*EXPERIMENT_COLUMNS)
        .select_from(source)
        .where(*where)
        .order_by(*keys)
        .limit(sa.bindparam("limit"))
        .offset(sa.bindparam("offset"))
    )


def experiment_search(
    family: str,
    comparisons: tuple[ExperimentComparison, ...],
    order: tuple[OrderKey, ...],
    stages: tuple[str, ...],
) -> tuple[Statement, dict[str, Any]]:
    """Compile a parsed search_experiments filter and order_by: the statement (binding
    `limit` and `offset` besides the returned parameters) and its parameters. Default order
    creation_time DESC, experiment_id ASC; after other keys, experiment_id DESC breaks ties,
    as MLflow's SQL store does."""
    params: dict[str, Any] = {}
    for i, c in enumerate(comparisons):
        _value_params(i, c, family, params)
    shapes = [_Order(o.kind, o.key, o.ascending) for o in order] or [
        _Order(Kind.ATTRIBUTE, "creation_time", False),
        _Order(Kind.ATTRIBUTE, "experiment_id", True),
    ]
    if not any(o.field == "experiment_id" for o in shapes):
        shapes.append(_Order(Kind.ATTRIBUTE, "experiment_id", False))
    clauses = tuple(_clause_shape(c) for c in comparisons)
    return _experiment_statement(family, clauses, tuple(shapes), stages), params


def fingerprint(*parts: object) -> str:
    """A short digest of what a query asked for, carried in its page tokens so that a token
    comes back only to the query that made it."""
    return hashlib.sha256(orjson.dumps([repr(p) for p in parts])).hexdigest()[:16]
