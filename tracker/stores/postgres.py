"""PostgresEventStore: the log and views in PostgreSQL through an asyncpg connection pool."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import sqlalchemy as sa
import stamina

from tracker.errors import (
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
    TrackerError,
)
from tracker.events import NewEvent, RecordedEvent
from tracker.stores.base import Encoded, Row, SqlEventStore, numbered
from tracker.stores.schema import BLOB_COLUMNS
from tracker.stores.sql import Params, Statement, compiled
from tracker.stores.uris import mask_password

if TYPE_CHECKING:
    import asyncpg

# Advisory locks are keyed (kind, hash of the schema the tables live in): trackers in different
# schemas of one database do not block each other; every tracker in one schema shares them.
_LOCK_NAMESPACE: Final = 0x74726B00  # "trk\0"
_LOCK_SQL: Final = "SELECT pg_advisory_xact_lock({kind}, hashtext(coalesce(current_schema(), '')))"
LOCK_LOG_SQL: Final = _LOCK_SQL.format(kind=_LOCK_NAMESPACE + 1)
LOCK_PROJECTION_SQL: Final = _LOCK_SQL.format(kind=_LOCK_NAMESPACE + 2)
LOCK_SCHEMA_SQL: Final = _LOCK_SQL.format(kind=_LOCK_NAMESPACE + 3)
TABLE_EXISTS: Final = sa.text("SELECT to_regclass(:t) IS NOT NULL")
APPEND_ONLY_DDL: Final = (
    "CREATE FUNCTION tracker_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'the event log is append-only: % is refused', TG_OP; END $$",
    "CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
    "FOR EACH ROW EXECUTE FUNCTION tracker_events_append_only()",
    "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
    "FOR EACH STATEMENT EXECUTE FUNCTION tracker_events_append_only()",
)
UNIQUE_VIOLATION: Final = "23505"
# Connection failures, server shutdown or restart, and too many connections: worth a retry.
UNAVAILABLE_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P03", "53300"})

_DEFAULT_PORT: Final = 5432
_IN_DOUBT_TIMEOUT: Final = 30.0
_ROLLBACK_TIMEOUT: Final = 5.0
# One append is three round trips: BEGIN with the log lock; the head read inside the INSERT
# (a new statement, so under READ COMMITTED it sees every append committed before the lock was
# granted); COMMIT. Arrays through unnest make one INSERT of any batch size.
_BEGIN_AND_LOCK: Final = f"BEGIN ISOLATION LEVEL READ COMMITTED; {LOCK_LOG_SQL}"
_INSERT_EVENTS: Final = (
    "WITH h AS (SELECT coalesce(max(position), 0) AS head, txid_current() AS xid FROM events), "
    "ins AS (INSERT INTO events (position, event_id, stream_id, seq, event_type, schema_version, "
    "recorded_at, payload) SELECT h.head + t.ord, t.event_id, t.stream_id, t.seq, t.event_type, "
    "t.schema_version, t.recorded_at, t.payload FROM h, unnest($1::bytea[], $2::text[], "
    "$3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::bytea[]) WITH ORDINALITY AS "
    "t(event_id, stream_id, seq, event_type, schema_version, recorded_at, payload, ord)) "
    "SELECT head, xid FROM h"
)
_KNOWN_IDS: Final = "SELECT event_id FROM events WHERE event_id = ANY($1::bytea[])"


def postgres_ddl_extras() -> list[str]:
    """Blob columns hold zlib-compressed metric columns, so they are stored out of line
    uncompressed: TOAST would spend most of an insert's time failing to compress them again,
    and slices of them (the metric views' reads) can then be fetched without the rest."""
    return [f"ALTER TABLE {t} ALTER COLUMN {c} SET STORAGE EXTERNAL" for t, c in BLOB_COLUMNS]


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


async def _rollback(conn: Any) -> None:
    """Roll back, or, when that fails (the connection is dead or was left mid-operation by a
    cancellation), terminate the connection so that the pool never hands it out again."""
    try:
        await asyncio.wait_for(conn.execute("ROLLBACK"), _ROLLBACK_TIMEOUT)
    except BaseException:
        # A connection the server closed has already gone back to the pool, whose proxy then
        # refuses every call, terminate() included: there is nothing left to end.
        with suppress(Exception):
            conn.terminate()


class _InProgress(Exception):
    """The server has not finished the transaction yet."""


def _rowcount(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _Session:
    __slots__ = ("conn",)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, statement: Statement, params: Params | None = None) -> int:
        cp = compiled(statement, "postgresql")
        return _rowcount(await self.conn.execute(cp.sql, *cp.args(params)))

    async def executemany(self, statement: Statement, rows: Sequence[Params]) -> None:
        if rows:
            cp = compiled(statement, "postgresql")
            await self.conn.executemany(cp.sql, [cp.args(r) for r in rows])

    async def fetchall(self, statement: Statement, params: Params | None = None) -> list[Row]:
        cp = compiled(statement, "postgresql")
        return [tuple(r) for r in await self.conn.fetch(cp.sql, *cp.args(params))]

    async def execute_batch(self, ops: Sequence[tuple[Statement, Sequence[Params]]]) -> None:
        for statement, rows in ops:
            await self.executemany(statement, rows)

    async def execute_raw(self, sql: str) -> None:
        await self.conn.execute(sql)


class PostgresEventStore(SqlEventStore):
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
    StoreUnavailableError, which callers retry.
    """

    family = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 10.0,
        command_timeout: float | None = 60.0,
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
        self._command_timeout = command_timeout
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
                timeout=self._connect_timeout, command_timeout=self._command_timeout,
                server_settings=self._settings or None, reset=_keep_session,
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
        # A connection that is gone, or left mid-operation by a failure: another one may work.
        broken = (OSError, TimeoutError, self._asyncpg.ConnectionDoesNotExistError,
                  self._asyncpg.InternalClientError, self._asyncpg.InterfaceError)  # fmt: skip
        if isinstance(exc, broken):
            return True
        try:
            return conn is not None and bool(conn.is_closed())
        except self._asyncpg.InterfaceError:
            return True  # released to the pool after it failed

    def _translate(self, exc: BaseException, conn: Any = None) -> BaseException:
        """The tracker error for a driver error; other exceptions unchanged."""
        if isinstance(exc, TrackerError):
            return exc
        if self._unavailable(exc, conn):
            return StoreUnavailableError(f"PostgreSQL is unavailable: {type(exc).__name__}: {exc}")
        if isinstance(exc, self._asyncpg.PostgresError | self._asyncpg.InterfaceError):
            return StoreError(f"PostgreSQL: {exc}")
        if isinstance(exc, UnicodeEncodeError | ValueError | TypeError):
            return StoreError(f"PostgreSQL refused a value: {type(exc).__name__}: {exc}")
        return exc

    @asynccontextmanager
    async def _connection(self, begin: str | None) -> AsyncIterator[Any]:
        """A pooled connection, inside a transaction begun with `begin` (one round trip). A
        connection that died while idle in the pool is only found out when used: BEGIN is
        retried on a fresh one, once more than the pool holds (all may be dead after a restart)."""
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open: call `await store.open()` first")
        attempts = self._max_size + 1
        for attempt in range(attempts):
            try:
                conn = await pool.acquire(timeout=self._connect_timeout)
            except Exception as exc:
                raise self._translate(exc) from exc
            if begin is None:
                break
            try:
                await conn.execute(begin)
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
            yield conn
        finally:
            await self._release(pool, conn)

    async def _release(self, pool: Any, conn: Any) -> None:
        # On failure the pool has terminated the connection and opens a new one on demand.
        with suppress(Exception):
            await pool.release(conn)

    @asynccontextmanager
    async def _run(self, begin: str) -> AsyncIterator[_Session]:
        async with self._connection(begin) as conn:
            try:
                yield _Session(conn)
            except BaseException as exc:
                await _rollback(conn)
                translated = self._translate(exc, conn)
                if translated is exc:
                    raise
                raise translated from exc
            try:
                await conn.execute("COMMIT")
            except Exception as exc:
                raise self._translate(exc, conn) from exc

    def transaction(self) -> Any:
        return self._run("BEGIN ISOLATION LEVEL READ COMMITTED")

    def snapshot(self) -> Any:
        return self._run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    # -- locks and schema --------------------------------------------------------------------

    async def _lock_log(self, session: Any) -> None:
        await session.execute_raw(LOCK_LOG_SQL)

    async def lock_projection(self, session: Any) -> None:
        await session.execute_raw(LOCK_PROJECTION_SQL)

    async def _lock_schema(self, session: Any) -> None:
        # DDL is transactional in PostgreSQL: the lock and the new tables commit together.
        await session.execute_raw(LOCK_SCHEMA_SQL)

    async def _table_exists(self, session: Any, table: str) -> bool:
        # Not a probe by SELECT: an error would abort the whole PostgreSQL transaction.
        rows = await session.fetchall(TABLE_EXISTS, {"t": table})
        return bool(rows[0][0])

    def ddl(self, table: sa.Table) -> list[str]:
        out = super().ddl(table)
        out += [s for s in postgres_ddl_extras() if f" {table.name} " in s]
        return out

    def _append_only_ddl(self) -> list[str]:
        return list(APPEND_ONLY_DDL)

    # -- the log -------------------------------------------------------------------------------

    async def _insert(
        self, unique: dict[bytes, NewEvent], encoded: Encoded, *, skip_known: bool
    ) -> list[RecordedEvent]:
        """One append transaction in three round trips. If the connection is lost around
        COMMIT, the transaction id tells whether the batch is in, so that the caller's retry
        does not store it twice."""
        fresh = list(unique.values())
        xid: int | None = None
        out: list[RecordedEvent] = []
        try:
            async with self._connection(_BEGIN_AND_LOCK) as conn:
                try:
                    if skip_known:
                        rows = await conn.fetch(_KNOWN_IDS, list(unique))
                        known = {bytes(r[0]) for r in rows}
                        fresh = [e for e in fresh if e.event_id not in known]
                    if fresh:
                        columns = [
                            [e.event_id for e in fresh], [e.stream_id for e in fresh],
                            [e.sequence for e in fresh], [encoded[e.event_id][0] for e in fresh],
                            [encoded[e.event_id][1] for e in fresh],
                            [e.recorded_at for e in fresh], [encoded[e.event_id][2] for e in fresh],
                        ]  # fmt: skip
                        head, xid = await conn.fetchrow(_INSERT_EVENTS, *columns)
                        _, out = numbered(fresh, encoded, int(head))
                    await conn.execute("COMMIT")
                except BaseException:
                    await _rollback(conn)
                    raise
        except Exception as exc:
            translated = self._translate(exc)
            if sqlstate(exc) == UNIQUE_VIOLATION:
                raise self._insert_refused(unique, skip_known=skip_known) from exc
            unsure = isinstance(translated, StoreUnavailableError) and xid is not None
            if unsure and await self._committed(int(xid)):  # type: ignore[arg-type]
                return out
            if translated is exc:
                raise
            raise translated from exc
        return out

    async def _committed(self, xid: int) -> bool:
        """Whether a transaction whose outcome we did not hear committed; waits while the server
        still finishes it. Raises StoreUnavailableError if it cannot find out in time."""
        try:
            async for attempt in stamina.retry_context(
                on=(StoreUnavailableError, _InProgress), attempts=None,
                timeout=_IN_DOUBT_TIMEOUT, wait_initial=0.02, wait_max=1.0, wait_jitter=0.05,
            ):  # fmt: skip
                with attempt:
                    async with self.snapshot() as s:
                        rows = await s.fetchall(sa.text("SELECT txid_status(:x)"), {"x": xid})
                    status = rows[0][0]
                    if status not in ("committed", "aborted"):
                        raise _InProgress(status)
                    return bool(status == "committed")
        except (StoreUnavailableError, _InProgress) as exc:
            raise StoreUnavailableError(
                f"lost the connection while committing transaction {xid} and could not "
                f"find out in {_IN_DOUBT_TIMEOUT:.0f}s whether it committed ({exc})"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover
