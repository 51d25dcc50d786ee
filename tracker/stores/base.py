"""The EventStore contract: an append-only event log plus the SQL views projected from it."""

from __future__ import annotations

import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Protocol

from tracker.errors import ConcurrencyError, NotFoundError, SchemaVersionError, StoreError
from tracker.events import NewEvent, RecordedEvent
from tracker.serialization import deserialize, serialize
from tracker.stores.schema import EVENTS, META, VIEWS, Table, Types, create_table_sql

Row = tuple[Any, ...]
Encoded = dict[bytes, tuple[str, int, bytes]]
"""Event id -> (type name, schema version, payload), as serialize() makes them."""

SCHEMA_VERSION: Final = 1
DOUBLE_MAX: Final = 1.7976931348623157e308
_EVENT_COLUMNS: Final = (
    "position, event_id, stream_id, seq, event_type, schema_version, recorded_at, payload"
)
_IN_CHUNK: Final = 500


class SqlSession(Protocol):
    """What projections and queries need from a backend connection. SQL uses `?` placeholders;
    the backend's Dialect rewrites them for its driver."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """The SQL differences between backends that the shared SQL must know about."""

    name: str
    types: Types
    paramstyle: str = "qmark"
    """qmark (?), numeric_dollar ($1) or format (%s)."""
    supports_nan: bool = True
    """False where the database cannot store NaN/±Inf in a float column (MySQL, MSSQL)."""

    def encode_float(self, value: float) -> float:
        """A value for a float column. NaN never reaches one (views keep an is_nan flag);
        without ±Inf support it is clamped to ±DBL_MAX, as MLflow's SQL store does."""
        if self.supports_nan or not math.isinf(value):
            return value
        return math.copysign(DOUBLE_MAX, value)

    def decode_float(self, value: float) -> float:
        """Inverse of encode_float: a clamped ±DBL_MAX reads back as ±Inf."""
        if not self.supports_nan and abs(value) == DOUBLE_MAX:
            return math.copysign(math.inf, value)
        return value

    def sql(self, statement: str) -> str:
        return _convert(statement, self.paramstyle)

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        cols, marks = ", ".join(columns), ", ".join("?" * len(columns))
        if self.name == "sqlite":
            return f"INSERT OR IGNORE INTO {table} ({cols}) VALUES ({marks})"
        if self.name == "mysql":
            return f"INSERT IGNORE INTO {table} ({cols}) VALUES ({marks})"
        return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"

    def upsert(self, table: str, keys: Sequence[str], columns: Sequence[str]) -> str:
        """INSERT of `columns` that replaces the non-key columns when `keys` already exist."""
        cols, marks = ", ".join(columns), ", ".join("?" * len(columns))
        rest = [c for c in columns if c not in keys]
        if self.name == "mysql":
            sets = ", ".join(f"{c} = VALUES({c})" for c in rest)
            return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {sets}"
        sets = ", ".join(f"{c} = excluded.{c}" for c in rest)
        action = f"DO UPDATE SET {sets}" if rest else "DO NOTHING"
        return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT ({', '.join(keys)}) {action}"


