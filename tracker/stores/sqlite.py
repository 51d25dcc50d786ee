"""SQLiteEventStore: the embedded default, one SQLite file in WAL mode, each connection on a thread."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import sqlalchemy as sa
import stamina

from tracker.errors import NotFoundError, StoreError, StoreUnavailableError
from tracker.events import NewEvent, RecordedEvent
from tracker.stores.base import (
    E,
    Encoded,
    Row,
    SqlEventStore,
    known_ids_statement,
    numbered,
)
from tracker.stores.sql import Params, Statement, chunks, compiled, in_params, insert

T = TypeVar("T")
_SYNCHRONOUS: Final = ("off", "normal", "full", "extra")
_INSERT_EVENTS: Final = insert(E)
_HEAD: Final = sa.select(sa.func.max(E.c.position))
# SQLite result codes worth a retry: busy or locked (another process writes), full (space may
# come back), I/O errors (a network file system's hiccup).
_TRANSIENT: Final = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR"})
BUSY_PRAGMA_TIMEOUT: Final = 30.0  # as long as busy_timeout waits for a lock elsewhere
HANDOFF_EVERY: Final = 0.0005
HANDOFF_SLEEP: Final = 0.0001


class _Handoff:
    """While calls run on connections' threads, the event loop's thread gives those threads
    the GIL: every HANDOFF_EVERY seconds it sleeps HANDOFF_SLEEP, until no call is in flight.
    One per event loop, however many calls and connections are busy.

    Why: a thread that waits for the GIL asks its holder to drop it only when no thread took
    the GIL during the last switch interval (5 ms). An event loop that is busy (a training loop
    awaiting between steps) releases and retakes the GIL at every iteration, in its zero-timeout
    poll, every fraction of a millisecond; each counts as a switch, so the request is never
    made and the connection's thread gets the GIL only when it wins a race it mostly loses. A
    batch's commit then took 0.4 to 2.7 s instead of 15 ms, and the queue spilled. A sleep
    releases the GIL long enough for the waiting thread to take it. The cost is bounded: at
    most a fifth of the loop's time, only while a call is in flight, and none for calls shorter
    than HANDOFF_EVERY; an idle loop sleeps in its poll and hands the GIL over anyway.
    benchmarks/ingest.py --sample-window measures the effect (benchmarks/RESULTS.md)."""

    _of_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Handoff]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.calls = 0
        self.timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Handoff:
        handoff = cls._of_loop.get(loop)
        if handoff is None:
            handoff = cls._of_loop[loop] = cls(loop)
        return handoff

    def begin(self) -> None:
        self.calls += 1
        if self.timer is None:
            self.timer = self.loop.call_later(HANDOFF_EVERY, self._nudge)

    def end(self) -> None:
        self.calls -= 1  # the timer stops at its next turn once no call is left

    def _nudge(self) -> None:
        self.timer = None
        if self.calls <= 0:
            return
        time.sleep(HANDOFF_SLEEP)
        self.timer = self.loop.call_later(HANDOFF_EVERY, self._nudge)


class _Connection:
    """A sqlite3 connection used only from its own thread.

    Why not aiosqlite: it hops to its thread once per statement and offers no public way to run
    a whole transaction in one hop. Under a training loop that holds the GIL, each hop waits for
    the loop, so a batch of twenty statements took seconds; here an append is one hop, and
    `_Handoff` makes sure the thread gets the GIL while it runs.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracker-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the connection's thread, translating sqlite3's errors."""
        loop = asyncio.get_running_loop()
        handoff = _Handoff.of(loop)
        handoff.begin()
        try:
            return await loop.run_in_executor(self._executor, self._run, fn)
        finally:
            handoff.end()

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreError(f"the SQLite connection to {self.path} is closed")
        try:
            return fn(self._conn)
        except sqlite3.Error as exc:
            raise translate(self.path, exc) from exc

    async def connect(self, target: str, pragmas: Sequence[str]) -> None:
        def connect() -> None:
            conn = sqlite3.connect(target, uri=True, isolation_level=None, check_same_thread=False)
            try:
                for pragma in pragmas:
                    _pragma(conn, pragma)
            except BaseException:
                conn.close()
                raise
            self._conn = conn

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, connect)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, close)
        finally:
            self._executor.shutdown(wait=False)


def _busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY") or "locked" in str(exc)
    )


def _pragma(conn: sqlite3.Connection, pragma: str) -> None:
    run_pragma(lambda sql: conn.execute(sql).fetchall(), pragma)


def run_pragma(execute: Callable[[str], object], pragma: str) -> None:
    """Run one PRAGMA through `execute` (which runs a statement and fetches its rows). Switching
    a fresh file to WAL needs its exclusive lock, and SQLite answers SQLITE_BUSY at once there
    instead of calling the busy handler, so processes or connections that open a fresh store
    together retry it (jittered, for at most BUSY_PRAGMA_TIMEOUT seconds)."""
    for attempt in stamina.retry_context(
        on=_busy, attempts=None, timeout=BUSY_PRAGMA_TIMEOUT,
        wait_initial=0.005, wait_max=0.5, wait_jitter=0.05,
    ):  # fmt: skip
        with attempt:
            execute(f"PRAGMA {pragma}")


def translate(path: Path, exc: sqlite3.Error) -> StoreError:
    """The tracker error for a sqlite3 error: what is worth a retry is StoreUnavailableError."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    base = name.split("_", 2)[:2]
    family = "_".join(base)
    if family == "SQLITE_FULL":
        return StoreUnavailableError(
            f"disk full at {path}: {exc}; free space there (writes are retried until it is back)"
        )
    if family in _TRANSIENT or (not name and "locked" in str(exc)):
        return StoreUnavailableError(f"SQLite at {path} is busy or failing: {exc}")
    return StoreError(f"SQLite at {path}: {exc}")


