"""SQL built with SQLAlchemy Core: dialect-specific upserts, compiled once per shape and cached."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import mssql, mysql, postgresql, sqlite
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

Statement = Executable
"""A Core statement or `sa.text(...)`; parameters are bound by name, never pasted in."""
Params = Mapping[str, Any]

IN_CHUNK: Final = 512
"""IN-lists are sent in chunks of at most this many values, below every driver's bind limit."""

DIALECTS: Final[dict[str, Dialect]] = {
    "sqlite": sqlite.dialect(),
    "postgresql": PGDialect_asyncpg(),  # type: ignore[no-untyped-call]
    "mysql": mysql.dialect(),
    "mssql": mssql.dialect(),  # type: ignore[no-untyped-call]
}
"""One dialect object per backend family, shared by every store and statement builder."""


def dialect_family(dialect: Dialect) -> str:
    """`sqlite`, `postgresql`, `mysql` (MariaDB too) or `mssql`."""
    name = dialect.name
    return "mysql" if name == "mariadb" else name


# -- upserts -----------------------------------------------------------------------------------


class Merge(Executable, ClauseElement):
    """An upsert for SQL Server, which has MERGE where the others have ON CONFLICT."""

    inherit_cache = False

    def __init__(self, table: sa.Table, keys: Sequence[str], update: Sequence[str]) -> None:
        self.table = table
        self.keys = tuple(keys)
        self.update = tuple(update)


@compiles(Merge)
def _compile_merge(element: Merge, compiler: SQLCompiler, **kw: Any) -> str:
    cols = [c.name for c in element.table.columns]
    q = compiler.preparer.quote
    values = ", ".join(compiler.process(sa.bindparam(c), **kw) for c in cols)
    on = " AND ".join(f"target.{q(k)} = source.{q(k)}" for k in element.keys)
    sql = (
        f"MERGE INTO {compiler.preparer.format_table(element.table)} WITH (HOLDLOCK) AS target "
        f"USING (VALUES ({values})) AS source ({', '.join(q(c) for c in cols)}) ON {on}"
    )
    if element.update:
        sets = ", ".join(f"{q(c)} = source.{q(c)}" for c in element.update)
        sql += f" WHEN MATCHED THEN UPDATE SET {sets}"
    inserted = ", ".join(f"source.{q(c)}" for c in cols)
    return (
        f"{sql} WHEN NOT MATCHED THEN INSERT ({', '.join(q(c) for c in cols)}) VALUES ({inserted});"
    )


def _binds(table: sa.Table) -> dict[str, Any]:
    return {c.name: sa.bindparam(c.name) for c in table.columns}


@lru_cache(maxsize=256)
def upsert(family: str, table: sa.Table, keys: tuple[str, ...] | None = None) -> Statement:
    """INSERT of every column of `table`, replacing the other columns where the key (default:
    the primary key) exists already. Parameters are named after the columns."""
    if keys is None:
        keys = tuple(c.name for c in table.primary_key.columns)
    rest = [c.name for c in table.columns if c.name not in keys]
    if family == "mssql":
        return Merge(table, keys, rest)
    if family == "mysql":
        m = mysql.insert(table).values(_binds(table))
        if not rest:
            return m.prefix_with("IGNORE")
        return m.on_duplicate_key_update({c: m.inserted[c] for c in rest})
    ins = (postgresql.insert if family == "postgresql" else sqlite.insert)(table).values(
        _binds(table)
    )
    if not rest:
        return ins.on_conflict_do_nothing(index_elements=list(keys))
    return ins.on_conflict_do_update(
        index_elements=list(keys), set_={c: ins.excluded[c] for c in rest}
    )


