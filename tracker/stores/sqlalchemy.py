"""SqlAlchemyEventStore: the log and views in MySQL/MariaDB, PostgreSQL, SQLite or SQL Server."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
import stamina

from tracker.errors import (
    InvalidInputError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
    TrackerError,
)
from tracker.events import NewEvent, RecordedEvent
from tracker.stores import schema
from tracker.stores.base import E, Encoded, Row, SqlEventStore, numbered
from tracker.stores.postgres import (
    APPEND_ONLY_DDL,
    LOCK_LOG_SQL,
    LOCK_PROJECTION_SQL,
    LOCK_SCHEMA_SQL,
    TABLE_EXISTS,
    UNIQUE_VIOLATION,
    is_unavailable_sqlstate,
    postgres_ddl_extras,
    sqlstate,
)
from tracker.stores.sql import DIALECTS, Params, Statement, insert
from tracker.stores.sqlite import run_pragma
from tracker.stores.uris import mask_password

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# Synchronous drivers in MLflow-style URIs, and the asyncio driver used for the same database.
ASYNC_DRIVERS: Final = {
    "postgresql": ("asyncpg", {"psycopg2", "pg8000", "psycopg2cffi"}),
    "mysql": ("aiomysql", {"pymysql", "mysqldb", "mysqlconnector", "mariadbconnector"}),
    "mariadb": ("aiomysql", {"pymysql", "mysqldb", "mysqlconnector", "mariadbconnector"}),
    "sqlite": ("aiosqlite", {"pysqlite"}),
    "mssql": ("aioodbc", {"pyodbc", "pymssql"}),
}
_EXTRAS: Final = {
    "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlalchemy",
    "mssql": "mssql",
}  # fmt: skip
_LOCK_WAIT: Final = 120  # seconds an appender, projector or upgrader waits for its lock
# MySQL errors a retry resolves: the server is gone, restarting or full of connections, or a
# lock wait timed out or deadlocked.
_MYSQL_UNAVAILABLE: Final = frozenset(
    {1040, 1053, 1205, 1213, 1927, 2002, 2003, 2005, 2006, 2013, 2014, 2045, 2055, 4031}
)
_MYSQL_DUPLICATE: Final = frozenset({1062, 1586})
_MSSQL_DUPLICATE: Final = ("(2627)", "(2601)")
_MAX_OVERFLOW: Final = 10
_POSTGRES_LOCKS: Final = {
    "log": LOCK_LOG_SQL, "projection": LOCK_PROJECTION_SQL, "schema": LOCK_SCHEMA_SQL,
}  # fmt: skip
_IN_DOUBT_TIMEOUT: Final = 30.0
_INSERT_EVENTS: Final = insert(E)
_HEAD: Final = sa.select(sa.func.max(E.c.position))
_MYSQL_GET_LOCK: Final = sa.text("SELECT GET_LOCK(:name, :wait)")
_MYSQL_RELEASE_LOCK: Final = sa.text("SELECT RELEASE_LOCK(:name)")
_MSSQL_GET_LOCK: Final = sa.text(
    "DECLARE @r int; EXEC @r = sp_getapplock @Resource = :name, @LockMode = 'Exclusive', "
    "@LockOwner = 'Transaction', @LockTimeout = :wait_ms; SELECT @r"
)
_TABLE_EXISTS: Final = {
    "postgresql": TABLE_EXISTS,
    "mysql": sa.text(
        "SELECT COUNT(*) FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name = :t"
    ),
    "sqlite": sa.text("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = :t"),
    "mssql": sa.text(
        "SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES "
        "WHERE TABLE_NAME = :t AND TABLE_SCHEMA = SCHEMA_NAME()"
    ),
}


@dataclass(frozen=True, slots=True)
class _Flavour:
    """What differs per database beyond SQL: how transactions begin."""

    family: str
    begin_write: tuple[str, ...]
    begin_read: tuple[str, ...]


_FLAVOURS: Final = {
    "postgresql": _Flavour(
        "postgresql", ("BEGIN ISOLATION LEVEL READ COMMITTED",),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",),
    ),
    # Sessions run READ COMMITTED (set on connect) so each statement after a lock sees every
    # commit made before the lock was granted; a snapshot asks for REPEATABLE READ instead.
    "mysql": _Flavour(
        "mysql", ("START TRANSACTION",),
        ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
         "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"),
    ),
    "sqlite": _Flavour("sqlite", ("BEGIN IMMEDIATE",), ("BEGIN",)),
    # Not tested against a live server (there is none here); the statements compile in tests.
    "mssql": _Flavour(
        "mssql", ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", "BEGIN TRANSACTION"),
        ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", "BEGIN TRANSACTION"),
    ),
}  # fmt: skip


def async_url(uri: str) -> str:
    """The SQLAlchemy URL with an asyncio driver: `mysql://` and `mysql+pymysql://` become
    `mysql+aiomysql://`, `postgresql+psycopg2://` becomes `postgresql+asyncpg://`,
    `mssql+pyodbc://` becomes `mssql+aioodbc://`."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception as exc:
        raise InvalidInputError(f"bad tracking URI {mask_password(uri)!r}: {exc}") from exc
    backend, driver = url.get_backend_name(), url.get_driver_name() if "+" in url.drivername else ""
    if backend not in ASYNC_DRIVERS:
        raise InvalidInputError(
            f"SqlAlchemyEventStore does not support {backend!r} URIs: use postgresql://, "
            "mysql://, mariadb://, mssql+aioodbc:// or sqlite+aiosqlite://"
        )
    default, sync_drivers = ASYNC_DRIVERS[backend]
    if not driver or driver in sync_drivers:
        url = url.set(drivername=f"{backend}+{default}")
    return url.render_as_string(hide_password=False)


class _Session:
    __slots__ = ("conn", "held")

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.held: list[str] = []
        """MySQL named locks to release after the transaction ends."""

    async def execute(self, statement: Statement, params: Params | None = None) -> int:
        result = await self.conn.execute(statement, dict(params or {}))
        return int(result.rowcount or 0)

    async def executemany(self, statement: Statement, rows: Sequence[Params]) -> None:
        if rows:
            await self.conn.execute(statement, [dict(r) for r in rows])

    async def fetchall(self, statement: Statement, params: Params | None = None) -> list[Row]:
        result = await self.conn.execute(statement, dict(params or {}))
        return [tuple(r) for r in result.fetchall()]

    async def execute_batch(self, ops: Sequence[tuple[Statement, Sequence[Params]]]) -> None:
        for statement, rows in ops:
            await self.executemany(statement, rows)

    async def execute_raw(self, sql: str) -> None:
        await self.conn.exec_driver_sql(sql)


class SqlAlchemyEventStore(SqlEventStore):
    """The log and views through SQLAlchemy's asyncio engine: MySQL and MariaDB (aiomysql;
    asyncmy untested), PostgreSQL (asyncpg; psycopg untested), SQLite (aiosqlite) and SQL
    Server (aioodbc; compiled and unit-tested only: no live SQL Server has been tested).
    Transactions are begun and ended with explicit SQL on AUTOCOMMIT connections, so every
    database gets the isolation and locking the contract needs, not the driver's default.

    Commit order. PostgreSQL: a transaction-level advisory lock, as in PostgresEventStore.
    MySQL/MariaDB: a named lock (GET_LOCK, per database) taken before the head is read and
    released only after COMMIT has returned; with READ COMMITTED the next appender's reads see
    that commit, so positions are handed out in commit order and a follower that has seen p
    never finds a smaller position committing later. Named locks belong to the session, not
    the transaction, so they also hold across the implicit commits of MySQL DDL: two processes
    creating the schema at once, or a rebuild, stay serialised. SQLite: BEGIN IMMEDIATE.
    SQL Server: sp_getapplock owned by the transaction.

    `schema` (PostgreSQL) sets the search_path; the schema must exist. NaN and ±Inf cannot be
    stored in MySQL or SQL Server float columns: views keep NaN as a flag and clamp ±Inf, the
    log is exact.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 5,
        connect_args: Mapping[str, Any] | None = None,
        artifact_root: str | None = None,
    ) -> None:
        from sqlalchemy.engine import make_url

        self._url = async_url(url)
        parsed = make_url(self._url)
        self.uri = mask_password(self._url)
        self.default_artifact_root = artifact_root or os.path.abspath("mlruns")
        backend = parsed.get_backend_name()
        self._flavour = _FLAVOURS["mysql" if backend == "mariadb" else backend]
        self.family = self._flavour.family
        self.supports_nan = self.family not in ("mysql", "mssql")
        self._driver = parsed.get_driver_name()
        self._connect_args = dict(connect_args or {})
        if schema is not None:
            if self.family != "postgresql":
                raise InvalidInputError(
                    "schema= applies to PostgreSQL only: name the database in the URL"
                )
            if self._driver == "asyncpg":
                settings = dict(self._connect_args.get("server_settings", {}))
                settings["search_path"] = schema
                self._connect_args["server_settings"] = settings
            else:
                self._connect_args["options"] = f"-c search_path={schema}"
        self._pool_size = pool_size
        self._engine: AsyncEngine | None = None
        self._lock_prefix = ""
        self._collation = "utf8mb4_bin"
        self._check_driver()

    def __repr__(self) -> str:
        return f"SqlAlchemyEventStore({self.uri!r})"

    def _check_driver(self) -> None:
        try:
            from sqlalchemy.dialects import registry

            registry.load(make_drivername(self._url)).import_dbapi()
        except ImportError as exc:
            default, _ = ASYNC_DRIVERS[self.family]
            if self._driver == default:
                hint = f"pip install 'tracker[{_EXTRAS[self.family]}]'"
            else:
                hint = (
                    f"pip install {exc.name or self._driver}, or use {self.family}:// ({default})"
                )
            raise InvalidInputError(f"{exc.name or self._driver} is not installed: {hint}") from exc

    # -- connections -------------------------------------------------------------------------

    async def open(self, create: bool = True) -> None:
        if self._engine is not None:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import make_url
        from sqlalchemy.ext.asyncio import create_async_engine

        family = self.family
        connect_args = dict(self._connect_args)
        database = make_url(self._url).database
        if family == "sqlite" and database and database != ":memory:":
            if not create and not await asyncio.to_thread(os.path.isfile, database):
                raise NotFoundError(f"no tracker store at {database}: the file does not exist")
            await asyncio.to_thread(Path(database).parent.mkdir, parents=True, exist_ok=True)
        if family == "mysql":
            connect_args.setdefault("charset", "utf8mb4")
            if self._driver == "aiomysql":
                _mend_aiomysql()
        engine = create_async_engine(
            self._url, isolation_level="AUTOCOMMIT", pool_size=self._pool_size, max_overflow=_MAX_OVERFLOW,
            pool_recycle=3600, pool_reset_on_return=None, connect_args=connect_args,
        )  # fmt: skip
        event.listen(engine.sync_engine, "connect", _ON_CONNECT[family])
        self._engine = engine
        try:
            if family == "mysql":
                async with self.transaction() as s:
                    rows = await s.fetchall(sa.text("SELECT DATABASE()"))
                # Named locks are server-wide: key them by database, within the 64-char limit.
                name = str(rows[0][0] or "")
                self._lock_prefix = "tracker." + hashlib.sha1(name.encode()).hexdigest()[:24]
                self._collation = await self._mysql_collation()
            await self.upgrade(create)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            with suppress(Exception):
                await engine.dispose()

    def _unavailable(self, exc: BaseException) -> bool:
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        if is_unavailable_sqlstate(sqlstate(exc)):
            return True
        if self.family == "mysql" and _mysql_code(exc) in _MYSQL_UNAVAILABLE:
            return True
        orig = getattr(exc, "orig", None)
        if _broken_asyncpg_connection(orig):
            return True
        return isinstance(exc, OSError | TimeoutError) or isinstance(orig, OSError | TimeoutError)

    def _translate(self, exc: BaseException) -> BaseException:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, TrackerError):
            return exc
        if self._unavailable(exc):
            return StoreUnavailableError(f"{self.family} is unavailable: {_message(exc)}")
        if isinstance(exc, SQLAlchemyError | UnicodeEncodeError):
            return StoreError(f"{self.family}: {_message(exc)}")
        return exc

    @asynccontextmanager
    async def _run(self, begin: tuple[str, ...]) -> AsyncIterator[_Session]:
        engine = self._engine
        if engine is None:
            raise StoreError("the store is not open: call `await store.open()` first")
        # A pooled connection the server dropped while idle fails on BEGIN: take another, as
        # many times as the pool can hold connections, since all of them may be dead.
        attempts = self._pool_size + _MAX_OVERFLOW + 1
        for attempt in range(attempts):
            try:
                conn = await engine.connect()
            except Exception as exc:
                raise self._translate(exc) from exc
            session = _Session(conn)
            try:
                for stmt in begin:
                    await conn.exec_driver_sql(stmt)
            except BaseException as exc:
                await _discard(conn)
                if attempt + 1 < attempts and self._unavailable(exc):
                    continue
                translated = self._translate(exc)
                if translated is exc:
                    raise
                raise translated from exc
            break
        ended = False
        try:
            try:
                yield session
            except BaseException as exc:
                with suppress(Exception):
                    await conn.exec_driver_sql("ROLLBACK")
                    ended = True
                translated = self._translate(exc)
                if translated is exc:
                    raise
                raise translated from exc
            try:
                await conn.exec_driver_sql("COMMIT")
                ended = True
            except Exception as exc:
                raise self._translate(exc) from exc
        finally:
            released = await self._release_locks(session)
            if ended and released:
                await conn.close()
            else:
                await _discard(conn)  # it may still hold a transaction or a named lock

    def transaction(self) -> Any:
        return self._run(self._flavour.begin_write)

    def snapshot(self) -> Any:
        return self._run(self._flavour.begin_read)

    # -- the log -------------------------------------------------------------------------------

    async def _insert(
        self, unique: dict[bytes, NewEvent], encoded: Encoded, *, skip_known: bool
    ) -> list[RecordedEvent]:
        out: list[RecordedEvent] = []
        try:
            async with self.transaction() as s:
                await self._lock_log(s)
                fresh = list(unique.values())
                if skip_known:
                    known = await self._known_ids_in(s, list(unique))
                    fresh = [e for e in fresh if e.event_id not in known]
                    if not fresh:
                        return []
                head = int((await s.fetchall(_HEAD))[0][0] or 0)
                rows, out = numbered(fresh, encoded, head)
                await s.executemany(_INSERT_EVENTS, rows)
        except StoreUnavailableError:
            # If the connection is lost mid-append, the log itself says whether it committed.
            if not out or not await self._committed(out[0]):
                raise
        except StoreError as exc:
            if not self._is_unique_violation(exc):
                raise
            raise self._insert_refused(unique, skip_known=skip_known) from exc
        return out

    async def _committed(self, first: RecordedEvent) -> bool:
        """Whether an append whose COMMIT went unanswered is in the log; raises
        StoreUnavailableError if the database cannot be asked in time."""
        async for attempt in stamina.retry_context(
            on=StoreUnavailableError, attempts=None, timeout=_IN_DOUBT_TIMEOUT,
            wait_initial=0.02, wait_max=1.0, wait_jitter=0.05,
        ):  # fmt: skip
            with attempt:
                async with self.transaction() as s:
                    await self._lock_log(s)
                    return await self._committed_at(s, first)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- locks and schema --------------------------------------------------------------------

    async def _named_lock(self, session: _Session, name: str) -> None:
        full = f"{self._lock_prefix}.{name}"
        rows = await session.fetchall(_MYSQL_GET_LOCK, {"name": full, "wait": _LOCK_WAIT})
        if rows[0][0] != 1:
            raise StoreUnavailableError(
                f"waited {_LOCK_WAIT}s for MySQL lock {name!r}: another tracker process holds it"
            )
        session.held.append(full)

    async def _release_locks(self, session: _Session) -> bool:
        try:
            while session.held:
                await session.execute(_MYSQL_RELEASE_LOCK, {"name": session.held[-1]})
                session.held.pop()
        except Exception:
            return False
        return True

    async def _lock(self, session: Any, name: str) -> None:
        if self.family == "postgresql":
            await session.execute_raw(_POSTGRES_LOCKS[name])
        elif self.family == "mysql":
            await self._named_lock(session, name)
        elif self.family == "mssql":
            rows = await session.fetchall(
                _MSSQL_GET_LOCK, {"name": f"tracker.{name}", "wait_ms": _LOCK_WAIT * 1000}
            )
            if int(rows[0][0]) < 0:
                raise StoreUnavailableError(f"waited {_LOCK_WAIT}s for SQL Server lock {name!r}")
        # SQLite: BEGIN IMMEDIATE already holds the database's single write lock.

    async def _lock_log(self, session: Any) -> None:
        await self._lock(session, "log")

    async def lock_projection(self, session: Any) -> None:
        await self._lock(session, "projection")

    async def _lock_schema(self, session: Any) -> None:
        await self._lock(session, "schema")

    async def _table_exists(self, session: Any, table: str) -> bool:
        rows = await session.fetchall(_TABLE_EXISTS[self.family], {"t": table})
        return bool(rows[0][0])

    async def _mysql_collation(self) -> str:
        """A binary collation, so that keys differing in case or trailing spaces stay distinct
        as in every other backend (MySQL's defaults are case-insensitive and pad spaces)."""
        async with self.snapshot() as s:
            rows = await s.fetchall(
                sa.text(
                    "SELECT collation_name FROM information_schema.collations "
                    "WHERE collation_name IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')"
                )
            )
        names = {r[0] for r in rows}
        for name in ("utf8mb4_nopad_bin", "utf8mb4_0900_bin"):
            if name in names:
                return name
        return "utf8mb4_bin"

    def ddl(self, table: sa.Table) -> list[str]:
        if self.family == "postgresql":
            out = super().ddl(table)
            return out + [s for s in postgres_ddl_extras() if f" {table.name} " in s]
        if self.family != "mysql":
            return super().ddl(table)
        # MySQL commits each DDL statement by itself, so a crash can leave part of the schema:
        # every statement is IF NOT EXISTS, so that the next start completes it.
        dialect = DIALECTS["mysql"]
        create = str(sa.schema.CreateTable(table, if_not_exists=True).compile(dialect=dialect))
        options = f" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={self._collation}"
        out = [create.strip() + options]
        out += [
            str(sa.schema.CreateIndex(i, if_not_exists=True).compile(dialect=dialect))
            for i in table.indexes
            if "mysql" in schema.INDEX_DIALECTS.get(str(i.name), ("mysql",))
        ]
        return out

    def _append_only_ddl(self) -> list[str]:
        if self.family == "postgresql":
            return list(APPEND_ONLY_DDL)
        if self.family == "mssql":
            return [
                "CREATE TRIGGER events_append_only ON events INSTEAD OF UPDATE, DELETE AS "
                "BEGIN THROW 51000, 'the event log is append-only: UPDATE and DELETE are "
                "refused', 1; END"
            ]
        out = []
        for op in ("UPDATE", "DELETE"):
            name = f"events_no_{op.lower()}"
            message = f"the event log is append-only: {op} is refused"
            if self.family == "mysql":
                out.append(f"DROP TRIGGER IF EXISTS {name}")
                out.append(
                    f"CREATE TRIGGER {name} BEFORE {op} ON events FOR EACH ROW "
                    f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'"
                )
            else:
                out.append(
                    f"CREATE TRIGGER {name} BEFORE {op} ON events "
                    f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
                )
        return out

    def _is_unique_violation(self, exc: BaseException) -> bool:
        """Whether `exc` (or what caused it) is a duplicate key: by SQLSTATE or MySQL error
        code where the driver gives one, else an integrity error (SQLAlchemy's wrapper or the
        DBAPI's own class) whose message names a unique constraint (SQLite, SQL Server)."""
        from sqlalchemy.exc import IntegrityError

        integrity: tuple[type[BaseException], ...] = (IntegrityError,)
        dbapi = getattr(self._engine.dialect, "dbapi", None) if self._engine else None
        raw = getattr(dbapi, "IntegrityError", None)
        if isinstance(raw, type) and issubclass(raw, BaseException):
            integrity += (raw,)
        seen: BaseException | None = exc
        for _ in range(5):
            if seen is None:
                return False
            if sqlstate(seen) == UNIQUE_VIOLATION or _mysql_code(seen) in _MYSQL_DUPLICATE:
                return True
            if isinstance(seen, integrity):
                text = str(getattr(seen, "orig", None) or seen)
                if "UNIQUE" in text or any(code in text for code in _MSSQL_DUPLICATE):
                    return True
            seen = seen.__cause__
        return False


def make_drivername(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).drivername.replace("+", ".")


def _mysql_code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", None)
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {orig or exc}"


async def _discard(conn: AsyncConnection) -> None:
    """Drop a connection whose state we cannot vouch for, rather than pool it."""
    with suppress(Exception):
        await conn.invalidate()
    with suppress(Exception):
        await conn.close()


def _mend_aiomysql() -> None:
    """aiomysql 0.3 escapes bytes with a helper that PyMySQL >= 1.2.3 replaced by a placeholder
    string, so every bytes parameter fails (aio-libs/aiomysql#1080). Put back the function,
    producing PyMySQL's own literal, only while the installed pair is broken."""
    try:
        import aiomysql.connection as conn_module
    except ImportError:
        return
    if not callable(getattr(conn_module, "escape_bytes_prefixed", None)):
        conn_module.escape_bytes_prefixed = _escape_bytes


def _escape_bytes(value: bytes) -> str:
    return f"_binary X'{value.hex()}'"


def _mysql_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    cursor.close()


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()

    def execute(sql: str) -> object:
        cursor.execute(sql)
        return cursor.fetchall()

    try:
        # busy_timeout first, so that the others wait for a lock; the WAL switch is retried
        # (it answers busy at once while another connection opens the same fresh file).
        for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = full"):
            run_pragma(execute, pragma)
    finally:
        cursor.close()


def _no_setup(dbapi_connection: Any, _record: Any) -> None:
    pass


_ON_CONNECT: Final = {
    "mysql": _mysql_connect, "sqlite": _sqlite_connect, "postgresql": _no_setup,
    "mssql": _no_setup,
}  # fmt: skip


def _broken_asyncpg_connection(orig: object) -> bool:
    """Whether a driver error (SQLAlchemy's `orig`) is asyncpg saying the connection is gone or
    was left mid-operation by a failure (a killed backend, a cancelled call): another
    connection may work, as on the native PostgreSQL store."""
    try:
        import asyncpg
    except ImportError:
        return False
    broken = (asyncpg.InternalClientError, asyncpg.InterfaceError,
              asyncpg.ConnectionDoesNotExistError)  # fmt: skip
    seen: object = orig
    for _ in range(4):  # the adapter wraps asyncpg's error as its cause
        if seen is None:
            return False
        if isinstance(seen, broken):
            return True
        seen = getattr(seen, "__cause__", None)
    return False
