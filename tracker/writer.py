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
import struct
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
from tracker.events import DomainEvent, MetricSeries, MetricsLogged, NewEvent, RecordedEvent, run_stream
from tracker.projections.views import Projector
from tracker.serialization import pack_series
from tracker.stores.base import EventStore

log = logging.getLogger("tracker.writer")

POLICIES: Final = ("spill", "raise", "block")
DEFAULT_MAX_QUEUE: Final = 1_000_000
DEFAULT_MAX_BATCH: Final = 100_000
DEFAULT_MAX_BATCH_AGE: Final = 0.02
_MAX_POINTS_PER_EVENT: Final = 20_000
_MAX_BACKOFF: Final = 5.0
_PERMANENT_RETRIES: Final = 5

# A metric point in the queue: (run_id, key, value, step, timestamp_ms). Plain tuples: the
# cheapest thing CPython can build and append on the hot path.
Point = tuple[str, str, float, int, int]


class Op:
    """A non-metric queue item: one event to append (or none, for a flush barrier), and a
    future resolved once it is durable and projected."""

    __slots__ = ("event", "future", "new_stream")

    def __init__(self, event: DomainEvent | None, future: Any = None, new_stream: bool = False) -> None:
        self.event = event
        self.future = future
        self.new_stream = new_stream
        """The event must open its stream (sequence 1); a taken stream fails the op."""


_SPILL_RECORD: Final = struct.Struct("<IIdqq")  # run index, key index, value, step, timestamp


class SpillSegment:
    """Points that did not fit in memory, in an unlinked temporary file, read back in order."""

    def __init__(self, directory: str | None) -> None:
        fd, path = tempfile.mkstemp(prefix="tracker-spill-", suffix=".bin", dir=directory)
        os.unlink(path)  # nothing to clean up after a crash: these points were never flushed
        self._file = os.fdopen(fd, "w+b")
        self._buf = bytearray()
        self._names: dict[str, int] = {}
        self._by_index: list[str] = []
        self._written = 0
        self._read = 0
        self.count = 0
        self.closed = False
        self.lock = threading.Lock()

    def _index(self, name: str) -> int:
        i = self._names.get(name)
        if i is None:
            i = self._names[name] = len(self._by_index)
            self._by_index.append(name)
        return i

    def add(self, p: Point) -> bool:
        """Append a point; False if the writer has already closed this segment."""
        with self.lock:
            if self.closed:
                return False
            self._buf += _SPILL_RECORD.pack(self._index(p[0]), self._index(p[1]), p[2], p[3], p[4])
            self.count += 1
            if len(self._buf) >= 1 << 20:
                self._write_out()
            return True

    def _write_out(self) -> None:
        self._file.seek(self._written)
        self._file.write(self._buf)
        self._written += len(self._buf)
        self._buf.clear()

    def take(self, n: int) -> list[Point]:
        """Up to n points in the order they were added."""
        with self.lock:
            if self._buf:
                self._write_out()
            self._file.flush()
            size = _SPILL_RECORD.size
            self._file.seek(self._read)
            raw = self._file.read(min(n * size, self._written - self._read))
            self._read += len(raw)
            names = self._by_index
            out: list[Point] = [(names[r], names[k], v, s, t) for r, k, v, s, t in _SPILL_RECORD.iter_unpack(raw)]
            self.count -= len(out)
            return out

    def close_file(self) -> None:
        self._file.close()