@lru_cache(maxsize=512)
def _convert(statement: str, style: str) -> str:
    if style == "qmark":
        return statement
    if style == "format":
        return statement.replace("%", "%%").replace("?", "%s")
    if style == "numeric_dollar":
        counter = iter(range(1, 1 << 16))
        return re.sub(r"\?", lambda _m: f"${next(counter)}", statement)
    raise ValueError(f"unknown paramstyle {style}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


INSERT_EVENTS: Final = f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def numbered(
    fresh: Sequence[NewEvent], encoded: Encoded, head: int
) -> tuple[list[Row], list[RecordedEvent]]:
    """Rows for INSERT_EVENTS giving `fresh` the positions after `head`, and the events as
    they are then recorded."""
    rows: list[Row] = []
    out: list[RecordedEvent] = []
    for position, e in enumerate(fresh, start=head + 1):
        type_name, version, payload = encoded[e.event_id]
        rows.append(
            (
                position,
                e.event_id,
                e.stream_id,
                e.sequence,
                type_name,
                version,
                e.recorded_at,
                payload,
            )
        )
        out.append(
            RecordedEvent(
                position, e.event_id, e.stream_id, e.sequence, e.recorded_at, version, e.event
            )
        )
    return rows, out


class IdsInLog(Exception):
    """A batch hit a unique index: some of its ids may be in the log already (a retry)."""


def sequence_taken(events: Iterable[NewEvent]) -> ConcurrencyError:
    streams = ", ".join(sorted({e.stream_id for e in events}))
    return ConcurrencyError(
        "another writer appended to the same stream at the same sequence number "
        f"({streams[:200]}); re-read the stream head and retry"
    )


class EventStore(ABC):
    """An append-only log of events with a global, strictly increasing position, and the
    views projected from it, in one database.

    Contract (every backend passes tests/contract):
    - `append` is atomic: all of a batch's new events are stored, in order, or none are.
    - Positions are strictly increasing in commit order: once a reader has seen position p,
      no event with a position below p commits later. Backends serialise appenders to keep it.
    - An event whose `event_id` is already in the log is skipped (an idempotent retry).
    - A new event whose (stream_id, sequence) is already taken raises ConcurrencyError, and
      nothing of that batch is stored.
    - The events table is never updated or deleted from; the database refuses it.
    - Views live in the same database and are written only inside `transaction()` by the
      projector; `projection_state` holds the position the views reflect.
    """

    dialect: Dialect
    uri: str

    # -- connection and schema -------------------------------------------------------------

    @abstractmethod
    async def open(self, create: bool = True) -> None:
        """Connect, and create or upgrade the schema (serialised across processes). With
        `create=False` nothing is created: a store that does not exist yet raises
        NotFoundError. A failed open closes whatever it had opened."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close connections. Idempotent."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[SqlSession]:
        """A read-write transaction: committed on normal exit, rolled back on error."""

    @abstractmethod
    def snapshot(self) -> AbstractAsyncContextManager[SqlSession]:
        """A read-only session that sees one consistent state of the database."""

    @abstractmethod
    async def _lock_log(self, session: SqlSession) -> None:
        """Inside an append transaction: exclude every other appender until commit."""

    async def lock_projection(self, session: SqlSession) -> None:
        """Inside a transaction: exclude other processes' projectors until commit, so that one
        projector at a time applies events to the views (the others then find the position
        moved and follow). A no-op where the transaction already excludes other writers."""

    @abstractmethod
    def _is_unique_violation(self, exc: BaseException) -> bool:
        """Whether a driver error is a unique-constraint violation."""

    @abstractmethod
    async def _lock_schema(self, session: SqlSession) -> None:
        """Inside a transaction: exclude other processes creating or upgrading the schema."""

    async def _table_exists(self, session: SqlSession, table: str) -> bool:
        try:
            await session.fetchall(f"SELECT 1 FROM {table} WHERE 1 = 0")
        except Exception:
            return False
        return True

    def ddl(self, tables: Sequence[Table]) -> list[str]:
        out: list[str] = []
        for t in tables:
            out.extend(create_table_sql(t, self.dialect.types, if_not_exists=False))
        return out

    async def upgrade(self, create: bool = True) -> int:
        """Bring the schema to SCHEMA_VERSION; safe when several processes start at once.
        Returns the version found before upgrading (0 for a fresh database). With
        `create=False`, a database without tracker's schema raises NotFoundError."""
        async with self.transaction() as s:
            await self._lock_schema(s)
            found = 0
            if await self._table_exists(s, META.name):
                rows = await s.fetchall(f"SELECT MAX(version) FROM {META.name}")
                found = int(rows[0][0] or 0)
            elif await self._table_exists(s, "alembic_version") or await self._table_exists(
                s, "experiments"
            ):
                raise StoreError(
                    f"{self.uri} holds an MLflow tracking database (its tables are there), not "
                    "a tracker store; tracker keeps its own event log and cannot share MLflow's "
                    "tables: point tracker at an empty database or schema (importing MLflow "
                    "stores is planned as `tracker import-mlflow`)"
                )
            elif not create:
                raise NotFoundError(
                    f"no tracker store at {self.uri}: the database has no tracker schema; "
                    f"create it with `tracker db upgrade {self.uri}` or by logging a run"
                )
            if found > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"the database schema is v{found}, newer than this tracker (v{SCHEMA_VERSION}); "
                    "upgrade tracker"
                )
            if found == 0:
                for stmt in self.ddl([META, EVENTS, *VIEWS]):
                    await s.execute(stmt)
                await self._forbid_event_changes(s)
                await s.execute(
                    self.dialect.sql(
                        f"INSERT INTO {META.name} (version, applied_at) VALUES (?, ?)"
                    ),
                    (SCHEMA_VERSION, now_ms()),
                )
            # Later versions: apply MIGRATIONS[found + 1 :] here, each recorded in META.
        return found

    async def _forbid_event_changes(self, session: SqlSession) -> None:
        """Make the database itself refuse UPDATE and DELETE on the event log (triggers)."""

    async def schema_version(self) -> int:
        async with self.snapshot() as s:
            if not await self._table_exists(s, META.name):
                return 0
            rows = await s.fetchall(f"SELECT MAX(version) FROM {META.name}")
            return int(rows[0][0] or 0)

    # -- the log ---------------------------------------------------------------------------

    async def append(self, events: Sequence[NewEvent]) -> list[RecordedEvent]:
        """Append a batch atomically; returns the events stored now (skipping ids already
        in the log) with their positions."""
        if not events:
            return []
        unique: dict[bytes, NewEvent] = {}
        for e in events:
            unique.setdefault(e.event_id, e)
        encoded = {eid: serialize(e.event) for eid, e in unique.items()}
        return await self._append(unique, encoded)

    async def _append(self, unique: dict[bytes, NewEvent], encoded: Encoded) -> list[RecordedEvent]:
        """Store a batch already deduplicated by id and encoded, as `append` promises. This
        default looks the ids up first; a backend may insert optimistically instead."""
        try:
            async with self.transaction() as s:
                await self._lock_log(s)
                known = await self._known_ids(s, list(unique))
                fresh = [e for eid, e in unique.items() if eid not in known]
                if not fresh:
                    return []
                head_rows = await s.fetchall("SELECT MAX(position) FROM events")
                rows, out = numbered(fresh, encoded, int(head_rows[0][0] or 0))
                await s.executemany(self.dialect.sql(INSERT_EVENTS), rows)
        except Exception as exc:
            if self._is_unique_violation(exc):
                raise sequence_taken(unique.values()) from exc
            raise
        return out

    async def _insert(
        self, unique: dict[bytes, NewEvent], encoded: Encoded, *, skip_known: bool
    ) -> list[RecordedEvent]:
        """For _append_optimistically: one append transaction inserting the batch, less the
        ids already in the log when `skip_known`; a unique violation raises
        `_insert_refused(...)`."""
        raise NotImplementedError

    async def _append_optimistically(
        self, unique: dict[bytes, NewEvent], encoded: Encoded
    ) -> list[RecordedEvent]:
        """An `_append` for backends where looking ids up first is costly: insert the batch
        whole, and only if a unique index objects (an id already in the log after a retry, or a
        taken sequence number) send it again without the known ids."""
        try:
            return await self._insert(unique, encoded, skip_known=False)
        except IdsInLog:
            return await self._insert(unique, encoded, skip_known=True)

    def _insert_refused(self, unique: dict[bytes, NewEvent], *, skip_known: bool) -> Exception:
        """What a unique violation in `_insert` means: on the first pass perhaps ids already in
        the log (the second pass tells), on the second a taken sequence number."""
        return sequence_taken(unique.values()) if skip_known else IdsInLog()

    async def _known_ids(self, session: SqlSession, ids: Sequence[bytes]) -> set[bytes]:
        """Which of `ids` are in the log already."""
        known: set[bytes] = set()
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = await session.fetchall(
                self.dialect.sql(f"SELECT event_id FROM events WHERE event_id IN ({marks})"), chunk
            )
            known.update(bytes(r[0]) for r in rows)
        return known

    def _decode(self, row: Row) -> RecordedEvent:
        position, event_id, stream_id, seq, type_name, version, recorded_at, payload = row
        event = deserialize(type_name, int(version), bytes(payload))
        return RecordedEvent(
            int(position),
            bytes(event_id),
            stream_id,
            int(seq),
            int(recorded_at),
            int(version),
            event,
        )

    async def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Events with position > `after`, in position order, at most `limit`."""
        async with self.snapshot() as s:
            rows = await s.fetchall(
                self.dialect.sql(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
                ),
                (after, limit),
            )
        return [self._decode(r) for r in rows]

    async def read_stream(
        self,
        stream_id: str,
        *,
        after: int = 0,
        until_position: int | None = None,
        until_time: int | None = None,
        limit: int = 1000,
    ) -> list[RecordedEvent]:
        """One stream's events with position > `after`, in order; `until_position` and
        `until_time` (ms) are inclusive upper bounds."""
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = ? AND position > ?"
        params: list[Any] = [stream_id, after]
        if until_position is not None:
            sql += " AND position <= ?"
            params.append(until_position)
        if until_time is not None:
            sql += " AND recorded_at <= ?"
            params.append(until_time)
        sql += " ORDER BY position LIMIT ?"
        params.append(limit)
        async with self.snapshot() as s:
            rows = await s.fetchall(self.dialect.sql(sql), params)
        return [self._decode(r) for r in rows]

    async def iter_stream(
        self, stream_id: str, *, until_position: int | None = None, until_time: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """All of a stream's events in order, read page by page."""
        after = 0
        while True:
            page = await self.read_stream(
                stream_id, after=after, until_position=until_position, until_time=until_time
            )
            for rec in page:
                yield rec
            if len(page) < 1000:
                return
            after = page[-1].position

    async def stream_head(self, stream_id: str) -> int:
        """The highest sequence number in a stream, 0 when it has no events."""
        async with self.snapshot() as s:
            rows = await s.fetchall(
                self.dialect.sql("SELECT MAX(seq) FROM events WHERE stream_id = ?"), (stream_id,)
            )
        return int(rows[0][0] or 0)

    async def head(self) -> int:
        """The highest position in the log, 0 when it is empty."""
        async with self.snapshot() as s:
            rows = await s.fetchall("SELECT MAX(position) FROM events")
        return int(rows[0][0] or 0)
