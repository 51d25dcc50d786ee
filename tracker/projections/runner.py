"""The projection runner: catches projections up with the log, follows it, rebuilds them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

from tracker.errors import InvalidInputError, StoreUnavailableError
from tracker.events import RecordedEvent, UnreadableEvent
from tracker.projections.base import Context, Projection
from tracker.stores.base import FOLLOW_POLL, Database, EventLog, Session, now_ms
from tracker.stores.schema import projection_errors, projection_state
from tracker.stores.sql import upsert

log = logging.getLogger("tracker.projections")

PAGE: Final = 2000
_STATE: Final = sa.select(
    projection_state.c.name, projection_state.c.position, projection_state.c.version
)
_ERRORS: Final = sa.select(
    projection_errors.c.projection, projection_errors.c.position, projection_errors.c.event_type,
    projection_errors.c.error, projection_errors.c.recorded_at,
).order_by(projection_errors.c.position)  # fmt: skip
_COUNT_ERRORS: Final = sa.select(sa.func.count()).select_from(projection_errors)


@dataclass(frozen=True, slots=True)
class ProjectionErrorRecord:
    """An event a projection could not apply: it was skipped, and this says why."""

    projection: str
    position: int
    event_type: str
    error: str
    recorded_at: int


class ProjectionRunner:
    """Runs projections over one log into one database: `catch_up` once, `follow` the log as
    it grows, `rebuild` some or all. Each projection records its own position (and version) in
    `projection_state`, in the same transaction as its changes, so its tables always reflect
    exactly the log prefix that position names; a projection added later catches up alone
    while the others keep theirs.

    Several processes may share a database: one runner at a time holds the projection lock and
    applies; the others find the positions moved and adopt them. An event a projection cannot
    apply (a value its tables refuse, an event this code cannot decode) never stops the views:
    it is recorded in `projection_errors` with the reason, skipped, and counted in
    `errors_count`; everything else is applied.
    """

    def __init__(
        self, log: EventLog, database: Database, projections: Sequence[Projection]
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"projection names must be unique; got {names}")
        self.log = log
        self.database = database
        self.projections = list(projections)
        self.positions: dict[str, int] = dict.fromkeys(names, 0)
        self.errors_count = 0
        self.last_error: str | None = None
        self._recorded = 0
        self._lock = asyncio.Lock()

    @property
    def position(self) -> int:
        """The log position every projection has reached."""
        return min(self.positions.values(), default=0)

    # -- opening: tables of the right version ----------------------------------------------

    async def open(self) -> None:
        """Create each projection's tables, or drop and recreate them where the stored version
        differs from the code's (the projection then rebuilds from the log on catch-up)."""
        async with self._lock, self._transaction() as s:
            stored = await self._stored(s)
            for p in self.projections:
                position, version = stored.get(p.name, (0, None))
                if version != p.version:
                    await self.database.drop_tables(s, p.tables)
                    await self.database.create_tables(s, p.tables)
                    await self._forget_errors(s, p.name)
                    position = 0
                    await self._save(s, p, 0)
                self.positions[p.name] = position
                p.reset()
            self.errors_count = int((await s.fetchall(_COUNT_ERRORS))[0][0])

    # -- applying --------------------------------------------------------------------------

    async def apply(self, events: Sequence[RecordedEvent]) -> int:
        """Apply events that directly follow the projections' positions (what this process
        just appended); falls back to reading the log when they do not."""
        if (
            events
            and all(e.position == events[0].position + i for i, e in enumerate(events))
            and events[0].position == self.position + 1 == max(self.positions.values()) + 1
        ):
            async with self._lock:
                if self.position + 1 == events[0].position:
                    await self._apply_page(events)
            if self.position >= events[-1].position:
                return self.position
        return await self.catch_up()

    async def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Apply every event after the projections' positions, page by page."""
        async with self._lock:
            while True:
                after = self.position
                events = await self.log.read(after=after, limit=PAGE)
                if not events:
                    return self.position
                await self._apply_page(events)
                if progress is not None:
                    progress(len(events))

    async def follow(self, *, poll_interval: float = FOLLOW_POLL) -> AsyncGenerator[int, None]:
        """Catch up, then apply each event as it commits, forever: yields the position every
        projection has reached (`position`), once caught up and then each time it moves,
        whoever moved it (this runner, the writer of the same tracker, another process).

        Waits on the log's change feed (`EventLog.follow`), so an idle follower sleeps between
        the feed's polls instead of spinning; events that commit together are applied in
        pages, as `catch_up` applies them. Stop by leaving the loop (which closes the
        iterator) or by cancelling the task iterating it: every position applied so far is
        stored, and the runner stays usable. A lost database ends the iteration with
        StoreUnavailableError; calling `follow()` again resumes from the stored positions.
        """
        reported = await self.catch_up()
        yield reported
        while True:
            # The feed is only the wake-up: one event after our position means something new
            # committed; catch_up then reads and applies everything there is, page by page.
            await self._next_commit(poll_interval)
            position = await self.catch_up()
            if position > reported:
                reported = position
                yield position

    async def rebuild(
        self, names: Sequence[str] | None = None, progress: Callable[[int], None] | None = None
    ) -> int:
        """Drop the named projections' tables (default: all), recreate them empty and apply
        the whole log again. The others keep their tables and positions. An unknown name
        raises InvalidInputError naming the projections there are, and nothing is dropped."""
        if isinstance(names, str):
            raise InvalidInputError(f"rebuild takes a list of projection names: [{names!r}]")
        unknown = set(names or ()) - {p.name for p in self.projections}
        if unknown:
            raise InvalidInputError(
                f"no projection named {', '.join(sorted(unknown))}; the projections are "
                f"{', '.join(p.name for p in self.projections)}"
            )
        chosen = [p for p in self.projections if names is None or p.name in names]
        async with self._lock, self._transaction() as s:
            for p in chosen:
                await self.database.drop_tables(s, p.tables)
                await self.database.create_tables(s, p.tables)
                await self._forget_errors(s, p.name)
                await self._save(s, p, 0)
                self.positions[p.name] = 0
                p.reset()
        return await self.catch_up(progress)

    async def errors(self) -> list[ProjectionErrorRecord]:
        """Events skipped by a projection, with the reason, in log order."""
        async with self.database.snapshot() as s:
            rows = await s.fetchall(_ERRORS)
        return [ProjectionErrorRecord(r[0], int(r[1]), r[2], r[3], int(r[4])) for r in rows]

    # -- inside -----------------------------------------------------------------------------

    async def _next_commit(self, poll_interval: float) -> None:
        """Return once the log holds an event after `position` (at once if it does already)."""
        feed = self.log.follow(after=self.position, poll_interval=poll_interval, limit=1)
        try:
            async for _ in feed:
                return
        finally:
            close = getattr(feed, "aclose", None)  # a generator's: stop its poll now
            if close is not None:
                await close()

    def _transaction(self) -> _Locked:
        return _Locked(self)

    async def _stored(self, s: Session) -> dict[str, tuple[int, int | None]]:
        rows = await s.fetchall(_STATE)
        return {r[0]: (int(r[1]), None if r[2] is None else int(r[2])) for r in rows}

    async def _adopt(self, s: Session) -> None:
        """Take the positions stored by whoever projected last (perhaps another process)."""
        stored = await self._stored(s)
        for p in self.projections:
            position = stored.get(p.name, (0, None))[0]
            if position != self.positions[p.name]:
                self.positions[p.name] = position
                p.reset()

    async def _save(self, s: Session, p: Projection, position: int) -> None:
        # A batch, not execute(): on SQLite it rides with the COMMIT's hop to the thread.
        await s.execute_batch(
            [(upsert(self.database.family, projection_state),
              [{"name": p.name, "position": position, "version": p.version}])]
        )  # fmt: skip

    async def _forget_errors(self, s: Session, name: str) -> None:
        await s.execute(sa.delete(projection_errors).where(projection_errors.c.projection == name))

    async def _apply_page(self, events: Sequence[RecordedEvent]) -> None:
        """Apply a page to every projection behind it, in one transaction; if that fails for a
        reason other than an outage, isolate the events that cannot be applied."""
        try:
            await self._apply_txn(events, self.projections)
        except (StoreUnavailableError, asyncio.CancelledError):
            raise
        except Exception:
            for p in self.projections:
                await self._isolate(p, events)

    async def _apply_txn(
        self, events: Sequence[RecordedEvent], chosen: Sequence[Projection]
    ) -> None:
        try:
            async with self._transaction() as s:
                await self._adopt(s)
                ctx = Context(s, self.database)
                moved: dict[str, int] = {}
                self._recorded = 0
                for p in chosen:
                    todo = [e for e in events if e.position > self.positions[p.name]]
                    if not todo:
                        continue
                    if todo[0].position != self.positions[p.name] + 1:
                        continue  # behind these events: catch_up reads the gap from the log
                    readable = [e for e in todo if not isinstance(e.event, UnreadableEvent)]
                    for e in todo:
                        if isinstance(e.event, UnreadableEvent):
                            await self._record(s, p, e, f"cannot decode it: {e.event.error}")
                    await p.apply(ctx, readable)
                    await ctx.flush()
                    await self._save(s, p, todo[-1].position)
                    moved[p.name] = todo[-1].position
        except BaseException:
            for p in chosen:
                p.reset()
            raise
        self.positions.update(moved)
        self.errors_count += self._recorded

    async def _isolate(self, p: Projection, events: Sequence[RecordedEvent]) -> None:
        """Apply `events` to `p` in halves until the ones it cannot apply are found; each is
        recorded in projection_errors and skipped, the rest applied."""
        todo = [e for e in events if e.position > self.positions[p.name]]
        if not todo:
            return
        try:
            await self._apply_txn(todo, [p])
            return
        except (StoreUnavailableError, asyncio.CancelledError):
            raise
        except Exception as exc:
            if len(todo) > 1:
                mid = len(todo) // 2
                await self._isolate(p, todo[:mid])
                await self._isolate(p, todo[mid:])
                return
            await self._skip(p, todo[0], exc)

    async def _skip(self, p: Projection, rec: RecordedEvent, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        log.error("projection %s skips the event at %d: %s", p.name, rec.position, reason)
        self._recorded = 0
        async with self._transaction() as s:
            await self._adopt(s)
            if self.positions[p.name] + 1 != rec.position:
                return  # someone else got past it meanwhile
            await self._record(s, p, rec, reason)
            await self._save(s, p, rec.position)
        self.positions[p.name] = rec.position
        self.errors_count += self._recorded
        p.reset()

    async def _record(self, s: Session, p: Projection, rec: RecordedEvent, reason: str) -> None:
        event_type = (
            rec.event.type_name
            if isinstance(rec.event, UnreadableEvent)
            else type(rec.event).__name__
        )
        await s.execute(
            upsert(self.database.family, projection_errors),
            {"projection": p.name, "position": rec.position, "event_type": event_type,
             "error": reason[:4000], "recorded_at": now_ms()},
        )  # fmt: skip
        self._recorded += 1  # counted once the transaction commits
        self.last_error = f"{p.name} at {rec.position}: {reason}"


class _Locked:
    """A database transaction holding the projection lock."""

    def __init__(self, runner: ProjectionRunner) -> None:
        self._runner = runner
        self._cm = runner.database.transaction()

    async def __aenter__(self) -> Session:
        s = await self._cm.__aenter__()
        try:
            await self._runner.database.lock_projection(s)
        except BaseException as exc:
            await self._cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return s

    async def __aexit__(self, et: object, e: BaseException | None, tb: object) -> None:
        await self._cm.__aexit__(et, e, tb)  # type: ignore[arg-type]
