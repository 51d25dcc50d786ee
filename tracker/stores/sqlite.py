"""SQLiteEventStore: the embedded default, one SQLite file in WAL mode through aiosqlite."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import aiosqlite

from tracker.errors import NotFoundError, StoreError, StoreUnavailableError
from tracker.stores.base import Dialect, EventStore, Row
from tracker.stores.schema import SQLITE_TYPES

SQLITE: Final = Dialect("sqlite", SQLITE_TYPES)
_SYNCHRONOUS: Final = ("off", "normal", "full", "extra")


class _Session:
    __slots__ = ("_conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await (await self._conn.execute(sql, params)).close()

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await (await self._conn.executemany(sql, rows)).close()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        rows = await self._conn.execute_fetchall(sql, params)
        return [tuple(r) for r in rows]


class SQLiteEventStore(EventStore):
    """The log and views in one SQLite file. One write connection (writes are serialised by
    SQLite anyway; BEGIN IMMEDIATE takes the file's write lock, which also orders appends
    across processes) and one read connection, which WAL lets read while a write is open.

    `synchronous` is SQLite's PRAGMA: "full" (default) makes every commit durable against
    power loss; "normal" survives process crashes but may lose the last commits on power loss.
    """

    dialect = SQLITE

    def __init__(
        self, path: str | Path, *, synchronous: str = "full", artifact_root: str | None = None
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise StoreError(f"synchronous must be one of {_SYNCHRONOUS}, got {synchronous!r}")
        self.path = Path(path)
        self.uri = f"sqlite:///{self.path}"
        self.synchronous = synchronous
        self.default_artifact_root = artifact_root or str(self.path.parent.resolve())
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    async def _connect(self, create: bool) -> aiosqlite.Connection:
        # mode=rw never creates the file, so a read finds out that no store is there.
        target = f"{self.path.resolve().as_uri()}?mode={'rwc' if create else 'rw'}"
        pending = aiosqlite.connect(target, isolation_level=None, uri=True)
        try:
            conn = await pending
        except BaseException:
            # A failed connect stops aiosqlite's worker thread without waiting for it; if this
            # loop closes first, the thread dies printing "Event loop is closed". Let it finish.
            worker = getattr(pending, "_thread", None)
            if worker is not None:
                await asyncio.to_thread(worker.join, 5.0)
            raise
        try:
            for pragma in (
                "busy_timeout = 30000",
                f"synchronous = {self.synchronous}",
                "cache_size = -65536",
            ):
                await conn.execute_fetchall(f"PRAGMA {pragma}")
        except BaseException:
            await conn.close()  # its thread would otherwise keep the process alive
            raise
        return conn

    async def open(self, create: bool = True) -> None:
        if self._writer is not None:
            return
        if not create and not self.path.is_file():
            raise NotFoundError(
                f"no tracker store at {self.path}: the file does not exist; check the path "
                "(or log a run there first)"
            )
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = await self._connect(create)
            await self._writer.execute_fetchall("PRAGMA journal_mode = WAL")
            self._reader = await self._connect(create)
            await self.upgrade(create)
        except BaseException as exc:
            await self.aclose()
            if isinstance(exc, sqlite3.Error | OSError):
                raise _open_error(self.path, exc) from exc
            raise

    async def aclose(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                await conn.close()
        self._writer = self._reader = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Session]:
        if self._writer is None:
            raise StoreError("the store is not open: call `await store.open()` first")
        async with self._write_lock:
            conn = self._writer
            try:
                await conn.execute_fetchall("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailableError(f"SQLite is busy or unavailable: {exc}") from exc
            try:
                yield _Session(conn)
            except BaseException:
                await conn.execute_fetchall("ROLLBACK")
                raise
            try:
                await conn.execute_fetchall("COMMIT")
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    await conn.execute_fetchall("ROLLBACK")
                raise StoreUnavailableError(f"SQLite commit failed: {exc}") from exc

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[_Session]:
        if self._reader is None:
            raise StoreError("the store is not open: call `await store.open()` first")
        async with self._read_lock:
            conn = self._reader
            await conn.execute_fetchall("BEGIN")
            try:
                yield _Session(conn)
            finally:
                await conn.execute_fetchall("COMMIT")

    async def _lock_log(self, session: Any) -> None:
        pass  # BEGIN IMMEDIATE already holds the database's single write lock.

    async def _lock_schema(self, session: Any) -> None:
        pass  # likewise

    def _is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    async def _forbid_event_changes(self, session: Any) -> None:
        for op in ("UPDATE", "DELETE"):
            await session.execute(
                f"CREATE TRIGGER events_no_{op.lower()} BEFORE {op} ON events "
                f"BEGIN SELECT RAISE(ABORT, 'the event log is append-only: {op} is refused'); END"
            )

    async def integrity_check(self) -> str:
        async with self.snapshot() as s:
            rows = await s.fetchall("PRAGMA integrity_check")
        return str(rows[0][0])


def _open_error(path: Path, exc: BaseException) -> StoreError:
    message = f"cannot open SQLite database {path}: {exc}"
    if type(exc) is sqlite3.DatabaseError:  # "file is not a database", corrupt pages
        return StoreError(f"{message}; it is not a usable SQLite file (is it a tracker store?)")
    if "locked" in str(exc) or "busy" in str(exc):
        return StoreUnavailableError(f"{message}; another process holds it, retry later")
    return StoreError(message)
