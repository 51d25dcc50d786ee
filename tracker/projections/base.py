"""The projection contract: a named, versioned fold of the log into tables it owns."""

from __future__ import annotations

import inspect
from abc import ABC
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

import sqlalchemy as sa

from tracker.events import DomainEvent, RecordedEvent
from tracker.stores.base import Database, Row, Session
from tracker.stores.sql import Params, Statement, insert_ignore, upsert

E = TypeVar("E", bound=DomainEvent)
Handler = Callable[[Any, "Context", RecordedEvent, Any], Awaitable[None] | None]


class Context:
    """One transaction as a projection sees it: writes are gathered and sent together (one
    round trip where the backend can), reads see the writes gathered before them."""

    __slots__ = ("_ops", "database", "family", "session")

    def __init__(self, session: Session, database: Database) -> None:
        self.session = session
        self.database = database
        self.family = database.family
        self._ops: list[tuple[Statement, list[Params]]] = []

    def write(self, statement: Statement, params: Params) -> None:
        """Queue a write; consecutive writes of one statement become one executemany."""
        if self._ops and self._ops[-1][0] is statement:
            self._ops[-1][1].append(params)
        else:
            self._ops.append((statement, [params]))

    async def fetchall(self, statement: Statement, params: Params | None = None) -> list[Row]:
        await self.flush()
        return await self.session.fetchall(statement, params)

    async def flush(self) -> None:
        ops, self._ops = self._ops, []
        if ops:
            await self.session.execute_batch(ops)

    def upsert(self, table: sa.Table, keys: tuple[str, ...] | None = None) -> Statement:
        return upsert(self.family, table, keys)

    def insert_ignore(self, table: sa.Table) -> Statement:
        return insert_ignore(self.family, table)

    def float(self, value: float) -> float:
        return self.database.encode_float(value)


def handles(*types: type[DomainEvent]) -> Callable[[Handler], Handler]:
    """Mark a method as the handler of these event types: `(self, ctx, record, event)`."""

    def mark(fn: Handler) -> Handler:
        fn.__handles__ = types  # type: ignore[attr-defined]
        return fn

    return mark


class Projection(ABC):
    """A fold of the log into tables the projection owns, applied inside the runner's
    transaction, which also records the projection's position (tracker.projections.runner).

    Contract:
    - `name` is unique; `version` changes whenever the tables or the fold change, and a stored
      projection of another version is dropped and rebuilt from the log.
    - Every event type is either handled (a method marked `@handles(...)`) or listed in
      `ignores`; anything else is refused with UnhandledEventError, never silently dropped
      (a test checks that the two sets cover every event type).
    - Handlers only write through the Context; `reset()` forgets every cache, and is called
      whenever a transaction did not commit or another process moved the projection.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    tables: ClassVar[tuple[sa.Table, ...]]
    ignores: ClassVar[frozenset[type[DomainEvent]]] = frozenset()
    handlers: ClassVar[dict[type[DomainEvent], tuple[Handler, bool]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[type[DomainEvent], tuple[Handler, bool]] = {}
        for base in reversed(cls.__mro__):
            for attr in vars(base).values():
                for t in getattr(attr, "__handles__", ()):
                    found[t] = (attr, inspect.iscoroutinefunction(attr))
        cls.handlers = found

    @classmethod
    def covers(cls) -> frozenset[type[DomainEvent]]:
        return frozenset(cls.handlers) | cls.ignores

    def reset(self) -> None:
        """Forget caches (the database is the truth)."""

    async def apply(self, ctx: Context, records: Sequence[RecordedEvent]) -> None:
        """Apply events in position order."""
        for rec in records:
            found = self.handlers.get(type(rec.event))
            if found is None:
                if type(rec.event) in self.ignores:
                    continue
                raise UnhandledEventError(
                    f"projection {self.name!r} has no rule for {type(rec.event).__name__} "
                    f"(position {rec.position})"
                )
            fn, is_async = found
            result = fn(self, ctx, rec, rec.event)
            if is_async:
                await result  # type: ignore[misc]
        await self.finish(ctx)

    async def finish(self, ctx: Context) -> None:
        """Called after a batch of events, before the transaction commits."""


class UnhandledEventError(TypeError):
    """A projection met an event type it neither handles nor ignores."""