class EventQueue:
    """The in-process queue between log_* calls and the writer. Appending never awaits."""

    def __init__(self, max_queue: int, on_full: str, threaded: bool, spill_dir: str | None) -> None:
        if on_full not in POLICIES:
            raise ValueError(f"on_full must be one of {POLICIES}, got {on_full!r}")
        if on_full == "block" and not threaded:
            raise ValueError(
                'on_full="block" needs the sync facade (tracker.SyncTracker): an async caller '
                'cannot block without stalling the writer; use "spill" or "raise"'
            )
        self.items: deque[Any] = deque()
        self.max_queue = max_queue
        self.on_full = on_full
        self.threaded = threaded
        self.spill_dir = spill_dir
        self.spilling: SpillSegment | None = None
        self.spilled_points = 0
        self.parked = False
        self.wake: Callable[[], None] = lambda: None
        self.room = threading.Condition()

    def put(self, item: Any) -> None:
        """Queue an Op, or a Point arriving on the slow path (the queue is full or spilling)."""
        items = self.items
        seg = self.spilling
        if item.__class__ is tuple:
            if seg is not None:
                if len(items) > self.max_queue // 2 and seg.add(item):
                    self.spilled_points += 1
                    return
                with seg.lock:
                    seg.closed = True  # back to memory: the writer has caught up
                self.spilling = None
            elif len(items) >= self.max_queue:
                self._full(item)
                return
        elif seg is not None:
            with seg.lock:
                seg.closed = True  # an op goes after the spilled points, in memory
            self.spilling = None
        items.append(item)
        if self.parked:
            self.wake()

    def _full(self, item: Point) -> None:
        if self.on_full == "raise":
            raise QueueFullError(
                f"the tracker queue holds {len(self.items)} items and the writer is behind; "
                "await tk.flush() now and then in your loop, raise max_queue, or use "
                'on_full="spill"'
            )
        if self.on_full == "block":
            with self.room:
                self.room.wait_for(lambda: len(self.items) < self.max_queue)
            self.put(item)
            return
        seg = SpillSegment(self.spill_dir)
        seg.add(item)  # a new segment is open
        self.spilled_points += 1
        self.spilling = seg
        self.items.append(seg)
        if self.parked:
            self.wake()

    def take(self, limit: int) -> list[Any]:
        """Up to `limit` items (points count one each) from the front, in order."""
        out: list[Any] = []
        items = self.items
        while items and len(out) < limit:
            head = items[0]
            if head.__class__ is SpillSegment:
                if out:
                    break  # spilled points start their own batch
                out = head.take(limit)
                with head.lock:
                    if head.count == 0:
                        head.closed = True
                        if self.spilling is head:
                            self.spilling = None
                        items.popleft()
                        head.close_file()
                break
            out.append(items.popleft())
        if self.threaded and self.on_full == "block":
            with self.room:
                self.room.notify_all()
        return out

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    queue_depth: int
    """Items waiting in memory (points and operations)."""
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

    __slots__ = ("cols", "n", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.cols: dict[str, tuple[list[int], list[int], list[float]]] = {}
        self.n = 0

    def event(self) -> MetricsLogged:
        series = []
        for key, (steps, stamps, values) in self.cols.items():
            s = MetricSeries(key, array("q", steps), array("q", stamps), array("d", values))
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
            self.queue.wake = lambda: loop.call_soon_threadsafe(self._wakeup.set)
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
        if self._failure is not None:
            raise WriterError(
                f"{self._failed_points} points could not be stored: {self._last_error}"
            ) from self._failure

    async def flush(self, timeout: float | None = None) -> int:
        """Return once everything queued before the call is in the log and the views; returns
        the log position reached. Raises WriterError if the writer has given up on anything
        since the last flush, or if `timeout` passes first."""
        if self._task is None or self._task.done():
            raise InvalidStateError("the writer is not running: use the tracker inside `async with`")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.queue.put(Op(None, fut))
        self._hurry.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise WriterError(
                f"flush did not complete within {timeout}s; {len(self.queue)} items waiting; "
                f"last error: {self._last_error}"
            ) from None
        self._raise_failure()
        return self._position

    def _raise_failure(self) -> None:
        if self._failure is not None:
            exc, n = self._failure, self._failed_points
            self._failure, self._failed_points = None, 0
            raise WriterError(f"{n} points could not be stored: {self._last_error}") from exc

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            queue_depth=len(self.queue), spilled_points=self.queue.spilled_points,
            batches=self._batches, events_written=self._events, points_written=self._points,
            retries=self._retries, errors=self._errors, failed_points=self._failed_points,
            last_error=self._last_error, position=self._position,
            projected_position=self.projector.position,
        )  # fmt: skip

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        q = self.queue
        while True:
            if not q.items:
                if self._stopping:
                    return
                q.parked = True
                if not q.items:  # checked after parking: a put in between has woken us
                    await self._wakeup.wait()
                q.parked = False
                self._wakeup.clear()
                continue
            if len(q.items) < self.max_batch and not self._hurry.is_set():
                # Linger so that a batch gathers more than a handful of points.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self.max_batch_age)
            self._hurry.clear()
            batch = q.take(self.max_batch)
            if batch:
                await self._write(batch)

    def _events_of(self, batch: Sequence[Any]) -> tuple[list[DomainEvent | _Acc | Op], int]:
        """Turn queue items into events in order; consecutive points of a run are one event."""
        out: list[DomainEvent | _Acc | Op] = []
        open_: dict[str, _Acc] = {}
        points = 0
        for item in batch:
            if item.__class__ is tuple:
                run_id, key, value, step, ts = item
                acc = open_.get(run_id)
                if acc is None or acc.n >= _MAX_POINTS_PER_EVENT:
                    acc = open_[run_id] = _Acc(run_id)
                    out.append(acc)
                col = acc.cols.get(key)
                if col is None:
                    col = acc.cols[key] = ([], [], [])
                col[0].append(step)
                col[1].append(ts)
                col[2].append(value)
                acc.n += 1
                points += 1
            else:
                if item.event is not None:
                    open_.pop(getattr(item.event, "run_id", ""), None)
                out.append(item)
        return out, points

    async def _head(self, stream: str) -> int:
        head = self._heads.get(stream)
        if head is None:
            head = self._heads[stream] = await self.store.stream_head(stream)
        return head

    async def _write(self, batch: list[Any]) -> None:
        items, points = self._events_of(batch)
        entries: list[tuple[DomainEvent, Op | None]] = []
        for it in items:
            if isinstance(it, _Acc):
                entries.append((it.event(), None))
            elif isinstance(it, Op):
                if it.event is not None:
                    entries.append((it.event, it))
            else:
                entries.append((it, None))
        recorded: list[RecordedEvent] = []
        attempt = 0
        while entries:
            now = time.time_ns() // 1_000_000
            heads = dict(self._heads)
            new: list[NewEvent] = []
            try:
                for event, op in entries:
                    stream = event.stream_id
                    head = heads.get(stream)
                    if head is None:
                        head = 0 if (op is not None and op.new_stream) else await self._head(stream)
                    heads[stream] = head + 1
                    new.append(NewEvent(NewEvent.new_id(), stream, head + 1, now, event))
                recorded = await self.store.append(new)
                self._heads = heads
                break
            except ConcurrencyError as exc:
                # Another process appended to one of our streams: re-read the heads and
                # renumber; an event that had to open its stream cannot be placed.
                self._retries += 1
                streams = {e.stream_id for e in new}
                for s in streams:
                    self._heads[s] = await self.store.stream_head(s)
                kept = []
                for event, op in entries:
                    if op is not None and op.new_stream and self._heads[event.stream_id] > 0:
                        _settle(op.future, exc=exc)
                    else:
                        kept.append((event, op))
                entries = kept
            except Exception as exc:
                attempt += 1
                self._errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                if not _is_transient(exc) and attempt >= _PERMANENT_RETRIES:
                    log.error("giving up on a batch of %d points: %s", points, exc)
                    self._failure = exc
                    self._failed_points += points
                    for _, op in entries:
                        if op is not None:
                            _settle(op.future, exc=WriterError(str(exc)))
                    self._settle_barriers(batch, error=exc)
                    return
                self._retries += 1
                delay = min(_MAX_BACKOFF, 0.05 * 2 ** min(attempt, 10))
                log.warning("append failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
        if recorded:
            self._position = max(self._position, recorded[-1].position)
        self._batches += 1
        self._events += len(recorded)
        self._points += points
        await self._project(recorded)
        for _, op in entries:
            if op is not None:
                _settle(op.future, result=self._position)
        self._settle_barriers(batch)

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

    def _settle_barriers(self, batch: list[Any], error: BaseException | None = None) -> None:
        for item in batch:
            if item.__class__ is Op and item.event is None:
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