@lru_cache(maxsize=256)
def insert_ignore(family: str, table: sa.Table) -> Statement:
    """INSERT of every column that does nothing where the primary key exists already."""
    keys = tuple(c.name for c in table.primary_key.columns)
    if family == "mssql":
        return Merge(table, keys, ())
    if family == "mysql":
        return mysql.insert(table).values(_binds(table)).prefix_with("IGNORE")
    ins = (postgresql.insert if family == "postgresql" else sqlite.insert)(table)
    return ins.values(_binds(table)).on_conflict_do_nothing(index_elements=list(keys))


@lru_cache(maxsize=256)
def insert(table: sa.Table) -> Statement:
    """A plain INSERT of every column, parameters named after the columns."""
    return sa.insert(table).values(_binds(table))


# -- reading part of a blob ------------------------------------------------------------------


class blob_slice(sa.sql.functions.GenericFunction[bytes]):
    """`blob_slice(column, start, length)`: `length` bytes from 1-based `start`."""

    type = sa.LargeBinary()
    inherit_cache = True


@compiles(blob_slice)
def _blob_slice_default(element: blob_slice, compiler: SQLCompiler, **kw: Any) -> str:
    return f"substr({compiler.process(element.clauses, **kw)})"


@compiles(blob_slice, "mssql")
def _blob_slice_mssql(element: blob_slice, compiler: SQLCompiler, **kw: Any) -> str:
    return f"SUBSTRING({compiler.process(element.clauses, **kw)})"


# -- compiling for drivers that we call natively -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement compiled for one dialect: its SQL and the order of its parameters."""

    sql: str
    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    """Values bound in the statement itself (literals in Core), by position; `_MISSING` where
    the caller must supply the parameter."""

    def args(self, params: Params | None) -> tuple[Any, ...]:
        """Positional arguments for the driver from named parameters."""
        if not self.names:
            return ()
        if params is None:
            params = {}
        try:
            return tuple(
                params[n] if d is _MISSING else params.get(n, d)
                for n, d in zip(self.names, self.defaults, strict=True)
            )
        except KeyError as exc:
            raise TypeError(f"missing SQL parameter {exc.args[0]!r} for: {self.sql}") from None


_MISSING: Final[Any] = object()


@lru_cache(maxsize=2048)
def compiled(statement: Statement, family: str) -> Compiled:
    """`statement` compiled once for a backend family (positional parameters in its driver's
    style). Statements are cached by identity: build them once (module constants, or
    lru_cached builders per shape), never per call."""
    c = statement.compile(dialect=DIALECTS[family])  # type: ignore[attr-defined]
    if "POSTCOMPILE" in str(c):
        raise TypeError(
            "an IN-list of Python values compiles per call: use in_list()/in_params(), or "
            f"sa.literal() for fixed values: {c}"
        )
    names = tuple(c.positiontup or ())
    defaults = []
    for name in names:
        bind = c.binds[name]
        defaults.append(_MISSING if bind.required else bind.effective_value)
    return Compiled(str(c), names, tuple(defaults))


def chunks(values: Sequence[Any], size: int = IN_CHUNK) -> list[Sequence[Any]]:
    """`values` in slices of at most `size`, for IN-lists."""
    return [values[i : i + size] for i in range(0, len(values), size)]


def in_size(n: int) -> int:
    """The IN-list length used for `n` values: the next power of two, so that a query has a
    handful of shapes to compile and cache rather than one per list length."""
    return 1 << max(0, n - 1).bit_length()


def in_list(n: int, prefix: str = "v") -> list[sa.BindParameter[Any]]:
    """Bind parameters for an IN-list of `in_size(n)` values (see `in_params`)."""
    return [sa.bindparam(f"{prefix}{i}") for i in range(in_size(n))]


def in_params(values: Sequence[Any], prefix: str = "v") -> dict[str, Any]:
    """Named parameters for `in_list(len(values))`: the values, padded by repeating the last
    (a repeated value changes nothing in an IN-list)."""
    padded = list(values) + [values[-1]] * (in_size(len(values)) - len(values))
    return {f"{prefix}{i}": v for i, v in enumerate(padded)}