def _execute(sql: str, args: tuple[Any, ...]) -> Callable[[sqlite3.Connection], int]:
    return lambda c: c.execute(sql, args).rowcount


def _fetch(sql: str, args: tuple[Any, ...]) -> Callable[[sqlite3.Connection], list[Row]]:
    return lambda c: [tuple(r) for r in c.execute(sql, args).fetchall()]


class _Session:
    """Statements of one transaction. BEGIN travels with the first statement and pending
    batches with the next read or the COMMIT, so a short transaction is one or two hops."""

    __slots__ = ("_begin", "_conn", "_pending")

    def __init__(self, conn: _Connection, begin: Sequence[str]) -> None:
        self._conn = conn
        self._begin: Sequence[str] | None = begin
        self._pending: list[tuple[str, list[tuple[Any, ...]]]] = []

    def _prologue(self, c: sqlite3.Connection) -> None:
        if self._begin is not None:
            for statement in self._begin:
                c.execute(statement)
            self._begin = None
        pending, self._pending = self._pending, []
        for sql, rows in pending:
            c.executemany(sql, rows)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run(c: sqlite3.Connection) -> T:
            self._prologue(c)
            return fn(c)

        return await self._conn.call(run)

    async def execute(self, statement: Statement, params: Params | None = None) -> int:
        cp = compiled(statement, "sqlite")
        return await self._call(_execute(cp.sql, cp.args(params)))

    async def executemany(self, statement: Statement, rows: Sequence[Params]) -> None:
        await self.execute_batch([(statement, rows)])

    async def fetchall(self, statement: Statement, params: Params | None = None) -> list[Row]:
        cp = compiled(statement, "sqlite")
        return await self._call(_fetch(cp.sql, cp.args(params)))

    async def execute_batch(self, ops: Sequence[tuple[Statement, Sequence[Params]]]) -> None:
        for statement, rows in ops:
            if rows:
                cp = compiled(statement, "sqlite")
                self._pending.append((cp.sql, [cp.args(r) for r in rows]))

    async def execute_raw(self, sql: str) -> None:
        await self._call(lambda c: c.execute(sql).fetchall())

    async def _end(self, commit: bool) -> None:
        def end(c: sqlite3.Connection) -> None:
            if commit:
                self._prologue(c)
            if c.in_transaction:
                c.execute("COMMIT" if commit else "ROLLBACK")

        if self._begin is not None and not self._pending:
            return  # nothing ran: no transaction was begun
        try:
            await self._conn.call(end)
        except BaseException:
            if commit:
                await asyncio.shield(self._conn.call(_rollback))
            raise


