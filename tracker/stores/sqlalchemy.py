"""SqlAlchemyEventStore: the log and views in MySQL/MariaDB, PostgreSQL or SQLite via SQLAlchemy."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tracker.errors import (
    InvalidInputError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
    TrackerError,
)
from tracker.events import NewEvent, RecordedEvent
from tracker.stores.base import (
    INSERT_EVENTS,
    Dialect,
    Encoded,
    EventStore,
    Row,
    numbered,
)
from tracker.stores.postgres import (
    FORBID_EVENT_CHANGES_SQL,
    LOCK_LOG_SQL,
    LOCK_PROJECTION_SQL,
    LOCK_SCHEMA_SQL,
    TABLE_EXISTS_SQL,
    UNIQUE_VIOLATION,
    is_unavailable_sqlstate,
    postgres_ddl,
    sqlstate,
)
from tracker.stores.schema import MYSQL_TYPES, POSTGRES_TYPES, SQLITE_TYPES, Table, create_table_sql
from tracker.stores.uris import mask_password

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# Synchronous drivers in MLflow-style URIs, and the asyncio driver used for the same database.
ASYNC_DRIVERS: Final = {
    "postgresql": ("asyncpg", {"psycopg2", "pg8000", "psycopg2cffi"}),
    "mysql": ("aiomysql", {"pymysql", "mysqldb", "mysqlconnector", "mariadbconnector"}),
    "mariadb": ("aiomysql", {"pymysql", "mysqldb", "mysqlconnector", "mariadbconnector"}),
    "sqlite": ("aiosqlite", {"pysqlite"}),
}
_EXTRAS: Final = {
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlalchemy",
}
_PARAMSTYLES: Final = {
    "qmark": "qmark", "format": "format", "pyformat": "format", "numeric_dollar": "numeric_dollar",
}  # fmt: skip
_LOCK_WAIT: Final = 120  # seconds a MySQL appender, projector or upgrader waits for its lock
# MySQL errors a retry resolves (the writer retries them): the server is gone, restarting or
# full of connections, or a lock wait timed out or deadlocked.
_MYSQL_UNAVAILABLE: Final = frozenset(
    {1040, 1053, 1205, 1213, 1927, 2002, 2003, 2005, 2006, 2013, 2014, 2045, 2055, 4031}
)
_MYSQL_DUPLICATE: Final = frozenset({1062, 1586})
_MAX_OVERFLOW: Final = 10
_POSTGRES_LOCKS: Final = {
    "log": LOCK_LOG_SQL, "projection": LOCK_PROJECTION_SQL, "schema": LOCK_SCHEMA_SQL,
}  # fmt: skip
_IN_DOUBT_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class _Flavour:
    """What differs per database beyond the Dialect: how transactions begin."""

    kind: str
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
}  # fmt: skip


def async_url(uri: str) -> str:
    """The SQLAlchemy URL with an asyncio driver: `mysql://` and `mysql+pymysql://` become
    `mysql+aiomysql://`, `postgresql+psycopg2://` becomes `postgresql+asyncpg://`."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception as exc:
        raise InvalidInputError(f"bad tracking URI {mask_password(uri)!r}: {exc}") from exc
    backend, driver = url.get_backend_name(), url.get_driver_name() if "+" in url.drivername else ""
    if backend not in ASYNC_DRIVERS:
        raise InvalidInputError(
            f"SqlAlchemyEventStore does not support {backend!r} URIs: use postgresql://, "
            "mysql://, mariadb:// or sqlite+aiosqlite://"
        )
    default, sync_drivers = ASYNC_DRIVERS[backend]
    if not driver or driver in sync_drivers:
        url = url.set(drivername=f"{backend}+{default}")
    return url.render_as_string(hide_password=False)


class _Session:
    __slots__ = ("conn", "held", "style")

    def __init__(self, conn: AsyncConnection, style: str) -> None:
        self.conn = conn
        self.style = style
        self.held: list[str] = []
        """MySQL named locks to release after the transaction ends."""

    def _plain(self, sql: str, params: Sequence[Any]) -> str:
        # Without parameters the driver does no %-formatting, so undo the Dialect's escaping.
        return sql.replace("%%", "%") if self.style == "format" and not params else sql

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self.conn.exec_driver_sql(self._plain(sql, params), tuple(params))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self.conn.exec_driver_sql(sql, [tuple(r) for r in rows])

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        result = await self.conn.exec_driver_sql(self._plain(sql, params), tuple(params))
        return [tuple(r) for r in result.fetchall()]


