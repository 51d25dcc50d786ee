"""The batching writer: drains the client queue into the log through the command handler.

Defaults (all per Writer): a batch is committed when it holds `max_batch` points or its first
item has waited `max_batch_age` seconds (20 ms); an operation someone awaits (a flush, a read,
a server request) is committed at once, together with whatever else is queued (group commit).
A crash loses at most the points no `flush()` acknowledged. The queue holds at most `max_queue`
items, points and operations alike; what happens beyond that is the `on_full` policy:

- "block" (sync facade only): the logging thread waits until the writer makes room.
- "raise": log_* raises QueueFullError and queues nothing of that call.
- "spill" (default): points and operations go to an unlinked spill file next to the log and
  are written from there in order; memory stays flat whatever the producer's speed. The
  writer's spill task writes them out between the loop's steps once the queue is three
  quarters full; a log_* call spills by itself only when the queue is full all the same (a
  loop that never awaits).

While the store is down, batches are retried with jittered backoff, nothing is dropped, and
`flush()` raises WriterError once writes have failed for `write_timeout` seconds. On shutdown,
`stop(grace)` drains for at most `grace` seconds, then writes what is left to a recovery file
that the next open of the store replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import tempfile
import threading
import time
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import stamina

from tracker import wire
from tracker.commands import Command, LogBatch
from tracker.errors import (
    InvalidStateError,
    QueueFullError,
    StoreUnavailableError,
    TrackerError,
    WriterError,
)
from tracker.events import MetricSeries, RecordedEvent
from tracker.handler import Accepted, CommandHandler, Outcome
from tracker.projections.runner import ProjectionRunner
from tracker.serialization import pack_series

log = logging.getLogger("tracker.writer")

POLICIES: Final = ("spill", "raise", "block")
DEFAULT_MAX_QUEUE: Final = 1_000_000
DEFAULT_MAX_BATCH: Final = 100_000
DEFAULT_MAX_BATCH_AGE: Final = 0.02
DEFAULT_WRITE_TIMEOUT: Final = 30.0
DEFAULT_GRACE: Final = 30.0
_MAX_REJECTIONS_KEPT: Final = 100

CHUNK: Final = 16_384
"""Points per queue buffer: the unit the writer takes and the spill file stores."""


class Op:
    """A non-metric queue item: one command (or none, for a flush barrier), and a future
    resolved once it is durable and projected (or with the error that refused it)."""

    __slots__ = ("command", "future")

    def __init__(self, command: Command | None, future: Any = None) -> None:
        self.command = command
        self.future = future


Columns = tuple["array[int]", "array[int]", "array[float]"]
"""(steps, timestamps, values) of one metric key."""

Rows = tuple["array[int]", "array[int]", "array[float]"]
"""(steps, timestamps, values) of a key set logged together by log_metrics: a step and a
timestamp a row, shared by its keys, and the row's values, one a key, in the key set's order."""


class RunPoints:
    """Queued points of one run, appended to by that run's log_* calls until something seals
    it (another event of the run, the writer taking it, or `chunk` points on one key): a
    column triple per key (`cols`, log_metric's) and rows per key set (`rows`, log_metrics',
    which append the step and timestamp once a call). A key lives in one of them only, so its
    points stay in order. Arrays hold raw numbers: a queued point costs at most 24 bytes, is
    invisible to the garbage collector, and arrives at the writer already grouped by key."""

    __slots__ = ("cols", "owner", "rows", "run_id")

    def __init__(self, run_id: str, owner: Any) -> None:
        self.run_id = run_id
        self.owner = owner
        """The Run whose `_points` this is while it is open; None once sealed."""
        self.cols: dict[str, Columns] = {}
        self.rows: dict[tuple[str, ...], Rows] = {}

    def __len__(self) -> int:
        return sum(len(c[2]) for c in self.cols.values()) + sum(
            len(r[2]) for r in self.rows.values()
        )

    def explode(self, keys: Iterable[str]) -> None:
        """Turn the key sets holding any of `keys` into columns, one a key: a call that logs
        one of their keys apart from its set appends to a column after the rows' points."""
        wanted = set(keys)
        for key_set in [ks for ks in self.rows if not wanted.isdisjoint(ks)]:
            steps, stamps, values = self.rows.pop(key_set)
            m = len(key_set)
            n = min(len(steps), len(stamps), len(values) // m)  # see Writer._items
            for j, key in enumerate(key_set):
                self.cols[key] = (steps[:n], stamps[:n], values[j : n * m : m])

    def seal(self) -> int:
        """Stop appends to this segment; returns its point count."""
        if self.owner is not None:
            self.owner._points = None
            self.owner = None
        return len(self)


class Spilled:
    """A sealed segment or an operation written to the queue's spill file."""

    __slots__ = ("counts", "length", "n", "offset", "row_counts", "run_id")

    def __init__(self, run_id: str | None, offset: int, counts: list[tuple[str, int]],
                 length: int = 0, row_counts: list[tuple[tuple[str, ...], int]] | None = None,
                 ) -> None:  # fmt: skip
        self.run_id = run_id
        self.offset = offset
        self.counts = counts
        """(key, points) of each column, in the order written."""
        self.row_counts = row_counts or []
        """(key set, rows) of each key set's rows, written after the columns."""
        self.length = length
        """Bytes of an operation's encoded command (0 for points)."""
        self.n = (
            sum(n for _, n in counts) + sum(len(ks) * n for ks, n in self.row_counts)
            if run_id is not None
            else 1
        )

    def __len__(self) -> int:
        return self.n


class EventQueue:
    """The in-process queue between log_* calls and the writer: a deque of chunks, each a
    RunPoints segment, an Op, or one of them spilled to disk. Queuing an Op seals every open
    segment, so the order between points and other events is kept. Appending never awaits;
    with `threaded` (the sync facade) appends and takes hold `lock`."""

    def __init__(self, max_queue: int, on_full: str, threaded: bool, spill_dir: str | None) -> None:
        if on_full not in POLICIES:
            raise _invalid(f"on_full must be one of {POLICIES}, got {on_full!r}")
        if on_full == "block" and not threaded:
            raise _invalid(
                'on_full="block" needs the sync facade (tracker.SyncTracker): an async caller '
                'cannot block without stalling the writer; use "spill" or "raise"'
            )
        if max_queue < 1:
            raise _invalid(f"max_queue must be at least 1, got {max_queue}")
        self.chunks: deque[RunPoints | Spilled | Op] = deque()
        self.open: list[RunPoints] = []
        self.max_queue = max_queue
        self.on_full = on_full
        self.chunk = max(1, min(CHUNK, max_queue // 4))
        """Points per key per segment: small queues get small segments so capacity stays exact."""
        self.threaded = threaded
        self.lock = threading.Lock() if threaded else None
        self.room = threading.Condition(self.lock) if threaded else None
        self.spill_dir = spill_dir
        self._spill: int | None = None
        """The spill file's descriptor: unbuffered, positional reads and writes only."""
        self._spill_end = 0
        self.in_memory = 0
        """Points in sealed in-memory segments, plus operations."""
        self.spilled_pending = 0
        self.spilled_points = 0
        self.spilled_inline = 0
        """Points a log_* call had to spill itself (cumulative)."""
        self.soft_limit = max(1, max_queue * 3 // 4)
        """From here on the spill task writes sealed items out (on_full="spill")."""
        self.want_spill: Callable[[], None] = lambda: None
        """Set by the writer: wakes its spill task. Called with the lock held, if any."""
        self.parked = False
        self.full = False
        """A producer waits for room: the writer must not linger."""
        self.oldest: float | None = None
        """time.monotonic() when the oldest item still queued was queued."""
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
        elif self.in_memory >= self.soft_limit and self.on_full == "spill":
            self.want_spill()
        seg = RunPoints(run_id, owner)
        owner._points = seg
        self.chunks.append(seg)
        self.open.append(seg)
        if self.oldest is None:
            self.oldest = time.monotonic()
        if self.parked:
            self.wake()
        return seg

    def _full(self, keep: Op | None = None) -> None:
        if self.on_full == "raise":
            raise QueueFullError(
                f"the tracker queue holds {self.in_memory:,} items and the writer is behind; "
                "await tk.flush() now and then in your loop, raise max_queue, or use "
                'on_full="spill"'
            )
        if self.on_full == "block":
            assert self.room is not None
            self.full = True
            self.wake()
            try:
                self.room.wait_for(lambda: self.in_memory < self.max_queue)
            finally:
                self.full = False
            return
        # The spill task fell behind (or the loop never lets it run): spill here, down to half.
        try:
            before = self.spilled_points
            while self.in_memory >= self.max_queue // 2 and self.spill_one(keep):
                pass
            self.spilled_inline += self.spilled_points - before
        except OSError as exc:
            where = self.spill_dir or tempfile.gettempdir()
            full = "disk full" if exc.errno == 28 else f"cannot write ({exc.strerror})"
            raise QueueFullError(
                f"the tracker queue holds {self.in_memory:,} items and cannot spill more: "
                f"{full} at {where}; nothing queued so far is lost, and logging resumes when "
                "the writer catches up or space returns"
            ) from exc

    def spill_one(self, keep: Op | None = None) -> bool:
        """Write the newest sealed item still in memory to the spill file, while more than half
        of `max_queue` is in memory; returns whether it wrote one. The newest, because the
        writer reads the oldest next, from memory. Operations someone awaits stay in memory.
        Raises OSError when the disk refuses (nothing is lost: the item stays queued)."""
        if self.in_memory < self.max_queue // 2:
            return False
        chunks = self.chunks
        for i in range(len(chunks) - 1, -1, -1):
            chunk = chunks[i]
            if isinstance(chunk, RunPoints) and chunk.owner is None:
                chunks[i] = self._write_points(chunk)
                return True
            if isinstance(chunk, Op) and chunk.future is None and chunk is not keep:
                chunks[i] = self._write_op(chunk)
                return True
        return False

    def _spill_fd(self) -> int:
        if self._spill is None:
            fd, path = tempfile.mkstemp(prefix="tracker-spill-", dir=self.spill_dir)
            os.unlink(path)  # nothing to clean up after a crash: these points were never flushed
            self._spill = fd
            self._spill_end = 0
        return self._spill

    def _spill_write(self, parts: Sequence[Any]) -> int:
        """Write `parts` (buffers) after the spill file's live data; return where they start.
        Unbuffered positional writes, because a write the disk refuses must leave nothing
        behind: a buffered file keeps the refused bytes and fails every later flush, so that
        reading back what was spilled before failed too (and the writer lost a batch)."""
        fd = self._spill_fd()
        start = at = self._spill_end
        try:
            for part in parts:
                view = memoryview(part).cast("B")
                while view:
                    n = os.pwrite(fd, view, at)
                    if n <= 0:  # never for a regular file; never loop forever either
                        raise OSError(errno.EIO, f"short write to the spill file at {at}")
                    view, at = view[n:], at + n
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)  # give back what a partly done write took
            raise
        self._spill_end = at
        return start

    def _spill_read(self, at: int, size: int) -> bytes:
        assert self._spill is not None
        data = os.pread(self._spill, size, at)
        if len(data) != size:
            raise OSError(errno.EIO, f"the spill file ends at {at + len(data)}, before {at + size}")
        return data

    def _write_points(self, seg: RunPoints) -> Spilled:
        counts = [(key, len(cols[2])) for key, cols in seg.cols.items()]
        row_counts = []
        parts = [col for cols in seg.cols.values() for col in cols]
        for key_set, (steps, stamps, values) in seg.rows.items():
            n = min(len(steps), len(stamps), len(values) // len(key_set))  # see Writer._items
            row_counts.append((key_set, n))
            parts += [steps[:n], stamps[:n], values[: n * len(key_set)]]
        start = self._spill_write(parts)
        spilled = Spilled(seg.run_id, start, counts, row_counts=row_counts)
        self.in_memory -= spilled.n
        self.spilled_pending += spilled.n
        self.spilled_points += spilled.n
        return spilled

    def _write_op(self, op: Op) -> Spilled:
        assert op.command is not None
        data = orjson.dumps(wire.encode(op.command))
        start = self._spill_write([data])
        self.in_memory -= 1
        self.spilled_pending += 1
        return Spilled(None, start, [], len(data))

    def _read_spill(self, s: Spilled) -> RunPoints | Op:
        out: RunPoints | Op
        if s.run_id is None:
            out = Op(wire.decode(orjson.loads(self._spill_read(s.offset, s.length))))
        else:
            out = RunPoints(s.run_id, None)
            at = s.offset
            for key, n in s.counts:
                out.cols[key] = cols = (array("q"), array("q"), array("d"))
                at = self._read_columns(cols, (n, n, n), at)
            for key_set, n in s.row_counts:
                out.rows[key_set] = rows = (array("q"), array("q"), array("d"))
                at = self._read_columns(rows, (n, n, n * len(key_set)), at)
        self.spilled_pending -= s.n
        if self.spilled_pending == 0:
            self._spill_end = 0  # reuse the file from the start
        return out

    def _read_columns(self, cols: Columns, lengths: tuple[int, int, int], at: int) -> int:
        parts: tuple[array[Any], ...] = cols
        for col, n in zip(parts, lengths, strict=True):
            size = n * col.itemsize
            col.frombytes(self._spill_read(at, size))
            at += size
        return at

    def put(self, op: Op, *, bypass_policy: bool = False) -> None:
        """Queue an operation after every point queued so far, by the full-queue policy;
        a flush barrier, or an operation put with `bypass_policy`, is queued even when full."""
        with self.lock or contextlib.nullcontext():
            self._seal_open()
            if self.in_memory >= self.max_queue and op.command is not None and not bypass_policy:
                self._full(op)
            elif self.in_memory >= self.soft_limit and self.on_full == "spill":
                self.want_spill()
            self.chunks.append(op)
            self.in_memory += 1
            if self.oldest is None:
                self.oldest = time.monotonic()
        if self.parked:
            self.wake()

    def take(self, limit: int) -> list[RunPoints | Op]:
        """Chunks from the front, in order, holding about `limit` points at most."""
        out: list[RunPoints | Op] = []
        spilled: list[tuple[int, Spilled]] = []
        n = 0
        with self.lock or contextlib.nullcontext():
            chunks = self.chunks
            while chunks and n < limit:
                chunk = chunks.popleft()
                if isinstance(chunk, Op):
                    self.in_memory -= 1
                    out.append(chunk)
                    if isinstance(chunk.command, LogBatch):  # a batch's size is in points
                        n += chunk.command.point_count
                    continue
                if isinstance(chunk, Spilled):
                    n += chunk.n
                    spilled.append((len(out), chunk))
                    out.append(Op(None))  # read back below
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
            self.oldest = time.monotonic() if chunks else None
            if self.room is not None:
                self.room.notify_all()
        return out

    def in_memory_items(self) -> int:
        """Points and operations waiting in memory."""
        with self.lock or contextlib.nullcontext():  # the caller's thread mutates both
            return self.in_memory + sum(len(seg) for seg in self.open)

    def __len__(self) -> int:
        return self.in_memory_items() + self.spilled_pending

    def close(self) -> None:
        if self._spill is not None:
            os.close(self._spill)
            self._spill = None


def _invalid(message: str) -> Exception:
    from tracker.errors import InvalidInputError

    return InvalidInputError(message)


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    queue_depth: int
    """Items waiting in memory (points and operations)."""
    spilled_pending: int
    """Items waiting in the spill file."""
    spilled_points: int
    """Points that went through the spill file because the queue was full (cumulative)."""
    spilled_inline: int
    """Of those, points a log_* call spilled itself, because the loop did not await often
    enough for the writer's spill task to keep the queue below full (cumulative)."""
    batches: int
    events_written: int
    points_written: int
    retries: int
    errors: int
    failed_points: int
    """Points refused (their run was deleted, say); flush() raises while this is not zero."""
    rejected: int
    """Operations refused by the rules since the last flush (flush() raises the first)."""
    last_error: str | None
    position: int
    """The log position of the last event this writer appended."""
    projected_position: int
    projection_errors: int
    """Events a projection could not apply and skipped (see ProjectionRunner.errors())."""
    oldest_pending_age: float | None
    """Seconds the oldest item not yet durable has waited (None when nothing waits)."""
    failing_for: float | None
    """Seconds writes have been failing (None while they succeed)."""


class _Item:
    """A command of a batch, what waits on it, and how it ended."""

    __slots__ = ("command", "op", "points", "result")

    def __init__(self, command: Command | None, op: Op | None, points: int) -> None:
        self.command: Command = command  # type: ignore[assignment]  # set before use
        self.op, self.points = op, points
        self.result: Accepted | None = None


class _Acc:
    """Metric points of one run, gathered until something else about that run is queued:
    each key's pieces, in order (array columns, or numpy views of a key set's rows)."""

    __slots__ = ("pieces", "points", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.pieces: dict[str, list[tuple[Any, Any, Any]]] = {}
        self.points = 0

    def add(self, key: str, steps: Any, stamps: Any, values: Any) -> None:
        if len(values):
            self.pieces.setdefault(key, []).append((steps, stamps, values))
            self.points += len(values)

    def command(self) -> LogBatch:
        series = []
        for key, pieces in self.pieces.items():
            if len(pieces) == 1:
                steps, stamps, values = pieces[0]
            else:
                steps, stamps, values = (np.concatenate(c) for c in zip(*pieces, strict=True))
            series.append(MetricSeries(key, steps, stamps, values))
        return LogBatch(run_id=self.run_id, series=tuple(series))


class _GaveUp(Exception):
    """The shutdown grace period ended while the store was still failing."""


class Writer:
    """One task that owns appends for this client: it turns queued points and commands into a
    batch, has the handler decide and append it (one transaction), has the projections apply
    it, and resolves waiting futures."""

    def __init__(
        self,
        handler: CommandHandler,
        runner: ProjectionRunner | None,
        queue: EventQueue,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_age: float = DEFAULT_MAX_BATCH_AGE,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        recovery_dir: str | Path | None = None,
    ) -> None:
        for name, value in (("max_batch", max_batch), ("max_batch_age", max_batch_age),
                            ("write_timeout", write_timeout)):  # fmt: skip
            if not value > 0:
                raise _invalid(f"{name} must be positive, got {value!r}")
        self.handler = handler
        self.runner = runner
        self.queue = queue
        self.max_batch = max_batch
        self.max_batch_age = max_batch_age
        self.write_timeout = write_timeout
        self.recovery_dir = Path(recovery_dir) if recovery_dir is not None else None
        self._task: asyncio.Task[None] | None = None
        self._spiller: asyncio.Task[None] | None = None
        self._spill_wanted = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._hurry = asyncio.Event()
        self._stopping = False
        self._deadline: float | None = None
        self._inflight: list[_Item] = []
        self._batches = self._events = self._points = 0
        self._retries = self._errors = self._failed_points = 0
        self._rejections: list[TrackerError] = []
        self._rejected = 0
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._failed_tries = 0
        """Store attempts that failed so far: a wait gives up only after one of its own."""
        self._position = 0
        self.recovered_to: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.queue.threaded:
            wakeup = self._wakeup

            def wake() -> None:
                loop.call_soon_threadsafe(wakeup.set)

            self.queue.wake = wake
            spill_wanted = self._spill_wanted

            def want_spill() -> None:
                if not spill_wanted.is_set():  # one wake-up is enough; spare the loop's pipe
                    loop.call_soon_threadsafe(spill_wanted.set)

            self.queue.want_spill = want_spill
        else:
            self.queue.wake = self._wakeup.set
            self.queue.want_spill = self._spill_wanted.set
        self._spiller = asyncio.create_task(self._spill(), name="tracker-spill")
        self._task = asyncio.create_task(self._run(), name="tracker-writer")

    async def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Drain everything queued, for at most `grace` seconds while the store fails; then
        write what is left to a recovery file (replayed by the next open) and raise
        WriterError saying where. Also raises WriterError if something was refused."""
        self._stopping = True
        self._deadline = time.monotonic() + grace
        self._hurry.set()
        self._wakeup.set()
        if self._task is not None:
            task, self._task = self._task, None
            await task
        if self.recovered_to is not None:
            raise WriterError(
                f"the store stayed unavailable for the {grace:.0f}s shutdown grace period "
                f"({self._last_error}); what was not written is kept in {self.recovered_to} "
                "and will be written when the store next opens"
            )
        self._raise_failure()

    async def flush(self, timeout: float | None = None) -> int:
        """Return once everything queued before the call is in the log and the views; returns
        the log position reached. Raises the error that refused a write queued without
        waiting for it (ParamConflictError, say), WriterError when writes have been failing
        for `write_timeout` seconds (nothing is dropped: they are retried), or when `timeout`
        passes first."""
        if self._task is None or self._task.done():
            raise InvalidStateError(
                "the writer is not running: use the tracker inside `async with`"
            )
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put(Op(None, fut))
        self._hurry.set()
        self._wakeup.set()
        await self._wait(fut, timeout)
        self._raise_failure()
        return self._position

    async def submit(self, command: Command) -> Accepted:
        """Queue a command and wait until it is durable and projected; raises what refused it."""
        if self._task is None or self._task.done():
            raise InvalidStateError(
                "the writer is not running: use the tracker inside `async with`"
            )
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put(Op(command, fut))
        self._hurry.set()
        self._wakeup.set()
        await self._wait(fut, None)
        result = fut.result()
        assert isinstance(result, Accepted)
        return result

    async def _wait(self, fut: asyncio.Future[Any], timeout: float | None) -> None:
        started = time.monotonic()
        tries = self._failed_tries
        while not fut.done():
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                raise WriterError(
                    f"not durable within {timeout}s; {len(self.queue)} items waiting; "
                    f"last error: {self._last_error}"
                )
            step = 0.25 if left is None else min(0.25, left)
            assert self._task is not None
            # FIRST_COMPLETED: the default waits for both, and the writer task never ends,
            # so every awaited command would take the whole step.
            await asyncio.wait({fut, self._task}, timeout=step, return_when=asyncio.FIRST_COMPLETED)
            if self._task.done() and not fut.done():  # cannot happen by design; never hang
                raise WriterError(f"the writer stopped: {self._last_error}")
            failing = self._failing_since
            # Each wait gives the store write_timeout to come back, counted from when it
            # started failing or from when this wait began, whichever is later.
            # And only once an attempt made during this wait failed too: the store may be back
            # while the writer still sleeps out its backoff (up to 5 s), and the retry it is
            # about to make will then succeed.
            since = None if failing is None else max(failing, started)
            if (
                not fut.done()
                and since
                and time.monotonic() - since > self.write_timeout
                and self._failed_tries > tries
            ):
                raise WriterError(
                    f"writes have failed for {time.monotonic() - failing:.0f}s: "  # type: ignore[operator]
                    f"{self._last_error}; nothing is lost: {len(self.queue)} items are kept "
                    "queued and retried until the store is back"
                )
        if fut.exception() is not None:
            raise fut.exception()  # type: ignore[misc]

    def _raise_failure(self) -> None:
        if self._rejections:
            first = self._rejections[0]
            more = self._rejected - 1
            self._rejections, self._rejected, self._failed_points = [], 0, 0
            if more:
                first.add_note(f"{more} more writes queued without waiting were refused too")
            raise first

    def pending(self) -> bool:
        """Whether anything queued is not yet durable and projected (a read that must see its
        own writes waits for it)."""
        runner = self.runner
        behind = runner is not None and runner.position < self._position
        return bool(len(self.queue) or self._inflight or behind)

    def statistics(self) -> WriterStatistics:
        now = time.monotonic()
        oldest = self.queue.oldest
        if self._inflight and self._batch_started is not None:
            oldest = min(oldest or now, self._batch_started)
        runner = self.runner
        return WriterStatistics(
            queue_depth=self.queue.in_memory_items(), spilled_pending=self.queue.spilled_pending,
            spilled_points=self.queue.spilled_points, spilled_inline=self.queue.spilled_inline,
            batches=self._batches, events_written=self._events, points_written=self._points,
            retries=self._retries, errors=self._errors, failed_points=self._failed_points,
            rejected=self._rejected, last_error=self._last_error, position=self._position,
            projected_position=runner.position if runner is not None else self._position,
            projection_errors=runner.errors_count if runner is not None else 0,
            oldest_pending_age=None if oldest is None else now - oldest,
            failing_for=None if self._failing_since is None else now - self._failing_since,
        )  # fmt: skip

    _batch_started: float | None = None

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        q = self.queue
        try:
            while True:
                if not q.chunks:
                    if self._stopping:
                        return
                    q.parked = True
                    if not q.chunks:  # checked after parking: a put in between has woken us
                        await self._wakeup.wait()
                    q.parked = False
                    self._wakeup.clear()
                    continue
                if len(q) < self.max_batch and not self._hurry.is_set() and not q.full:
                    # Linger so that a batch gathers more than a handful of points.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), self.max_batch_age)
                self._hurry.clear()
                self._batch_started = q.oldest
                try:
                    batch = q.take(self.max_batch)
                except Exception as exc:  # reading the spill file failed: report, keep serving
                    log.exception("could not take a batch from the queue")
                    self._last_error = f"queue: {type(exc).__name__}: {exc}"
                    self._errors += 1
                    continue
                if batch:
                    await self._write(batch)
                self._batch_started = None
        except _GaveUp:
            self._save_recovery()
        finally:
            if self._spiller is not None:
                self._spiller.cancel()  # it is at an await: no write is cut short
                self._spiller = None
            q.close()

    async def _spill(self) -> None:
        """Keep the queue below full while the writer is behind: once it is three quarters
        full, write sealed items to the spill file, one a loop step, so that a log_* call
        never waits on the disk and the training loop waits on one write at most."""
        q = self.queue
        failing = False
        while True:
            await self._spill_wanted.wait()
            self._spill_wanted.clear()
            while True:
                try:
                    with q.lock or contextlib.nullcontext():
                        if not q.spill_one():
                            break
                except Exception as exc:  # the item stays queued, in memory
                    # A full disk, say: once the queue is full, the log_* call that spills
                    # itself raises QueueFullError saying why. Logged once per failing spell.
                    if not failing:
                        log.warning("could not spill the queue: %s", exc, exc_info=True)
                    failing = True
                    break
                failing = False
                await asyncio.sleep(0)

    def _items(self, batch: Sequence[RunPoints | Op]) -> list[_Item | Op]:
        """Turn queue chunks into commands in order: a run's points between two of its other
        commands become one LogBatch, a column triple per key; barriers stay in place."""
        out: list[_Item | Op] = []
        open_: dict[str, _Acc] = {}
        accs: list[tuple[_Acc, _Item]] = []
        for chunk in batch:
            if isinstance(chunk, Op):
                if chunk.command is None:
                    out.append(chunk)
                    continue
                for rid in chunk.command.run_ids():
                    open_.pop(rid, None)  # later points of that run come after it
                points = chunk.command.point_count if isinstance(chunk.command, LogBatch) else 0
                out.append(_Item(chunk.command, chunk, points))
                continue
            acc = open_.get(chunk.run_id)
            if acc is None:
                acc = open_[chunk.run_id] = _Acc(chunk.run_id)
                item = _Item(None, None, 0)
                out.append(item)
                accs.append((acc, item))
            for key, cols in chunk.cols.items():
                n = min(len(cols[0]), len(cols[1]), len(cols[2]))
                if len(cols[0]) != n or len(cols[2]) != n:
                    # An exception (a signal handler's) interrupted log_metric between its
                    # appends: that call raised, so its point was never accepted. Drop it.
                    for col in cols:
                        del col[n:]
                acc.add(key, *cols)
            for key_set, (steps, stamps, values) in chunk.rows.items():
                m = len(key_set)
                n = min(len(steps), len(stamps), len(values) // m)  # likewise for log_metrics
                s = np.frombuffer(steps, dtype=np.int64, count=n)
                t = np.frombuffer(stamps, dtype=np.int64, count=n)
                v = np.frombuffer(values, dtype=np.float64, count=n * m).reshape(n, m)
                for j, key in enumerate(key_set):
                    acc.add(key, s, t, v[:, j])
        for acc, item in accs:
            item.command = acc.command()
            item.points = acc.points
        return out

    async def _write(self, batch: list[RunPoints | Op]) -> None:
        """Store one batch and project it. Never raises (but _GaveUp at shutdown): what is
        refused fails its futures, or is kept for the next flush() to raise."""
        items = self._items(batch)
        work = [it for it in items if isinstance(it, _Item)]
        self._inflight = work
        recorded: list[RecordedEvent] = []
        if work:
            await _pack(work)
            outcomes = await self._retrying(
                lambda attempt: self.handler.handle(
                    [it.command for it in work], check_stored=attempt > 0
                )
            )
            for it, outcome in zip(work, outcomes, strict=True):
                self._settle(it, outcome)
                if isinstance(outcome, Accepted):
                    recorded += outcome.events
        self._batches += 1
        self._events += len(recorded)
        recorded.sort(key=lambda r: r.position)
        if recorded:
            self._position = max(self._position, recorded[-1].position)
        if self.runner is not None and (recorded or self.runner.position < self._position):
            runner = self.runner
            await self._retrying(lambda _: runner.apply(recorded))
        self._inflight = []
        for it in work:
            if it.op is not None and it.result is not None:
                _settle(it.op.future, result=it.result)
        for barrier in items:
            if isinstance(barrier, Op):
                _settle(barrier.future, result=self._position)

    def _settle(self, it: _Item, outcome: Outcome) -> None:
        if isinstance(outcome, Accepted):
            self._points += it.points
            it.result = outcome  # futures resolve after projection: a read that follows sees it
            return
        if it.op is not None and it.op.future is not None:
            _settle(it.op.future, exc=outcome)  # the caller is waiting: it gets the error
            it.op.future = None
            return
        self._last_error = f"{type(outcome).__name__}: {outcome}"
        self._failed_points += it.points
        self._rejected += 1
        if len(self._rejections) < _MAX_REJECTIONS_KEPT:
            self._rejections.append(outcome)
        log.error("a queued write was refused: %s", outcome)

    async def _retrying(self, work: Callable[[int], Any]) -> Any:
        """Run `work(attempt)` until the store answers: outages are retried with jittered
        backoff for as long as the writer runs (nothing is dropped), and until the grace
        period's end once it is stopping."""
        attempt = 0

        def retry(exc: Exception) -> bool:
            if not isinstance(exc, StoreUnavailableError | OSError):
                return False
            self._errors += 1
            self._retries += 1
            self._failed_tries += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            log.warning("store unavailable (%s); retrying", exc)
            return self._deadline is None or time.monotonic() < self._deadline

        try:
            async for retry_attempt in stamina.retry_context(
                on=retry, attempts=None, timeout=None, wait_initial=0.05, wait_max=5.0,
                wait_jitter=0.5,
            ):  # fmt: skip
                with retry_attempt:
                    result = await work(attempt)
                attempt += 1
        except (StoreUnavailableError, OSError) as exc:
            raise _GaveUp(str(exc)) from exc
        self._failing_since = None
        return result

    def _save_recovery(self) -> None:
        """At the end of the grace period: every command not stored, in order, to a file the
        next open replays (commands keep their ids, so a replay stores nothing twice)."""
        commands = [it.command for it in self._inflight]
        for chunk in self.queue.take(1 << 62):
            for it in self._items([chunk]):
                if isinstance(it, _Item):
                    commands.append(it.command)
                    if it.op is not None:
                        self._inflight.append(it)
                elif it.future is not None:
                    _settle(
                        it.future, exc=WriterError(f"the store is unavailable: {self._last_error}")
                    )
        waiting = [it.op.future for it in self._inflight if it.op is not None]
        self._inflight = []
        if not commands:
            self._fail_waiting(waiting, None)
            return
        directory = self.recovery_dir or Path(tempfile.gettempdir())
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"recovery-{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for command in commands:
                f.write(orjson.dumps(wire.encode(command)) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.recovered_to = path
        log.error("store unavailable at shutdown: %d commands kept in %s", len(commands), path)
        self._fail_waiting(waiting, path)

    def _fail_waiting(self, futures: list[Any], path: Path | None) -> None:
        where = f"; kept in {path} for the next open" if path else ""
        error = WriterError(
            f"the store stayed unavailable until shutdown: {self._last_error}{where}"
        )
        for fut in futures:
            _settle(fut, exc=error)


async def _pack(work: Sequence[_Item]) -> None:
    """Pack the batch's metric columns ahead of the handler, which would pack them all in one
    go when it encodes the batch's events (pack_series keeps each blob on its series): one
    series a loop step, so that a training loop never waits at an await for a whole batch's
    packing (about 4 ms for 100,000 points)."""
    for it in work:
        if isinstance(it.command, LogBatch):
            for series in it.command.series:
                try:
                    pack_series(series)
                except Exception:  # the handler refuses its command alone
                    continue
                await asyncio.sleep(0)


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


def read_recovery(path: Path) -> list[Command]:
    """The commands of a recovery file."""
    out = []
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                out.append(wire.decode(orjson.loads(line)))
    return out
