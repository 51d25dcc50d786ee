"""The queue and writer: batching, full-queue policies, retries and surfaced failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.helpers import logged_points
from tracker import QueueFullError, SyncTracker, Tracker, WriterError
from tracker.errors import InvalidInputError, StoreUnavailableError
from tracker.events import MetricsLogged, NewEvent, RecordedEvent
from tracker.stores.sqlite import SQLiteEventStore


async def _history_len(tk: Tracker, run_id: str, key: str) -> int:
    return len(await tk.get_metric_history(run_id, key, max_results=1_000_000))


async def test_points_are_batched_into_few_events(tmp_path: Path) -> None:
    """Consecutive points of a run become one MetricsLogged event per batch, not one per point."""
    async with Tracker(str(tmp_path)) as tk:
        run = await tk.start_run()
        for i in range(5000):
            run.log_metrics({"a": i, "b": -i}, step=i)
        await tk.flush()
        stats = tk.statistics()
        assert stats.points_written == 10_000
        assert stats.events_written < 10
        assert stats.queue_depth == 0 and stats.errors == 0
        assert stats.projected_position == stats.position
        assert await _history_len(tk, run.run_id, "b") == 5000


async def test_raise_policy_refuses_beyond_capacity_and_keeps_what_it_took(tmp_path: Path) -> None:
    """With on_full="raise" the call past capacity raises; everything accepted is stored."""
    async with Tracker(str(tmp_path), max_queue=100, on_full="raise") as tk:
        run = await tk.start_run()
        with pytest.raises(QueueFullError, match=r"await tk\.flush"):
            for i in range(1000):
                run.log_metric("m", i, step=i)
        await tk.flush()
        assert await _history_len(tk, run.run_id, "m") == 100


async def test_spill_policy_keeps_memory_bounded_and_order_intact(tmp_path: Path) -> None:
    """With on_full="spill" a producer that never yields overflows to disk; nothing is lost or reordered."""
    async with Tracker(str(tmp_path), max_queue=1000) as tk:
        run = await tk.start_run()
        depths = []
        for i in range(50_000):
            run.log_metric("m", float(i), step=i)
            if i == 25_000:
                run.set_tag("half", "way")  # an op in the middle of spilled points
            if i % 5000 == 0:
                depths.append(tk.statistics().queue_depth)
        # In memory: at most max_queue sealed points plus the open buffer (a quarter of it).
        assert max(depths) <= 1000 + 250 + 1
        stats = tk.statistics()
        assert stats.spilled_points > 40_000
        # The loop never awaited, so the spill task never ran: log_metric had to spill.
        assert stats.spilled_inline == stats.spilled_points
        await tk.flush()
        history = await tk.get_metric_history(run.run_id, "m", max_results=100_000)
        assert [p.step for p in history] == list(range(50_000))
        assert [p.value for p in history] == [float(i) for i in range(50_000)]
        assert (await tk.get_run(run.run_id)).data.tags["half"] == "way"
        events = [r async for r in tk.replay(run.run_id)]
        tag_at = next(i for i, r in enumerate(events) if type(r.event).__name__ == "TagsSet")
        before = sum(
            len(s)
            for r in events[:tag_at]
            if isinstance(r.event, MetricsLogged)
            for s in r.event.series
        )
        assert before == 25_001  # points logged before the tag are logged before it


class GatedStore(SQLiteEventStore):
    """A real SQLite store whose metric appends wait for `gate`: a writer that is behind. The
    gate is a threading.Event, so a test may open it from any thread (the sync facade's too)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()

    async def append(self, events: Sequence[NewEvent]) -> list[RecordedEvent]:
        if any(isinstance(e.event, MetricsLogged) for e in events):
            await asyncio.to_thread(self.gate.wait, 60)
        return await super().append(events)


async def test_spill_task_keeps_disk_writes_out_of_log_metric(tmp_path: Path) -> None:
    """While the writer is behind, a loop that awaits now and then has its overflow written
    by the writer's spill task between its steps: log_metric itself never spills, memory
    stays under max_queue, and everything arrives in order once the store catches up."""
    store = GatedStore(tmp_path / "t.db")
    async with Tracker(store=store, max_queue=1000) as tk:
        run = await tk.start_run()
        depths = []
        try:
            for i in range(20_000):
                run.log_metric("m", float(i), step=i)
                if i % 100 == 0:
                    await asyncio.sleep(0)
                    depths.append(tk.statistics().queue_depth)
            stats = tk.statistics()
        finally:
            store.gate.set()
        assert stats.spilled_points > 15_000
        assert stats.spilled_inline == 0
        assert max(depths) < 1000
        await tk.flush()
        logged = logged_points([rec async for rec in tk.replay(run.run_id)])
        assert logged["m"] == [(i, float(i)) for i in range(20_000)]  # in the order logged


def test_sync_facade_spills_on_the_loop_thread(tmp_path: Path) -> None:
    """SyncTracker(on_full="spill"): the spill task on the tracker's own loop thread writes
    the overflow while the logging thread pauses now and then; nothing is lost or reordered."""
    store = GatedStore(tmp_path / "t.db")
    with SyncTracker(store=store, max_queue=1000, on_full="spill") as tk:
        run = tk.start_run()
        try:
            for i in range(20_000):
                run.log_metric("m", float(i), step=i)
                if i % 100 == 0:
                    time.sleep(0.001)  # the loop thread gets the GIL meanwhile
            stats = tk.statistics()
        finally:
            store.gate.set()
        assert stats.spilled_points > 15_000
        assert stats.spilled_inline < stats.spilled_points  # the task wrote some
        tk.flush()
        assert logged_points(tk.replay(run.run_id))["m"] == [(i, float(i)) for i in range(20_000)]


def test_block_policy_needs_the_sync_facade() -> None:
    """An async caller cannot block; asking for it is the project's InvalidInputError at
    construction, naming the sync facade and the policies an async caller can use."""
    with pytest.raises(
        InvalidInputError, match=r"needs the sync facade \(tracker\.SyncTracker\)"
    ) as caught:
        Tracker("unused", on_full="block")
    assert '"spill" or "raise"' in str(caught.value)


class FlakyStore(SQLiteEventStore):
    """A real SQLite store whose first appends fail, as a database restarting would."""

    def __init__(self, path: Path, failures: int, exc: Exception) -> None:
        super().__init__(path)
        self.failures = failures
        self.exc = exc

    async def append(self, events: Sequence[NewEvent]) -> list[RecordedEvent]:
        if self.failures > 0 and any(type(e.event).__name__ == "MetricsLogged" for e in events):
            self.failures -= 1
            raise self.exc
        return await super().append(events)


async def test_transient_failures_are_retried_and_reported(tmp_path: Path) -> None:
    """An unavailable database is retried with backoff; statistics show it; nothing is lost."""
    store = FlakyStore(tmp_path / "t.db", 3, StoreUnavailableError("down"))
    async with Tracker(store=store) as tk:
        run = await tk.start_run()
        for i in range(100):
            run.log_metric("m", i, step=i)
        await tk.flush()
        stats = tk.statistics()
        assert stats.errors == 3 and stats.retries >= 3 and "down" in (stats.last_error or "")
        assert await _history_len(tk, run.run_id, "m") == 100


async def test_dead_database_makes_flush_time_out_with_the_cause(tmp_path: Path) -> None:
    """While the database stays down, flush(timeout) raises WriterError naming the last error."""
    store = FlakyStore(tmp_path / "t.db", 10**9, StoreUnavailableError("connection refused"))
    tk = Tracker(store=store)
    await tk.open()
    run = await tk.start_run()
    run.log_metric("m", 1.0)
    with pytest.raises(WriterError, match="connection refused"):
        await tk.flush(timeout=0.5)
    store.failures = 0  # the database comes back: the queued point is still there
    await tk.flush()
    assert await _history_len(tk, run.run_id, "m") == 1
    await tk.aclose()


async def test_permanent_failure_is_surfaced_by_flush(tmp_path: Path) -> None:
    """A write the log fails for a reason other than an outage is refused alone (not retried
    forever); flush raises WriterError with the cause, once."""
    store = FlakyStore(tmp_path / "t.db", 10**9, RuntimeError("bug"))
    async with Tracker(store=store) as tk:
        run = await tk.start_run()
        run.log_metric("m", 1.0)
        with pytest.raises(WriterError, match="could not be stored: RuntimeError: bug"):
            await asyncio.wait_for(tk.flush(), 30)
        assert tk.statistics().failed_points == 0  # reported once, then cleared
        store.failures = 0
        run.log_metric("m", 2.0)
        await tk.flush()


class CommitThenFailStore(SQLiteEventStore):
    """A real store whose next appends commit and then report a lost connection, as a
    database does when the acknowledgement of a commit never arrives."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    async def append(self, events: Sequence[NewEvent]) -> list[RecordedEvent]:
        recorded = await super().append(events)
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailableError("connection lost after commit")
        return recorded


async def test_retry_after_an_uncertain_commit_stores_nothing_twice(tmp_path: Path) -> None:
    """When a commit succeeds but its acknowledgement is lost, the retry is a no-op."""
    store = CommitThenFailStore(tmp_path / "t.db", 0)
    async with Tracker(store=store) as tk:
        store.failures = 1
        run = await tk.start_run("uncertain")  # its RunCreated goes through a lost ack
        store.failures = 1
        for i in range(10):
            run.log_metric("m", i, step=i)
        await tk.flush()
        run.log_metric("m", 10.0, step=10)
        await run.end()
        events = [r async for r in tk.replay(run.run_id)]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        points = [
            p
            for e in events
            if isinstance(e.event, MetricsLogged)
            for s in e.event.series
            for p in s.points()
        ]
        assert sorted(p[0] for p in points) == list(range(11))  # every point exactly once
        assert len([e for e in events if type(e.event).__name__ == "RunCreated"]) == 1
        exps = await tk.search_experiments()
        assert [e.name for e in exps].count("uncertain") == 1


async def test_a_torn_point_is_dropped_not_stored(tmp_path: Path) -> None:
    """A log_metric interrupted between its column appends (a signal handler raised) leaves
    columns of unequal length; the writer drops that point and stores the rest."""
    async with Tracker(str(tmp_path)) as tk:
        run = await tk.start_run()
        for i in range(5):
            run.log_metric("m", float(i), step=i)
        assert run._points is not None
        steps, stamps, _values = run._points.cols["m"]
        steps.append(99)  # what an exception after the first append leaves behind
        stamps.append(0)
        run.log_metric("other", 1.0)
        await tk.flush()
        assert tk.statistics().failed_points == 0
        history = await tk.get_metric_history(run.run_id, "m")
        assert [p.step for p in history] == [0, 1, 2, 3, 4]


def test_unequal_columns_are_never_packed() -> None:
    """The serializer refuses a series whose columns differ in length."""
    from array import array

    from tracker.events import MetricSeries
    from tracker.serialization import pack_series

    with pytest.raises(ValueError, match="differ in length"):
        pack_series(MetricSeries("m", array("q", [1, 2]), array("q", [1]), array("d", [1.0])))


def test_sync_facade_survives_concurrent_logging_ops_and_statistics(tmp_path: Path) -> None:
    """The caller thread logs and queues ops while the writer thread takes batches and
    statistics are read: nothing raises, nothing is lost."""
    import threading

    from tracker import SyncTracker

    with SyncTracker(str(tmp_path), max_queue=2000) as tk:
        runs = [tk.start_run("threads") for _ in range(3)]
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                tk.statistics()

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            for i in range(6000):
                run = runs[i % 3]
                run.log_metric(f"k{i % 50}", float(i), step=i)
                if i % 7 == 0:
                    run.set_tag("i", str(i))
        finally:
            stop.set()
            poller.join()
        tk.flush()
        for n, run in enumerate(runs):
            total = sum(
                len(tk.get_metric_history(run.run_id, f"k{k}", max_results=10_000))
                for k in range(50)
            )
            assert total == 2000, n


async def test_an_awaited_command_returns_once_durable_not_at_the_next_poll(
    tmp_path: Path,
) -> None:
    """Waiting for a command ends when its batch is stored, not when the wait's polling step
    (0.25 s) runs out: 40 awaited writes, each a few milliseconds of SQLite work, take far
    less than 40 steps (10 s), which is what they took when the wait ended only by timeout."""
    async with Tracker(str(tmp_path), max_batch_age=0.001) as tk:
        run = await tk.start_run()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(40):
            await tk.set_tag(run.run_id, f"t{i}", "v")
            await tk.flush()
        elapsed = loop.time() - started
    assert elapsed < 5.0, f"40 awaited writes took {elapsed:.1f}s"


def test_a_queued_batch_weighs_its_points_in_a_take() -> None:
    """log_metric_array's pieces are operations holding many points: the writer's batch limit
    counts their points (a take stops once it holds `limit`), so three 60,000-point pieces
    are not all taken into one 100,000-point batch."""
    import numpy as np

    from tracker.commands import LogBatch
    from tracker.events import MetricSeries
    from tracker.writer import EventQueue, Op

    q = EventQueue(1000, "spill", False, None)
    n = 60_000
    piece = MetricSeries("m", np.arange(n), np.ones(n, dtype=np.int64), np.zeros(n))
    for _ in range(3):
        q.put(Op(LogBatch(run_id="a" * 32, series=(piece,))))
    assert len(q.take(100_000)) == 2
    assert len(q.take(100_000)) == 1
