"""PostgresEventStore: the log and views in PostgreSQL through an asyncpg connection pool."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from tracker.errors import (
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
    TrackerError,
)
from tracker.events import NewEvent, RecordedEvent
from tracker.stores.base import Dialect, Encoded, EventStore, Row, numbered
from tracker.stores.schema import POSTGRES_TYPES, Table, create_table_sql
from tracker.stores.uris import mask_password

if TYPE_CHECKING:
    import asyncpg

POSTGRES: Final = Dialect("postgres", POSTGRES_TYPES, paramstyle="numeric_dollar")

# PostgreSQL SQL shared with the SQLAlchemy backend, in `?` style.
# Advisory locks are keyed (kind, hash of the schema the tables live in): trackers in different
# schemas of one database do not block each other; every tracker in one schema shares them.
_LOCK_NAMESPACE: Final = 0x74726B00  # "trk\0"
_LOCK_SQL: Final = "SELECT pg_advisory_xact_lock({kind}, hashtext(coalesce(current_schema(), '')))"
LOCK_LOG_SQL: Final = _LOCK_SQL.format(kind=_LOCK_NAMESPACE + 1)
LOCK_PROJECTION_SQL: Final = _LOCK_SQL.format(kind=_LOCK_NAMESPACE + 2)
LOCK_SCHEMA_SQL: Final = _LOCK_SQL.format(kind=_LOCK_NAMESPACE + 3)
TABLE_EXISTS_SQL: Final = "SELECT to_regclass(?) IS NOT NULL"
FORBID_EVENT_CHANGES_SQL: Final = (
    "CREATE FUNCTION tracker_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'the event log is append-only: % is refused', TG_OP; END $$",
    "CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
    "FOR EACH ROW EXECUTE FUNCTION tracker_events_append_only()",
    "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
    "FOR EACH STATEMENT EXECUTE FUNCTION tracker_events_append_only()",
)
UNIQUE_VIOLATION: Final = "23505"


def postgres_ddl(tables: Sequence[Table]) -> list[str]:
    """CREATE statements for PostgreSQL. Blob columns hold zlib-compressed metric columns, so
    they are stored out of line uncompressed: TOAST would spend most of an insert's time
    failing to compress them again."""
    out: list[str] = []
    for t in tables:
        out.extend(create_table_sql(t, POSTGRES_TYPES, if_not_exists=False))
        for c in t.columns:
            if c.type == "blob":
                out.append(f"ALTER TABLE {t.name} ALTER COLUMN {c.name} SET STORAGE EXTERNAL")
    return out


# Connection failures, server shutdown or restart, and too many connections: worth a retry.
UNAVAILABLE_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P03", "53300"})

_DEFAULT_PORT: Final = 5432
_IN_DOUBT_TIMEOUT: Final = 30.0
_INSERT_EVENTS: Final = (
    "INSERT INTO events (position, event_id, stream_id, seq, event_type, schema_version, "
    "recorded_at, payload) SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], "
    "$4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::bytea[])"
)
_HEAD_AND_XID: Final = "SELECT coalesce(max(position), 0), txid_current() FROM events"
_KNOWN_IDS: Final = "SELECT event_id FROM events WHERE event_id = ANY($1::bytea[])"


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error or of one it wraps (SQLAlchemy keeps it in `orig`)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        code = getattr(seen, "sqlstate", None)
        if isinstance(code, str):
            return code
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def is_unavailable_sqlstate(code: str | None) -> bool:
    return code is not None and (code.startswith("08") or code in UNAVAILABLE_SQLSTATES)


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:
        raise InvalidInputError(
            f"{exc.name or 'asyncpg'} is not installed: pip install 'tracker[postgres]'"
        ) from exc
    return asyncpg


async def _keep_session(conn: Any) -> None:
    """Pool reset: nothing. Our sessions change no settings and take only transaction-level
    locks, so asyncpg's default reset query would cost a round trip per release for nothing
    (the pool still rolls back a transaction left open)."""


class _Session:
    __slots__ = ("conn",)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self.conn.execute(sql, *params)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in await self.conn.fetch(sql, *params)]


class PostgresEventStore(EventStore):
    """The log and views in one PostgreSQL schema, through a pool of asyncpg connections.

    Commit order: an append takes a transaction-level advisory lock before it reads the head,
    and PostgreSQL releases that lock only after the commit is visible to every new snapshot.
    So the appender that numbers the next events always sees the previous append committed,
    positions are handed out in commit order, and a follower that has read position p can never
    later find a smaller position committing: a late commit cannot be skipped.

    `dsn` is a libpq-style URI (postgresql://user:password@host:port/database?sslmode=...);
    query parameters asyncpg does not know become server settings, so `?search_path=tracker`
    puts the tables in schema `tracker` (which must exist), as does `schema=`.
    Connections that the server dropped are replaced; connection failures raise
    StoreUnavailableError, which the writer retries.
    """

    dialect = POSTGRES

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 10.0,
        server_settings: Mapping[str, str] | None = None,
        artifact_root: str | None = None,
    ) -> None:
        self._dsn = dsn
        self.uri = mask_password(dsn)
        self.default_artifact_root = artifact_root or os.path.abspath("mlruns")
        self._settings = dict(server_settings or {})
        if schema is not None:
            self._settings["search_path"] = schema
        self._min_size, self._max_size = min_size, max_size
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._asyncpg = _asyncpg()

    def __repr__(self) -> str:
        return f"PostgresEventStore({self.uri!r})"

    # -- connections -------------------------------------------------------------------------

    async def open(self, create: bool = True) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await self._asyncpg.create_pool(
                self._dsn, min_size=self._min_size, max_size=self._max_size,
                timeout=self._connect_timeout, server_settings=self._settings or None,
                reset=_keep_session,
            )  # fmt: skip
        except Exception as exc:
            raise self._open_error(exc) from exc
        try:
            await self.upgrade(create)
        except BaseException:
            await self.aclose()
            raise

    def _open_error(self, exc: BaseException) -> TrackerError:
        where = urlsplit(self._dsn)
        target = f"{where.hostname or 'localhost'}:{where.port or _DEFAULT_PORT}{where.path or '/'}"
        code = sqlstate(exc)
        if code == "3D000":
            return StoreError(f"PostgreSQL at {target}: {exc}; create it first (createdb)")
        if code is not None and code.startswith("28"):
            return StoreError(f"PostgreSQL at {target} refused the credentials: {exc}")
        if isinstance(exc, self._asyncpg.ClientConfigurationError | ValueError):
            return InvalidInputError(f"bad PostgreSQL URI {self.uri!r}: {exc}")
        return StoreUnavailableError(f"cannot connect to PostgreSQL at {target}: {exc}")

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 10)
            except Exception:  # including the timeout
                pool.terminate()

    def _unavailable(self, exc: BaseException, conn: Any = None) -> bool:
        if is_unavailable_sqlstate(sqlstate(exc)):
            return True
        if isinstance(exc, OSError | TimeoutError | self._asyncpg.ConnectionDoesNotExistError):
            return True
        try:
            return conn is not None and bool(conn.is_closed())
        except self._asyncpg.InterfaceError:
            return True  # released to the pool after it failed

    def _translate(self, exc: BaseException, conn: Any = None) -> BaseException:
        """The tracker error for a driver error; other exceptions unchanged."""
        if self._unavailable(exc, conn):
            return StoreUnavailableError(f"PostgreSQL is unavailable: {type(exc).__name__}: {exc}")
        if isinstance(exc, self._asyncpg.PostgresError | self._asyncpg.InterfaceError):
            return StoreError(f"PostgreSQL: {exc}")
        return exc

    @asynccontextmanager
    async def _begin(self, **options: Any) -> AsyncIterator[tuple[Any, Any]]:
        """A pooled connection inside a started transaction. A connection that died while
        idle in the pool is only found out when used: BEGIN is retried on a fresh one."""
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open: call `await store.open()` first")
        # Every pooled connection may be dead after a server restart, and the pool only
        # learns it when one is used: try one more time than the pool can hold.
        attempts = self._max_size + 1
        for attempt in range(attempts):
            try:
                conn = await pool.acquire()
            except Exception as exc:
                raise self._translate(exc) from exc
            tx = conn.transaction(**options)
            try:
                await tx.start()
            except BaseException as exc:
                translated = self._translate(exc, conn)
                await self._release(pool, conn)
                if attempt + 1 < attempts and isinstance(translated, StoreUnavailableError):
                    continue
                if translated is exc:
                    raise
                raise translated from exc
            break
        try:
            yield conn, tx
        finally:
            await self._release(pool, conn)

    async def _release(self, pool: Any, conn: Any) -> None:
        # On failure the pool has terminated the connection and opens a new one on demand.
        with suppress(Exception):
            await pool.release(conn)

    @asynccontextmanager
    async def _run(self, **options: Any) -> AsyncIterator[_Session]:
        async with self._begin(**options) as (conn, tx):
            try:
                yield _Session(conn)
            except BaseException as exc:
                with suppress(Exception):
                    await tx.rollback()
                translated = self._translate(exc, conn)
                if translated is exc:
                    raise
                raise translated from exc
            try:
                await tx.commit()
            except Exception as exc:
                raise self._translate(exc, conn) from exc

    def transaction(self) -> Any:
        return self._run()

    def snapshot(self) -> Any:
        return self._run(isolation="repeatable_read", readonly=True)

    # -- locks and schema --------------------------------------------------------------------

    async def _lock_log(self, session: Any) -> None:
        await session.execute(LOCK_LOG_SQL)

    async def lock_projection(self, session: Any) -> None:
        await session.execute(LOCK_PROJECTION_SQL)

    async def _lock_schema(self, session: Any) -> None:
        # DDL is transactional in PostgreSQL: the lock and the new tables commit together.
        await session.execute(LOCK_SCHEMA_SQL)

    async def _table_exists(self, session: Any, table: str) -> bool:
        # Not base's probe-by-SELECT: an error would abort the whole PostgreSQL transaction.
        rows = await session.fetchall(self.dialect.sql(TABLE_EXISTS_SQL), (table,))
        return bool(rows[0][0])

    def ddl(self, tables: Sequence[Table]) -> list[str]:
        return postgres_ddl(tables)

    async def _forbid_event_changes(self, session: Any) -> None:
        for stmt in FORBID_EVENT_CHANGES_SQL:
            await session.execute(stmt)

    def _is_unique_violation(self, exc: BaseException) -> bool:
        return sqlstate(exc) == UNIQUE_VIOLATION

    # -- the log -------------------------------------------------------------------------------

    async def _append(self, unique: dict[bytes, NewEvent], encoded: Encoded) -> list[RecordedEvent]:
        # Looking ids up first costs a query per append, which PostgreSQL may plan as a scan
        # of the whole log.
        return await self._append_optimistically(unique, encoded)

    async def _insert(
        self, unique: dict[bytes, NewEvent], encoded: Encoded,
        *, skip_known: bool,
    ) -> list[RecordedEvent]:  # fmt: skip
        """One append transaction: lock, head and xid, one INSERT of arrays. If the connection
        is lost around COMMIT, the transaction id tells whether the batch is in, so that the
        caller's retry does not store it twice."""
        out: list[RecordedEvent] = []
        xid: int | None = None
        try:
            async with self.transaction() as s:
                await s.execute(LOCK_LOG_SQL)
                head, xid = (await s.fetchall(_HEAD_AND_XID))[0]
                fresh = list(unique.values())
                if skip_known:
                    rows = await s.fetchall(_KNOWN_IDS, (list(unique),))
                    known = {bytes(r[0]) for r in rows}
                    fresh = [e for e in fresh if e.event_id not in known]
                    if not fresh:
                        return []
                rows, out = numbered(fresh, encoded, int(head))
                await s.execute(_INSERT_EVENTS, [list(col) for col in zip(*rows, strict=True)])
        except StoreUnavailableError:
            if xid is None or not await self._committed(int(xid)):
                raise
        except StoreError as exc:
            if not self._is_unique_violation(exc):
                raise
            raise self._insert_refused(unique, skip_known=skip_known) from exc
        return out

    async def _committed(self, xid: int) -> bool:
        """Whether a transaction whose outcome we did not hear committed; waits while the server
        still finishes it. Raises StoreUnavailableError if it cannot find out in time."""
        deadline = time.monotonic() + _IN_DOUBT_TIMEOUT
        delay = 0.02
        while True:
            try:
                async with self.snapshot() as s:
                    status = (await s.fetchall("SELECT txid_status($1)", (xid,)))[0][0]
                if status in ("committed", "aborted"):
                    return bool(status == "committed")
            except StoreUnavailableError:
                pass
            if time.monotonic() > deadline:
                raise StoreUnavailableError(
                    f"lost the connection while committing transaction {xid} and could not "
                    "find out whether it committed"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
