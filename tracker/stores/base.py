"""Two roles: the event log (append, read, follow) and the SQL database the views live in."""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import lru_cache
from typing import Any, Final, Protocol

import sqlalchemy as sa

from tracker.errors import (
    ConcurrencyError,
    InvalidInputError,
    NotFoundError,
    SchemaVersionError,
    StoreError,
)
from tracker.events import NewEvent, RecordedEvent, UnreadableEvent
from tracker.serialization import deserialize, serialize
from tracker.stores import schema
from tracker.stores.sql import Params, Statement, chunks, in_list, in_params

Row = tuple[Any, ...]
Encoded = dict[bytes, tuple[str, int, bytes]]
"""Event id -> (type name, schema version, payload), as serialize() makes them."""

DOUBLE_MAX: Final = 1.7976931348623157e308
FOLLOW_POLL: Final = 0.05
E: Final = schema.events


class UnencodableEventError(InvalidInputError):
    """An event in a batch could not be encoded; nothing of the batch was stored."""

    def __init__(self, index: int, event_id: bytes, cause: Exception) -> None:
        self.index, self.event_id = index, event_id
        super().__init__(f"event {index} of the batch cannot be encoded: {cause}")


# -- the log role --------------------------------------------------------------------------------


class EventLog(ABC):
    """An append-only log of events with a global, strictly increasing position.

    Contract (every implementation passes tests/contract):
    - `append` is atomic: all of a batch's new events are stored, in order, or none are.
    - Positions are strictly increasing in commit order: once a reader has seen position p, no
      event with a position below p commits later, so a follower reading by position never
      skips an event that commits late.
    - An event whose `event_id` is already in the log is skipped (an idempotent retry).
    - A new event whose (stream_id, sequence) is already taken raises ConcurrencyError, and
      nothing of that batch is stored. Sequences start at 1 in every stream.
    - Stored events are never changed or removed.
    """

    uri: str

    @abstractmethod
    async def open(self, create: bool = True) -> None:
        """Connect (and create the log unless `create=False`, when a missing log raises
        NotFoundError). A failed open closes whatever it had opened."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections. Idempotent."""

    async def append(self, events: Sequence[NewEvent]) -> list[RecordedEvent]:
        """Append a batch atomically; returns the events stored now (skipping ids already in
        the log) with their positions. An event that cannot be encoded raises
        UnencodableEventError naming it, and nothing is stored."""
        if not events:
            return []
        unique: dict[bytes, NewEvent] = {}
        for e in events:
            unique.setdefault(e.event_id, e)
        encoded: Encoded = {}
        for i, (eid, e) in enumerate(unique.items()):
            try:
                encoded[eid] = serialize(e.event)
            except (TypeError, ValueError) as exc:  # orjson's errors are both
                raise UnencodableEventError(i, eid, exc) from exc
        return await self._append(unique, encoded)

    @abstractmethod
    async def _append(self, unique: dict[bytes, NewEvent], encoded: Encoded) -> list[RecordedEvent]:
        """Store a batch already deduplicated by id and encoded, as `append` promises."""

    @abstractmethod
    async def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Events with position > `after`, in position order, at most `limit`."""

    @abstractmethod
    async def read_stream(
        self,
        stream_id: str,
        *,
        after: int = 0,
        until_position: int | None = None,
        until_time: int | None = None,
        limit: int = 1000,
        exclude_types: frozenset[str] = frozenset(),
    ) -> list[RecordedEvent]:
        """One stream's events with position > `after`, in order; `until_position` and
        `until_time` (ms) are inclusive upper bounds; events of `exclude_types` are left out."""

    async def iter_stream(
        self,
        stream_id: str,
        *,
        until_position: int | None = None,
        until_time: int | None = None,
        exclude_types: frozenset[str] = frozenset(),
        after: int = 0,
    ) -> AsyncIterator[RecordedEvent]:
        """All of a stream's events in order, read page by page."""
        while True:
            page = await self.read_stream(
                stream_id, after=after, until_position=until_position, until_time=until_time,
                exclude_types=exclude_types,
            )  # fmt: skip
            for rec in page:
                yield rec
            if len(page) < 1000:
                return
            after = page[-1].position

    @abstractmethod
    async def stream_head(self, stream_id: str) -> int:
        """The highest sequence number in a stream, 0 when it has no events."""

    @abstractmethod
    async def head(self) -> int:
        """The highest position in the log, 0 when it is empty."""

    @abstractmethod
    async def known_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        """Which of `ids` are in the log already."""

    @abstractmethod
    async def read_slices(self, refs: Sequence[tuple[int, int, int]]) -> list[bytes]:
        """For each (position, offset, size), those bytes of that event's stored payload (the
        metric views index packed points in place instead of copying them)."""

    async def follow(
        self, after: int = 0, *, poll_interval: float = FOLLOW_POLL, limit: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        """Every event after `after`, then each new one as it commits, forever (a change feed;
        close the iterator to stop). Polls the log: positions follow commit order, so nothing
        that commits late is skipped."""
        while True:
            page = await self.read(after, limit)
            for rec in page:
                yield rec
            if page:
                after = page[-1].position
            if len(page) < limit:
                await asyncio.sleep(poll_interval)


# -- the SQL database role -----------------------------------------------------------------------


class Session(Protocol):
    """A connection inside a transaction. Statements are SQLAlchemy Core (or `sa.text`) with
    named parameters; every value is bound, never pasted into SQL."""

    async def execute(self, statement: Statement, params: Params | None = None) -> int:
        """Run one statement; returns the number of rows it changed (where the driver says)."""

    async def executemany(self, statement: Statement, rows: Sequence[Params]) -> None:
        """Run one statement for each parameter set."""

    async def fetchall(self, statement: Statement, params: Params | None = None) -> list[Row]:
        """Run a query; its rows as tuples."""

    async def execute_batch(self, ops: Sequence[tuple[Statement, Sequence[Params]]]) -> None:
        """Run statements in order, each for its parameter sets, in as few round trips as the
        backend can (one hop to SQLite's thread). Results are visible to later reads."""

    async def execute_raw(self, sql: str) -> None:
        """Run SQL text as it is, without parameters: DDL and driver-level statements only."""


class Database(ABC):
    """A SQL database that the views live in: transactions, snapshots, a projection lock.

    `family` is one of sqlite, postgresql, mysql (MariaDB too), mssql: what statement builders
    in tracker.stores.sql need to pick a dialect's upsert.
    """

    family: str
    supports_nan: bool = True
    """False where float columns cannot hold NaN or ±Inf (MySQL, SQL Server)."""

    @abstractmethod
    async def open(self, create: bool = True) -> None:
        """Connect, and create the schema unless `create=False` (then a database without it
        raises NotFoundError). A failed open closes whatever it had opened."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections. Idempotent."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Session]:
        """A read-write transaction: committed on normal exit, rolled back on error."""

    @abstractmethod
    def snapshot(self) -> AbstractAsyncContextManager[Session]:
        """A read-only session that sees one consistent state of the database."""

    async def lock_projection(self, session: Session) -> None:
        """Inside a transaction: exclude other processes' projection runners until commit, so
        that one runner at a time applies events to the views (the others then find the
        positions moved and follow). A no-op where a transaction already excludes writers."""

    def ddl(self, table: sa.Table) -> list[str]:
        """CREATE TABLE and CREATE INDEX statements for a table."""
        from tracker.stores.sql import DIALECTS

        dialect = DIALECTS[self.family]
        out = [str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip()]
        out += [
            str(sa.schema.CreateIndex(i).compile(dialect=dialect))
            for i in table.indexes
            if dialect.name in schema.INDEX_DIALECTS.get(str(i.name), (dialect.name,))
        ]
        return out

    async def create_tables(self, session: Session, tables: Iterable[sa.Table]) -> None:
        for t in tables:
            for stmt in self.ddl(t):
                await session.execute_raw(stmt)

    async def drop_tables(self, session: Session, tables: Iterable[sa.Table]) -> None:
        q = self._quote
        for t in tables:
            await session.execute_raw(f"DROP TABLE IF EXISTS {q(t.name)}")

    def _quote(self, name: str) -> str:
        from tracker.stores.sql import DIALECTS

        return DIALECTS[self.family].identifier_preparer.quote(name)

    def encode_float(self, value: float) -> float:
        """A value for a float column. NaN never reaches one (views keep NULL or an is_nan
        flag); without ±Inf support it is clamped to ±DBL_MAX, as MLflow's SQL store does."""
        if self.supports_nan or not math.isinf(value):
            return value
        return math.copysign(DOUBLE_MAX, value)

    def decode_float(self, value: float) -> float:
        """Inverse of encode_float: a clamped ±DBL_MAX reads back as ±Inf."""
        if not self.supports_nan and abs(value) == DOUBLE_MAX:
            return math.copysign(math.inf, value)
        return value


# -- the log in a SQL database: what every SQL backend shares --------------------------------------

_EVENT_COLUMNS: Final = (
    E.c.position, E.c.event_id, E.c.stream_id, E.c.seq, E.c.event_type,
    E.c.schema_version, E.c.recorded_at, E.c.payload,
)  # fmt: skip
_READ: Final = (
    sa.select(*_EVENT_COLUMNS)
    .where(E.c.position > sa.bindparam("after"))
    .order_by(E.c.position)
    .limit(sa.bindparam("limit"))
)
_HEAD: Final = sa.select(sa.func.max(E.c.position))
_STREAM_HEAD: Final = sa.select(sa.func.max(E.c.seq)).where(E.c.stream_id == sa.bindparam("stream"))
_EVENT_POSITION: Final = sa.select(E.c.position).where(E.c.event_id == sa.bindparam("id"))


@lru_cache(maxsize=64)
def _read_stream(until_position: bool, until_time: bool, excluded: tuple[str, ...]) -> Statement:
    where = [E.c.stream_id == sa.bindparam("stream"), E.c.position > sa.bindparam("after")]
    if until_position:
        where.append(E.c.position <= sa.bindparam("until_position"))
    if until_time:
        where.append(E.c.recorded_at <= sa.bindparam("until_time"))
    where += [E.c.event_type != t for t in excluded]
    return (
        sa.select(*_EVENT_COLUMNS).where(*where).order_by(E.c.position).limit(sa.bindparam("limit"))
    )


@lru_cache(maxsize=32)
def known_ids_statement(n: int) -> Statement:
    """SELECT of which of `n` event ids (bound as `in_params`) are in the log."""
    return sa.select(E.c.event_id).where(E.c.event_id.in_(in_list(n)))


@lru_cache(maxsize=32)
def _payloads(n: int) -> Statement:
    return sa.select(E.c.position, E.c.payload).where(E.c.position.in_(in_list(n)))


def numbered(
    fresh: Sequence[NewEvent], encoded: Encoded, head: int
) -> tuple[list[dict[str, Any]], list[RecordedEvent]]:
    """Rows for the events table giving `fresh` the positions after `head`, and the events as
    they are then recorded."""
    rows: list[dict[str, Any]] = []
    out: list[RecordedEvent] = []
    for position, e in enumerate(fresh, start=head + 1):
        type_name, version, payload = encoded[e.event_id]
        rows.append(
            {
                "position": position, "event_id": e.event_id, "stream_id": e.stream_id,
                "seq": e.sequence, "event_type": type_name, "schema_version": version,
                "recorded_at": e.recorded_at, "payload": payload,
            }
        )  # fmt: skip
        out.append(
            RecordedEvent(
                position, e.event_id, e.stream_id, e.sequence, e.recorded_at, version, e.event,
                payload,
            )
        )  # fmt: skip
    return rows, out


class IdsInLog(Exception):
    """A batch hit a unique index: some of its ids may be in the log already (a retry)."""


def sequence_taken(events: Iterable[NewEvent]) -> ConcurrencyError:
    streams = ", ".join(sorted({e.stream_id for e in events}))
    return ConcurrencyError(
        "another writer appended to the same stream at the same sequence number "
        f"({streams[:200]}); re-read the stream head and retry"
    )


def decode(row: Row) -> RecordedEvent:
    """An events row as a RecordedEvent; one that cannot be decoded (a newer type, a corrupt
    payload) becomes an UnreadableEvent carrying the reason, so that readers can skip it
    explicitly instead of stopping."""
    position, event_id, stream_id, seq, type_name, version, recorded_at, payload = row
    payload = bytes(payload)
    try:
        event = deserialize(type_name, int(version), payload)
    except Exception as exc:
        event = UnreadableEvent(type_name, int(version), f"{type(exc).__name__}: {exc}")
    return RecordedEvent(
        int(position), bytes(event_id), stream_id, int(seq), int(recorded_at), int(version),
        event, payload,
    )  # fmt: skip


class SqlEventStore(EventLog, Database):
    """The log and the views in one SQL database (both roles): what SQLite, PostgreSQL and the
    SQLAlchemy backends share. A backend provides connections (`transaction`, `snapshot`),
    its locks, and how one append transaction inserts (`_insert`)."""

    uri: str
    default_artifact_root: str | None = None

    # -- what each backend provides --------------------------------------------------------

    @abstractmethod
    async def _lock_log(self, session: Session) -> None:
        """Inside an append transaction: exclude every other appender until commit."""

    @abstractmethod
    async def _lock_schema(self, session: Session) -> None:
        """Inside a transaction: exclude other processes creating or upgrading the schema."""

    @abstractmethod
    async def _table_exists(self, session: Session, table: str) -> bool: ...

    @abstractmethod
    async def _insert(
        self, unique: dict[bytes, NewEvent], encoded: Encoded, *, skip_known: bool
    ) -> list[RecordedEvent]:
        """One append transaction: take the log lock, read the head, insert the batch (less
        the ids already in the log when `skip_known`). A unique violation raises
        `self._insert_refused(...)`."""

    @abstractmethod
    def _append_only_ddl(self) -> list[str]:
        """Statements that make the database refuse UPDATE and DELETE on the events table."""

    # -- schema ----------------------------------------------------------------------------

    async def upgrade(self, create: bool = True) -> int:
        """Bring the log's schema to the newest migration; safe when several processes start
        at once. Returns the version found before upgrading (0 for a fresh database). With
        `create=False`, a database without tracker's schema raises NotFoundError."""
        from tracker.stores.migrations import MIGRATIONS, SCHEMA_VERSION

        async with self.transaction() as s:
            await self._lock_schema(s)
            found = await self._found_version(s, create)
            if found > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"the database schema is v{found}, newer than this tracker (v{SCHEMA_VERSION}); "
                    "upgrade tracker"
                )
            for migration in MIGRATIONS:
                if migration.version > found:
                    await migration.apply(self, s)
                    await s.execute(
                        sa.insert(schema.schema_versions).values(
                            version=migration.version, applied_at=now_ms()
                        )
                    )
        return found

    async def _found_version(self, s: Session, create: bool) -> int:
        if await self._table_exists(s, schema.schema_versions.name):
            rows = await s.fetchall(sa.select(sa.func.max(schema.schema_versions.c.version)))
            return int(rows[0][0] or 0)
        if await self._table_exists(s, "alembic_version") or await self._table_exists(
            s, "experiments"
        ):
            raise StoreError(
                f"{self.uri} holds an MLflow tracking database (its tables are there), not "
                "a tracker store; tracker keeps its own event log and cannot share MLflow's "
                "tables: point tracker at an empty database or schema (importing MLflow "
                "stores is planned as `tracker import-mlflow`)"
            )
        if not create:
            raise NotFoundError(
                f"no tracker store at {self.uri}: the database has no tracker schema; "
                f"create it with `tracker db upgrade {self.uri}` or by logging a run"
            )
        return 0

    async def schema_version(self) -> int:
        async with self.snapshot() as s:
            if not await self._table_exists(s, schema.schema_versions.name):
                return 0
            rows = await s.fetchall(sa.select(sa.func.max(schema.schema_versions.c.version)))
            return int(rows[0][0] or 0)

    # -- the log ---------------------------------------------------------------------------

    async def _append(self, unique: dict[bytes, NewEvent], encoded: Encoded) -> list[RecordedEvent]:
        """Insert the batch whole, and only if a unique index objects (an id already in the log
        after a retry, or a taken sequence number) send it again without the known ids: looking
        ids up first would cost a query per append."""
        try:
            return await self._insert(unique, encoded, skip_known=False)
        except IdsInLog:
            return await self._insert(unique, encoded, skip_known=True)

    def _insert_refused(self, unique: dict[bytes, NewEvent], *, skip_known: bool) -> Exception:
        """What a unique violation in `_insert` means: on the first pass perhaps ids already in
        the log (the second pass tells), on the second a taken sequence number."""
        return sequence_taken(unique.values()) if skip_known else IdsInLog()

    async def _known_ids_in(self, session: Session, ids: Sequence[bytes]) -> set[bytes]:
        known: set[bytes] = set()
        for part in chunks(ids):
            rows = await session.fetchall(known_ids_statement(len(part)), in_params(part))
            known.update(bytes(r[0]) for r in rows)
        return known

    async def known_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        if not ids:
            return set()
        async with self.snapshot() as s:
            return await self._known_ids_in(s, ids)

    async def _head_in(self, session: Session) -> int:
        return int((await session.fetchall(_HEAD))[0][0] or 0)

    async def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        async with self.snapshot() as s:
            rows = await s.fetchall(_READ, {"after": after, "limit": limit})
        return [decode(r) for r in rows]

    async def read_stream(
        self,
        stream_id: str,
        *,
        after: int = 0,
        until_position: int | None = None,
        until_time: int | None = None,
        limit: int = 1000,
        exclude_types: frozenset[str] = frozenset(),
    ) -> list[RecordedEvent]:
        statement = _read_stream(
            until_position is not None, until_time is not None, tuple(sorted(exclude_types))
        )
        params = {
            "stream": stream_id, "after": after, "limit": limit,
            "until_position": until_position, "until_time": until_time,
        }  # fmt: skip
        async with self.snapshot() as s:
            rows = await s.fetchall(statement, params)
        return [decode(r) for r in rows]

    async def stream_head(self, stream_id: str) -> int:
        async with self.snapshot() as s:
            rows = await s.fetchall(_STREAM_HEAD, {"stream": stream_id})
        return int(rows[0][0] or 0)

    async def head(self) -> int:
        async with self.snapshot() as s:
            return await self._head_in(s)

    async def read_slices(self, refs: Sequence[tuple[int, int, int]]) -> list[bytes]:
        positions = sorted({p for p, _, _ in refs})
        payloads: dict[int, bytes] = {}
        async with self.snapshot() as s:
            for part in chunks(positions):
                for pos, payload in await s.fetchall(_payloads(len(part)), in_params(part)):
                    payloads[int(pos)] = bytes(payload)
        return [payloads[p][off : off + size] for p, off, size in refs]

    async def _committed_at(self, session: Session, first: RecordedEvent) -> bool:
        """Whether `first` is in the log at the position it was given (inside the log lock no
        append is in flight, and a batch is all in or all out)."""
        rows = await session.fetchall(_EVENT_POSITION, {"id": first.event_id})
        return bool(rows) and int(rows[0][0]) == first.position


def now_ms() -> int:
    return time.time_ns() // 1_000_000
