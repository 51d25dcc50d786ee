"""The batching writer: drains the client queue into the event log, one transaction a batch.

Defaults (all per Writer): a batch is committed when it holds `max_batch` items or its first
item has waited `max_batch_age` seconds (20 ms), so a crash loses at most that window of
points that no `flush()` has acknowledged. The queue holds at most `max_queue` items (points
or operations, 1,000,000 by default, about 150 MB at worst); what happens beyond that is the
`on_full` policy:

- "block" (sync facade only): the logging thread waits until the writer makes room.
- "raise": log_* raises QueueFullError; nothing is dropped silently.
- "spill" (default): points go to an append-only spill file next to the log and are
  written from there in order; memory stays flat whatever the producer's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass
from typing import Any, Final

from tracker.errors import (
    ConcurrencyError,
    InvalidStateError,
    QueueFullError,
    StoreUnavailableError,
    WriterError,
)
from tracker.events import (
    DomainEvent,
    MetricSeries,
    MetricsLogged,
    NewEvent,
    RecordedEvent,
)
from tracker.projections.views import Projector
from tracker.serialization import pack_series
from tracker.stores.base import EventStore

log = logging.getLogger("tracker.writer")

POLICIES: Final = ("spill", "raise", "block")
DEFAULT_MAX_QUEUE: Final = 1_000_000
DEFAULT_MAX_BATCH: Final = 100_000
DEFAULT_MAX_BATCH_AGE: Final = 0.02
_MAX_CONFLICTS: Final = 50
_MAX_BACKOFF: Final = 5.0
_PERMANENT_RETRIES: Final = 5

CHUNK: Final = 16_384
"""Points per queue buffer: the unit the writer takes and the spill file stores."""


class Op:
    """A non-metric queue item: one event to append (or none, for a flush barrier), and a
    future resolved once it is durable and projected."""

    __slots__ = ("event", "future", "new_stream")

    def __init__(
        self, event: DomainEvent | None, future: Any = None, new_stream: bool = False
    ) -> None:
        self.event = event
        self.future = future
        self.new_stream = new_stream
        """The event must open its stream (sequence 1); a taken stream fails the op."""


Columns = tuple["array[int]", "array[int]", "array[float]"]
"""(steps, timestamps, values) of one metric key."""


class RunPoints:
    """Queued points of one run, a column triple per key, appended to by that run's log_metric
    until something seals it (another event of the run, the writer taking it, or `chunk`
    points on one key). Arrays hold raw numbers: a queued point costs 24 bytes, is invisible
    to the garbage collector (a deque of tuples made gen-2 collections stall the training
    loop for milliseconds), and arrives at the writer already grouped by key."""

    __slots__ = ("cols", "owner", "run_id")

    def __init__(self, run_id: str, owner: Any) -> None:
        self.run_id = run_id
        self.owner = owner
        """The Run whose `_points` this is while it is open; None once sealed."""
        self.cols: dict[str, Columns] = {}

    def __len__(self) -> int:
        return sum(len(c[2]) for c in self.cols.values())

    def seal(self) -> int:
        """Stop appends to this segment; returns its point count."""
        if self.owner is not None:
            self.owner._points = None
            self.owner = None
        return len(self)


class SpilledPoints:
    """A sealed RunPoints whose columns were written to the queue's spill file."""

    __slots__ = ("counts", "n", "offset", "run_id")

    def __init__(self, run_id: str, offset: int, counts: list[tuple[str, int]]) -> None:
        self.run_id = run_id
        self.offset = offset
        self.counts = counts
        self.n = sum(n for _, n in counts)

    def __len__(self) -> int:
        return self.n


class EventQueue:
    """The in-process queue between log_* calls and the writer: a deque of chunks, each a
    RunPoints segment, a SpilledPoints segment, or an Op. Queuing an Op seals every open
    segment, so the order between points and other events is kept. Appending never awaits;
    with `threaded` (the sync facade) appends and takes hold `lock`."""

    def __init__(self, max_queue: int, on_full: str, threaded: bool, spill_dir: str | None) -> None:
        if on_full not in POLICIES:
            raise ValueError(f"on_full must be one of {POLICIES}, got {on_full!r}")
        if on_full == "block" and not threaded:
            raise ValueError(
                'on_full="block" needs the sync facade (tracker.SyncTracker): an async caller '
                'cannot block without stalling the writer; use "spill" or "raise"'
            )
        self.chunks: deque[RunPoints | SpilledPoints | Op] = deque()
        self.open: list[RunPoints] = []
        self.max_queue = max_queue
        self.on_full = on_full
        self.chunk = max(1, min(CHUNK, max_queue // 4))
        """Points per key per segment: small queues get small segments so capacity stays exact."""
        self.threaded = threaded
        self.lock = threading.Lock() if threaded else None
        self.room = threading.Condition(self.lock) if threaded else None
        self.spill_dir = spill_dir
        self._spill: Any = None
        self._spill_end = 0
        self.in_memory = 0
        """Points in sealed in-memory segments (open segments are not counted)."""
        self.spilled_pending = 0
        self.spilled_points = 0
        self.parked = False
        self.wake: Callable[[], None] = lambda: None

    def _seal_open(self) -> None:
        for seg in self.open:
            self.in_memory += seg.seal()
        self.open.clear()

    def open_points(self, run_id: str, owner: Any) -> RunPoints:
        """Seal the run's open segment (if any) and start another, applying the full-queue
        policy first. Called by log_metric when the run has no open segment or a full one."""
        old = owner._points
        if old is not None:
            self.in_memory += old.seal()
            self.open.remove(old)
        if self.in_memory >= self.max_queue:
            self._full()
        seg = RunPoints(run_id, owner)
        owner._points = seg
        self.chunks.append(seg)
        self.open.append(seg)
        if self.parked:
            self.wake()
        return seg

    def _full(self) -> None:
        if self.on_full == "raise":
            raise QueueFullError(
                f"the tracker queue holds {self.in_memory:,} points and the writer is behind; "
                "await tk.flush() now and then in your loop, raise max_queue, or use "
                'on_full="spill"'
            )
        if self.on_full == "block":
            assert self.room is not None
            self.wake()
            self.room.wait_for(lambda: self.in_memory < self.max_queue)
            return
        # Spill the newest sealed segments: the writer reads the oldest next, from memory.
        for i in range(len(self.chunks) - 1, -1, -1):
            if self.in_memory < self.max_queue // 2:
                break
            chunk = self.chunks[i]
            if isinstance(chunk, RunPoints) and chunk.owner is None:
                self.chunks[i] = self._write_spill(chunk)

    def _write_spill(self, seg: RunPoints) -> SpilledPoints:
        if self._spill is None:
            fd, path = tempfile.mkstemp(prefix="tracker-spill-", dir=self.spill_dir)
            os.unlink(path)  # nothing to clean up after a crash: these points were never flushed
            self._spill = os.fdopen(fd, "w+b")
            self._spill_end = 0
        f = self._spill
        f.seek(self._spill_end)
        counts = []
        for key, cols in seg.cols.items():
            for col in cols:
                col.tofile(f)
            counts.append((key, len(cols[2])))
        spilled = SpilledPoints(seg.run_id, self._spill_end, counts)
        self._spill_end = f.tell()
        self.in_memory -= spilled.n
        self.spilled_pending += spilled.n
        self.spilled_points += spilled.n
        return spilled

    def _read_spill(self, s: SpilledPoints) -> RunPoints:
        f = self._spill
        f.flush()
        f.seek(s.offset)
        seg = RunPoints(s.run_id, None)
        for key, n in s.counts:
            cols: Columns = (array("q"), array("q"), array("d"))
            for col in cols:
                col.fromfile(f, n)
            seg.cols[key] = cols
        self.spilled_pending -= s.n
        if self.spilled_pending == 0:
            self._spill_end = 0  # reuse the file from the start
        return seg

    def put(self, op: Op) -> None:
        """Queue an operation after every point queued so far."""
        with self.lock or contextlib.nullcontext():
            self._seal_open()
            self.chunks.append(op)
        if self.parked:
            self.wake()

    def take(self, limit: int) -> list[RunPoints | Op]:
        """Chunks from the front, in order, holding about `limit` points at most."""
        out: list[RunPoints | Op] = []
        spilled: list[tuple[int, SpilledPoints]] = []
        n = 0
        with self.lock or contextlib.nullcontext():
            chunks = self.chunks
            while chunks and n < limit:
                chunk = chunks.popleft()
                if isinstance(chunk, Op):
                    out.append(chunk)
                    continue
                if isinstance(chunk, SpilledPoints):
                    n += chunk.n
                    spilled.append((len(out), chunk))
                    out.append(RunPoints(chunk.run_id, None))  # read back below
                    continue
                if chunk.owner is not None:
                    self.open.remove(chunk)
                    k = chunk.seal()  # further points of that run go to a new segment
                else:
                    k = len(chunk)
                    self.in_memory -= k
                n += k
                out.append(chunk)
            for i, sp in spilled:
                out[i] = self._read_spill(sp)
            if self.room is not None:
                self.room.notify_all()
        return out

    def in_memory_items(self) -> int:
        """Points and operations waiting in memory."""
        with self.lock or contextlib.nullcontext():  # the caller's thread mutates both
            opened = sum(len(seg) for seg in self.open)
            return self.in_memory + opened + sum(1 for c in self.chunks if isinstance(c, Op))

    def __len__(self) -> int:
        return self.in_memory_items() + self.spilled_pending

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    queue_depth: int
    """Items waiting in memory (points and operations)."""
    spilled_pending: int
    """Points waiting in the spill file."""
    spilled_points: int
    """Points that went through the spill file because the queue was full (cumulative)."""
    batches: int
    events_written: int
    points_written: int
    retries: int
    errors: int
    failed_points: int
    """Points given up on after permanent errors; flush() raises while this is not zero."""
    last_error: str | None
    position: int
    """The log position of the last event this writer appended."""
    projected_position: int


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (StoreUnavailableError, OSError, ConnectionError, TimeoutError)) or (
        type(exc).__name__ in {"OperationalError", "InterfaceError", "ConnectionDoesNotExistError"}
    )


class _Acc:
    """Metric points of one run, gathered until something else about that run is queued."""

    __slots__ = ("cols", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.cols: dict[str, Columns] = {}

    def event(self) -> MetricsLogged:
        series = []
        for key, (steps, stamps, values) in self.cols.items():
            s = MetricSeries(key, steps, stamps, values)
            pack_series(s)
            series.append(s)
        return MetricsLogged(self.run_id, tuple(series))


class Writer:
    """One task that owns appends for this client: it numbers events per stream, appends each
    batch in one transaction, has the projector apply it, and resolves waiting futures."""

    def __init__(
        self,
        store: EventStore,
        projector: Projector,
        queue: EventQueue,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_age: float = DEFAULT_MAX_BATCH_AGE,
    ) -> None:
        self.store = store
        self.projector = projector
        self.queue = queue
        self.max_batch = max_batch
        self.max_batch_age = max_batch_age
        self._heads: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._hurry = asyncio.Event()
        self._stopping = False
        self._batches = self._events = self._points = 0
        self._retries = self._errors = self._failed_points = 0
        self._last_error: str | None = None
        self._failure: BaseException | None = None
        self._position = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.queue.threaded:
            wakeup = self._wakeup

            def wake() -> None:
                loop.call_soon_threadsafe(wakeup.set)

            self.queue.wake = wake
        else:
            self.queue.wake = self._wakeup.set
        self._task = asyncio.create_task(self._run(), name="tracker-writer")

    async def stop(self) -> None:
        """Drain everything queued, then stop. Raises WriterError if something could not be
        stored (the cause is chained)."""
        self._stopping = True
        self._hurry.set()
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._raise_failure()

    async def flush(self, timeout: float | None = None) -> int:
        """Return once everything queued before the call is in the log and the views; returns
        the log position reached. Raises WriterError if the writer has given up on anything
        since the last flush, or if `timeout` passes first."""
        if self._task is None or self._task.done():
            raise InvalidStateError(
                "the writer is not running: use the tracker inside `async with`"
            )
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.queue.put(Op(None, fut))
        self._hurry.set()
        self._wakeup.set()
        waiting: set[asyncio.Future[Any]] = {fut, self._task}
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not fut.done():
            if self._task.done():  # cannot happen by design; if it does, say so, never hang
                raise WriterError(f"the writer stopped: {self._last_error}")
            raise WriterError(
                f"flush did not complete within {timeout}s; {len(self.queue)} items waiting; "
                f"last error: {self._last_error}"
            )
        self._raise_failure()
        return self._position

    def _raise_failure(self) -> None:
        if self._failure is not None:
            exc, n = self._failure, self._failed_points
            self._failure, self._failed_points = None, 0
            what = f"{n} points could not be stored" if n else "the views could not be updated"
            raise WriterError(f"{what}: {self._last_error}") from exc

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            queue_depth=self.queue.in_memory_items(), spilled_pending=self.queue.spilled_pending,
            spilled_points=self.queue.spilled_points,
            batches=self._batches, events_written=self._events, points_written=self._points,
            retries=self._retries, errors=self._errors, failed_points=self._failed_points,
            last_error=self._last_error, position=self._position,
            projected_position=self.projector.position,
        )  # fmt: skip

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        q = self.queue
        while True:
            if not q.chunks:
                if self._stopping:
                    q.close()
                    return
                q.parked = True
                if not q.chunks:  # checked after parking: a put in between has woken us
                    await self._wakeup.wait()
                q.parked = False
                self._wakeup.clear()
                continue
            if len(q) < self.max_batch and not self._hurry.is_set():
                # Linger so that a batch gathers more than a handful of points.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self.max_batch_age)
            self._hurry.clear()
            try:
                batch = q.take(self.max_batch)
            except Exception as exc:  # reading the spill file failed: report, keep serving
                log.exception("could not take a batch from the queue")
                self._failure = exc
                self._last_error = f"queue: {type(exc).__name__}: {exc}"
                continue
            if batch:
                await self._write(batch)

    def _events_of(self, batch: Sequence[RunPoints | Op]) -> tuple[list[_Acc | Op], int]:
        """Turn queue chunks into events in order: a run's points between two of its other
        events become one MetricsLogged event, a column triple per key."""
        out: list[_Acc | Op] = []
        open_: dict[str, _Acc] = {}
        points = 0
        for chunk in batch:
            if isinstance(chunk, Op):
                if chunk.event is not None:
                    open_.pop(getattr(chunk.event, "run_id", ""), None)
                out.append(chunk)
                continue
            acc = open_.get(chunk.run_id)
            if acc is None:
                acc = open_[chunk.run_id] = _Acc(chunk.run_id)
                out.append(acc)
            for key, cols in chunk.cols.items():
                n = min(len(cols[0]), len(cols[1]), len(cols[2]))
                if len(cols[0]) != n or len(cols[2]) != n:
                    # An exception (a signal handler's) interrupted log_metric between its
                    # appends: that call raised, so its point was never accepted. Drop it.
                    for col in cols:
                        del col[n:]
                points += n
                have = acc.cols.get(key)
                if have is None:
                    acc.cols[key] = cols
                else:
                    have[0].extend(cols[0])
                    have[1].extend(cols[1])
                    have[2].extend(cols[2])
        return out, points

    async def _head(self, stream: str) -> int:
        head = self._heads.get(stream)
        if head is None:
            head = self._heads[stream] = await self.store.stream_head(stream)
        return head

    async def _write(self, batch: list[RunPoints | Op]) -> None:
        """Append one batch and project it. Never raises: what cannot be stored is counted,
        its futures fail, and the next flush() raises WriterError."""
        entries: list[tuple[DomainEvent, Op | None]] = []
        points = 0
        try:
            items, points = self._events_of(batch)
            for it in items:
                if isinstance(it, _Acc):
                    entries.append((it.event(), None))
                elif it.event is not None:
                    entries.append((it.event, it))
            entries, recorded = await self._append(entries, points)
        except Exception as exc:
            log.error("giving up on a batch of %d points: %s", points, exc)
            self._failure = exc
            self._failed_points += points
            self._last_error = f"{type(exc).__name__}: {exc}"
            for _, op in entries:
                if op is not None:
                    _settle(op.future, exc=WriterError(str(exc)))
            self._settle_barriers(batch)
            return
        self._batches += 1
        self._events += len(recorded)
        self._points += points
        await self._project(recorded)
        for _, op in entries:
            if op is not None:
                _settle(op.future, result=self._position)
        self._settle_barriers(batch)

    async def _append(
        self, entries: list[tuple[DomainEvent, Op | None]], points: int
    ) -> tuple[list[tuple[DomainEvent, Op | None]], list[RecordedEvent]]:
        """Number and append events, retrying: transient errors with backoff forever, others
        a few times; sequence conflicts by renumbering. Event ids are made once, so a retry
        after a commit whose acknowledgement was lost stores nothing twice."""
        ids = [NewEvent.new_id() for _ in entries]
        attempt = conflicts = 0
        recheck: ConcurrencyError | None = None
        while entries:
            now = time.time_ns() // 1_000_000
            heads = dict(self._heads)
            new: list[NewEvent] = []
            try:
                if recheck is not None:
                    # After a conflict, an event that had to open its stream cannot be placed
                    # if the stream now exists.
                    kept, kept_ids = [], []
                    for (event, op), event_id in zip(entries, ids, strict=True):
                        if op is not None and op.new_stream and await self._head(event.stream_id):
                            _settle(op.future, exc=recheck)
                        else:
                            kept.append((event, op))
                            kept_ids.append(event_id)
                    entries, ids, recheck = kept, kept_ids, None
                    heads = dict(self._heads)
                for (event, op), event_id in zip(entries, ids, strict=True):
                    stream = event.stream_id
                    head = heads.get(stream)
                    if head is None:
                        head = 0 if (op is not None and op.new_stream) else await self._head(stream)
                    heads[stream] = head + 1
                    new.append(NewEvent(event_id, stream, head + 1, now, event))
                recorded = await self.store.append(new)
            except ConcurrencyError as exc:
                # Another process appended to one of our streams: renumber from the log.
                conflicts += 1
                self._retries += 1
                if conflicts > _MAX_CONFLICTS:
                    raise
                for stream in {e.stream_id for e in new}:
                    self._heads.pop(stream, None)
                recheck = exc
                continue
            except Exception as exc:
                attempt += 1
                self._errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                if not _is_transient(exc) and attempt >= _PERMANENT_RETRIES:
                    raise
                for stream in {e.stream_id for e, _ in entries}:
                    self._heads.pop(stream, None)  # the commit may have happened: re-read
                self._retries += 1
                delay = min(_MAX_BACKOFF, 0.05 * 2 ** min(attempt, 10))
                log.warning("append failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            if len(recorded) < len(new):
                # Some were in the log already (an earlier attempt committed): trust the log.
                for stream in {e.stream_id for e in new}:
                    heads.pop(stream, None)
                self._position = max(self._position, await self.store.head())
            self._heads = heads
            if recorded:
                self._position = max(self._position, recorded[-1].position)
            return entries, recorded
        return entries, []

    async def _project(self, recorded: list[RecordedEvent]) -> None:
        attempt = 0
        while True:
            try:
                if recorded and self.projector.position < recorded[0].position:
                    await self.projector.apply(recorded)
                if self.projector.position < self._position:
                    await self.projector.catch_up()
                return
            except Exception as exc:
                # The log already holds these events; views catch up from it on retry.
                attempt += 1
                self._errors += 1
                self._last_error = f"projection: {type(exc).__name__}: {exc}"
                log.warning("projection failed (%s); retrying", exc)
                if attempt >= _PERMANENT_RETRIES and not _is_transient(exc):
                    self._failure = exc
                    return
                await asyncio.sleep(min(_MAX_BACKOFF, 0.05 * 2**attempt))

    def _settle_barriers(self, batch: list[RunPoints | Op]) -> None:
        for item in batch:
            if isinstance(item, Op) and item.event is None:
                _settle(item.future, result=self._position)


def _settle(fut: Any, *, result: Any = None, exc: BaseException | None = None) -> None:
    if fut is None:
        return
    if isinstance(fut, ThreadFuture):
        if not fut.done():
            fut.set_exception(exc) if exc is not None else fut.set_result(result)
        return
    if not fut.done():
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