class SqlAlchemyEventStore(EventStore):
    """The log and views through SQLAlchemy's asyncio engine: MySQL and MariaDB (aiomysql;
    asyncmy untested), PostgreSQL (asyncpg; psycopg untested) and SQLite (aiosqlite).
    Transactions are begun and ended with explicit SQL on AUTOCOMMIT connections, so every
    database gets the isolation and locking the contract needs, not the driver's default.

    Commit order. PostgreSQL: a transaction-level advisory lock, as in PostgresEventStore.
    MySQL/MariaDB: a named lock (GET_LOCK, per database) taken before the head is read and
    released only after COMMIT has returned; with READ COMMITTED the next appender's reads see
    that commit, so positions are handed out in commit order and a follower that has seen p
    never finds a smaller position committing later. Named locks belong to the session, not
    the transaction, so they also hold across the implicit commits of MySQL DDL: two processes
    creating the schema at once, or a rebuild, stay serialised. SQLite: BEGIN IMMEDIATE.

    `schema` (PostgreSQL) sets the search_path; the schema must exist. NaN and ±Inf cannot be
    stored in MySQL float columns: views keep NaN as a flag and clamp ±Inf, the log is exact.
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
        try:
            from sqlalchemy.engine import make_url
        except ImportError as exc:
            extra = _EXTRAS.get(url.split(":", 1)[0].split("+")[0].lower(), "sqlalchemy")
            raise InvalidInputError(
                f"{exc.name or 'sqlalchemy'} is not installed: pip install 'tracker[{extra}]'"
            ) from exc
        self._url = async_url(url)
        parsed = make_url(self._url)
        self.uri = mask_password(self._url)
        self.default_artifact_root = artifact_root or os.path.abspath("mlruns")
        backend = parsed.get_backend_name()
        self._flavour = _FLAVOURS["mysql" if backend == "mariadb" else backend]
        self._driver = parsed.get_driver_name()
        self._connect_args = dict(connect_args or {})
        if schema is not None:
            if self._flavour.kind != "postgresql":
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
        self.dialect = self._make_dialect()

    def __repr__(self) -> str:
        return f"SqlAlchemyEventStore({self.uri!r})"

    def _make_dialect(self) -> Dialect:
        kind = self._flavour.kind
        try:
            from sqlalchemy.dialects import registry

            dbapi = registry.load(make_drivername(self._url)).import_dbapi()
        except ImportError as exc:
            default, _ = ASYNC_DRIVERS[kind]
            if self._driver == default:
                hint = f"pip install 'tracker[{_EXTRAS[kind]}]'"
            else:
                hint = f"pip install {exc.name or self._driver}, or use {kind}:// ({default})"
            raise InvalidInputError(f"{exc.name or self._driver} is not installed: {hint}") from exc
        style = _PARAMSTYLES.get(getattr(dbapi, "paramstyle", ""), "")
        if kind == "postgresql" and self._driver == "asyncpg":
            style = "numeric_dollar"  # the adapter binds $n natively
        if not style:
            raise InvalidInputError(f"the {self._driver} driver's paramstyle is not supported")
        if kind == "postgresql":
            return Dialect("postgres", POSTGRES_TYPES, paramstyle=style)
        if kind == "mysql":
            return Dialect("mysql", MYSQL_TYPES, paramstyle=style, supports_nan=False)
        return Dialect("sqlite", SQLITE_TYPES, paramstyle=style)

    # -- connections -------------------------------------------------------------------------

    async def open(self, create: bool = True) -> None:
        if self._engine is not None:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import make_url
        from sqlalchemy.ext.asyncio import create_async_engine

        kind = self._flavour.kind
        connect_args = dict(self._connect_args)
        database = make_url(self._url).database
        if kind == "sqlite" and database and database != ":memory:":
            if not create and not await asyncio.to_thread(os.path.isfile, database):
                raise NotFoundError(f"no tracker store at {database}: the file does not exist")
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        if kind == "mysql":
            connect_args.setdefault("charset", "utf8mb4")
            if self._driver == "aiomysql":
                _mend_aiomysql()
        engine = create_async_engine(
            self._url, isolation_level="AUTOCOMMIT", pool_size=self._pool_size, max_overflow=_MAX_OVERFLOW,
            pool_recycle=3600, pool_reset_on_return=None, connect_args=connect_args,
        )  # fmt: skip
        event.listen(engine.sync_engine, "connect", _ON_CONNECT[kind])
        self._engine = engine
        try:
            if kind == "mysql":
                async with self.transaction() as s:
                    rows = await s.fetchall("SELECT DATABASE()")
                # Named locks are server-wide: key them by database, within the 64-char limit.
                database = str(rows[0][0] or "")
                self._lock_prefix = "tracker." + hashlib.sha1(database.encode()).hexdigest()[:24]
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
        if self._flavour.kind == "mysql" and _mysql_code(exc) in _MYSQL_UNAVAILABLE:
            return True
        orig = getattr(exc, "orig", None)
        return isinstance(exc, OSError | TimeoutError) or isinstance(orig, OSError | TimeoutError)

    def _translate(self, exc: BaseException) -> BaseException:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, TrackerError):
            return exc
        if self._unavailable(exc):
            return StoreUnavailableError(f"{self._flavour.kind} is unavailable: {_message(exc)}")
        if isinstance(exc, SQLAlchemyError):
            return StoreError(f"{self._flavour.kind}: {_message(exc)}")
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
            session = _Session(conn, self.dialect.paramstyle)
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

    async def _append(self, unique: dict[bytes, NewEvent], encoded: Encoded) -> list[RecordedEvent]:
        # As PostgresEventStore. If the connection is lost mid-append, the log itself says
        # whether the batch committed (see _committed).
        return await self._append_optimistically(unique, encoded)

    async def _insert(
        self, unique: dict[bytes, NewEvent], encoded: Encoded,
        *, skip_known: bool,
    ) -> list[RecordedEvent]:  # fmt: skip
        out: list[RecordedEvent] = []
        try:
            async with self.transaction() as s:
                await self._lock_log(s)
                fresh = list(unique.values())
                if skip_known:
                    known = await self._known_ids(s, list(unique))
                    fresh = [e for e in fresh if e.event_id not in known]
                    if not fresh:
                        return []
                head = int((await s.fetchall("SELECT MAX(position) FROM events"))[0][0] or 0)
                rows, out = numbered(fresh, encoded, head)
                await s.executemany(self.dialect.sql(INSERT_EVENTS), rows)
        except StoreUnavailableError:
            if not out or not await self._committed(out[0]):
                raise
        except StoreError as exc:
            if not self._is_unique_violation(exc):
                raise
            raise self._insert_refused(unique, skip_known=skip_known) from exc
        return out

    async def _committed(self, first: RecordedEvent) -> bool:
        """Whether an append whose COMMIT went unanswered is in the log. Under the log lock no
        append is in flight any more, and a batch is all in or all out: it committed exactly
        when its first event is at the position it was given. Raises StoreUnavailableError if
        the database cannot be asked in time."""
        deadline = time.monotonic() + _IN_DOUBT_TIMEOUT
        delay = 0.02
        while True:
            try:
                async with self.transaction() as s:
                    await self._lock_log(s)
                    rows = await s.fetchall(
                        self.dialect.sql("SELECT position FROM events WHERE event_id = ?"),
                        (first.event_id,),
                    )
                return bool(rows) and int(rows[0][0]) == first.position
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- locks and schema --------------------------------------------------------------------

    async def _named_lock(self, session: Any, name: str) -> None:
        full = f"{self._lock_prefix}.{name}"
        rows = await session.fetchall(self.dialect.sql("SELECT GET_LOCK(?, ?)"), (full, _LOCK_WAIT))
        if rows[0][0] != 1:
            raise StoreUnavailableError(
                f"waited {_LOCK_WAIT}s for MySQL lock {name!r}: another tracker process holds it"
            )
        session.held.append(full)

    async def _release_locks(self, session: _Session) -> bool:
        try:
            while session.held:
                await session.conn.exec_driver_sql(
                    self.dialect.sql("SELECT RELEASE_LOCK(?)"), (session.held[-1],)
                )
                session.held.pop()
        except Exception:
            return False
        return True

    async def _lock(self, session: Any, name: str) -> None:
        kind = self._flavour.kind
        if kind == "postgresql":
            await session.execute(_POSTGRES_LOCKS[name])
        elif kind == "mysql":
            await self._named_lock(session, name)
        # SQLite: BEGIN IMMEDIATE already holds the database's single write lock.

    async def _lock_log(self, session: Any) -> None:
        await self._lock(session, "log")

    async def lock_projection(self, session: Any) -> None:
        await self._lock(session, "projection")

    async def _lock_schema(self, session: Any) -> None:
        await self._lock(session, "schema")

    async def _table_exists(self, session: Any, table: str) -> bool:
        kind = self._flavour.kind
        if kind == "postgresql":
            sql = TABLE_EXISTS_SQL
        elif kind == "mysql":
            sql = (
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = ?"
            )
        else:
            sql = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
        rows = await session.fetchall(self.dialect.sql(sql), (table,))
        return bool(rows[0][0])

    async def _mysql_collation(self) -> str:
        """A binary collation, so that keys differing in case or trailing spaces stay distinct
        as in every other backend (MySQL's defaults are case-insensitive and pad spaces)."""
        async with self.snapshot() as s:
            rows = await s.fetchall(
                "SELECT collation_name FROM information_schema.collations "
                "WHERE collation_name IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')"
            )
        names = {r[0] for r in rows}
        for name in ("utf8mb4_nopad_bin", "utf8mb4_0900_bin"):
            if name in names:
                return name
        return "utf8mb4_bin"

    def ddl(self, tables: Sequence[Table]) -> list[str]:
        if self._flavour.kind == "postgresql":
            return postgres_ddl(tables)
        if self._flavour.kind != "mysql":
            return super().ddl(tables)
        # MySQL commits each DDL statement by itself, so a crash can leave part of the schema:
        # every table is created whole (indexes inline; MySQL has no CREATE INDEX IF NOT
        # EXISTS) and IF NOT EXISTS, so that the next start completes it.
        out = []
        for t in tables:
            create, *_ = create_table_sql(t, self.dialect.types, if_not_exists=True)
            indexes = "".join(
                f", INDEX ix_{t.name}_{i} ({', '.join(cols)})" for i, cols in enumerate(t.indexes)
            )
            options = f"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={self._collation}"
            out.append(f"{create[:-1]}{indexes}) {options}")
        return out

    async def _forbid_event_changes(self, session: Any) -> None:
        kind = self._flavour.kind
        if kind == "postgresql":
            for stmt in FORBID_EVENT_CHANGES_SQL:
                await session.execute(stmt)
            return
        for op in ("UPDATE", "DELETE"):
            name = f"events_no_{op.lower()}"
            message = f"the event log is append-only: {op} is refused"
            if kind == "mysql":
                await session.execute(f"DROP TRIGGER IF EXISTS {name}")
                await session.execute(
                    f"CREATE TRIGGER {name} BEFORE {op} ON events FOR EACH ROW "
                    f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'"
                )
            else:
                await session.execute(
                    f"CREATE TRIGGER {name} BEFORE {op} ON events "
                    f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
                )

    def _is_unique_violation(self, exc: BaseException) -> bool:
        seen: BaseException | None = exc
        for _ in range(5):
            if seen is None:
                return False
            orig = getattr(seen, "orig", None)
            if sqlstate(seen) == UNIQUE_VIOLATION or _mysql_code(seen) in _MYSQL_DUPLICATE:
                return True
            if (
                orig is not None
                and type(orig).__name__ == "IntegrityError"
                and "UNIQUE" in str(orig)
            ):
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
    for pragma in ("journal_mode = WAL", "busy_timeout = 30000", "synchronous = full"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _no_setup(dbapi_connection: Any, _record: Any) -> None:
    pass


_ON_CONNECT: Final = {"mysql": _mysql_connect, "sqlite": _sqlite_connect, "postgresql": _no_setup}