def _rollback(c: sqlite3.Connection) -> None:
    if c.in_transaction:
        c.execute("ROLLBACK")


class SQLiteEventStore(SqlEventStore):
    """The log and views in one SQLite file. One write connection (BEGIN IMMEDIATE takes the
    file's write lock, which also orders appends across processes) and one read connection,
    which WAL lets read while a write is open; each on its own thread.

    `synchronous` is SQLite's PRAGMA for the log's appends: "full" (default) makes every
    append durable against power loss; "normal" survives process crashes but may lose the last
    appends on power loss. The views commit with "normal" at most (see `transaction`).
    `path` may be ":memory:" for a throwaway database (one connection, for tests).
    """

    family = "sqlite"

    def __init__(
        self, path: str | Path, *, synchronous: str = "full", artifact_root: str | None = None
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise StoreError(f"synchronous must be one of {_SYNCHRONOUS}, got {synchronous!r}")
        self.memory = str(path) == ":memory:"
        self.path = Path(path)
        self.uri = "sqlite://:memory:" if self.memory else f"sqlite:///{self.path}"
        self.synchronous = synchronous
        self.default_artifact_root = artifact_root or (
            None if self.memory else str(self.path.parent.resolve())
        )
        self._writer: _Connection | None = None
        self._reader: _Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = self._write_lock if self.memory else asyncio.Lock()

    def __repr__(self) -> str:
        return f"SQLiteEventStore({str(self.path)!r})"

    async def open(self, create: bool = True) -> None:
        if self._writer is not None:
            return
        if not self.memory and not create and not self.path.is_file():
            raise NotFoundError(
                f"no tracker store at {self.path}: the file does not exist; check the path "
                "(or log a run there first)"
            )
        pragmas = ["busy_timeout = 30000", f"synchronous = {self.synchronous}",
                   "cache_size = -65536"]  # fmt: skip
        try:
            if self.memory:
                self._writer = self._reader = _Connection(self.path)
                await self._writer.connect(":memory:", pragmas)
            else:
                if create:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                # mode=rw never creates the file, so a read finds out that no store is there.
                target = f"{self.path.resolve().as_uri()}?mode={'rwc' if create else 'rw'}"
                self._writer = _Connection(self.path)
                await self._writer.connect(target, [*pragmas, "journal_mode = WAL"])
                self._reader = _Connection(self.path)
                await self._reader.connect(target, pragmas)
            await self.upgrade(create)
        except BaseException as exc:
            await self.aclose()
            cause = exc.__cause__ if isinstance(exc, StoreError) else exc
            if isinstance(cause, sqlite3.Error):
                raise _open_error(self.path, cause) from exc
            if isinstance(exc, OSError):
                raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc
            raise

    async def aclose(self) -> None:
        conns = {id(c): c for c in (self._writer, self._reader) if c is not None}
        self._writer = self._reader = None
        for conn in conns.values():
            await conn.close()

    def _conn(self, reader: bool) -> _Connection:
        conn = self._reader if reader else self._writer
        if conn is None:
            raise StoreError("the store is not open: call `await store.open()` first")
        return conn

    @asynccontextmanager
    async def _session(
        self, lock: asyncio.Lock, conn: _Connection, begin: Sequence[str]
    ) -> AsyncIterator[_Session]:
        async with lock:
            session = _Session(conn, begin)
            try:
                yield session
            except BaseException:
                await asyncio.shield(session._end(commit=False))
                raise
            await session._end(commit=True)

    def transaction(self) -> Any:
        """A write transaction on the views (and the schema). Committed without waiting for the
        disk (synchronous=NORMAL): the views and their positions are rebuilt from the log, so a
        power cut may only roll them back to an earlier position, and each log append's fsync
        (FULL) writes the WAL before it, theirs included. One fsync a batch instead of two."""
        sync = "off" if self.synchronous == "off" else "normal"
        return self._session(
            self._write_lock, self._conn(False), (f"PRAGMA synchronous = {sync}", "BEGIN IMMEDIATE")
        )

    def snapshot(self) -> Any:
        return self._session(self._read_lock, self._conn(True), ("BEGIN",))

    async def _lock_log(self, session: Any) -> None:
        pass  # BEGIN IMMEDIATE already holds the database's single write lock.

    async def _lock_schema(self, session: Any) -> None:
        pass  # likewise

    async def _table_exists(self, session: Any, table: str) -> bool:
        rows = await session.fetchall(
            sa.text("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = :t"),
            {"t": table},
        )
        return bool(rows[0][0])

    def _append_only_ddl(self) -> list[str]:
        return [
            f"CREATE TRIGGER events_no_{op.lower()} BEFORE {op} ON events "
            f"BEGIN SELECT RAISE(ABORT, 'the event log is append-only: {op} is refused'); END"
            for op in ("UPDATE", "DELETE")
        ]

    # -- the log: each append is one hop to the writer's thread ------------------------------

    async def _insert(
        self, unique: dict[bytes, NewEvent], encoded: Encoded, *, skip_known: bool
    ) -> list[RecordedEvent]:
        fresh = list(unique.values())
        insert_sql = compiled(_INSERT_EVENTS, "sqlite")
        head_sql = compiled(_HEAD, "sqlite").sql

        sync_log = f"PRAGMA synchronous = {self.synchronous}"

        def append(c: sqlite3.Connection) -> list[RecordedEvent]:
            c.execute(sync_log)  # the views' transactions commit with less: see transaction()
            c.execute("BEGIN IMMEDIATE")
            try:
                todo = fresh
                if skip_known:
                    known: set[bytes] = set()
                    for part in chunks([e.event_id for e in fresh]):
                        cp = compiled(known_ids_statement(len(part)), "sqlite")
                        rows = c.execute(cp.sql, cp.args(in_params(part))).fetchall()
                        known.update(bytes(r[0]) for r in rows)
                    todo = [e for e in fresh if e.event_id not in known]
                if not todo:
                    c.execute("COMMIT")
                    return []
                head = int(c.execute(head_sql).fetchone()[0] or 0)
                rows, out = numbered(todo, encoded, head)
                c.executemany(insert_sql.sql, [insert_sql.args(r) for r in rows])
                c.execute("COMMIT")
                return out
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

        try:
            return await self._conn(False).call(append)
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, sqlite3.IntegrityError) and "UNIQUE" in str(cause):
                raise self._insert_refused(unique, skip_known=skip_known) from exc
            raise

    async def integrity_check(self) -> str:
        async with self.snapshot() as s:
            rows = await s.fetchall(sa.text("PRAGMA integrity_check"))
        return str(rows[0][0])


def _open_error(path: Path, exc: sqlite3.Error) -> StoreError:
    message = f"cannot open SQLite database {path}: {exc}"
    if type(exc) is sqlite3.DatabaseError:  # "file is not a database", corrupt pages
        return StoreError(f"{message}; it is not a usable SQLite file (is it a tracker store?)")
    translated = translate(path, exc)
    if isinstance(translated, StoreUnavailableError):
        return StoreUnavailableError(f"{message}; another process holds it, or the disk is full")
    return StoreError(message)
