"""What an outage, a full disk or a shutdown during either does to data: nothing acknowledged
is lost, and nothing waits forever."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from array import array
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tracker import QueueFullError, Tracker, WriterError
from tracker.errors import StoreUnavailableError
from tracker.events import NewEvent, RecordedEvent
from tracker.stores.sqlite import SQLiteEventStore
from tracker.writer import EventQueue, RunPoints


class DownStore(SQLiteEventStore):
    """A real SQLite store whose appends fail while `down` is set, as a database that went
    away would."""

    down = False

    async def append(self, events: Sequence[NewEvent]) -> list[RecordedEvent]:
        if self.down:
            raise StoreUnavailableError("connection refused (the database is down)")
        return await super().append(events)


async def test_shutdown_during_an_outage_keeps_what_is_unwritten_for_the_next_open(
    tmp_path: Path,
) -> None:
    """Closing while the database is down waits the grace period, then raises WriterError
    naming the recovery file; the next open writes what it holds, each point once."""
    store = DownStore(tmp_path / "tracker.db")
    tk = Tracker(store=store, grace=1.0, write_timeout=0.5)
    await tk.open()
    run = await tk.start_run("outage")
    run.log_param("lr", "0.1")
    for i in range(500):
        run.log_metric("m", float(i), step=i)
    store.down = True
    started = time.monotonic()
    with pytest.raises(WriterError, match="recovery") as info:
        await tk.aclose()
    assert time.monotonic() - started < 10  # the grace period bounds the wait
    recovery = list((tmp_path / "recovery").glob("recovery-*.jsonl"))
    assert len(recovery) == 1 and str(recovery[0]) in str(info.value)

    for _ in range(2):  # replayed once; a second open finds nothing to replay
        async with Tracker(str(tmp_path)) as again:
            series = await again.get_metric_series(run.run_id, "m")
            assert series.steps.tolist() == list(range(500))
            got = await again.get_run(run.run_id)
            assert got.data.params == {"lr": "0.1"} and got.info.status == "FINISHED"
        assert not list((tmp_path / "recovery").glob("recovery-*.jsonl"))


async def test_flush_and_reads_raise_while_the_store_is_down_then_recover(
    tmp_path: Path,
) -> None:
    """While writes fail, flush() raises WriterError with the cause after write_timeout (not
    never); nothing is dropped, and once the store is back everything is written."""
    store = DownStore(tmp_path / "tracker.db")
    async with Tracker(store=store, write_timeout=0.5) as tk:
        run = await tk.start_run("outage")
        store.down = True
        run.log_metric("m", 1.0)
        started = time.monotonic()
        with pytest.raises(WriterError, match="database is down"):
            await tk.flush()
        with pytest.raises(WriterError, match="database is down"):
            await tk.get_run(run.run_id)  # reads flush first
        assert time.monotonic() - started < 10
        store.down = False
        await tk.flush()
        assert (await tk.get_metric_series(run.run_id, "m")).values.tolist() == [1.0]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that fills up."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)])
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_a_full_disk_is_an_error_that_names_it_and_heals(small_disk: Path) -> None:
    """On a full disk, flush() raises WriterError saying "disk full at PATH" within
    write_timeout, nothing acknowledged is lost, and writing resumes once space returns."""
    filler = small_disk / "filler"
    async with Tracker(str(small_disk / "store"), write_timeout=1.0) as tk:
        run = await tk.start_run("disk")
        run.log_metric("m", 0.0, step=0)
        await tk.flush()
        with open(filler, "wb") as f:  # noqa: ASYNC230 - filling the disk is the point
            try:
                while True:
                    f.write(b"\0" * (64 << 10))
                    f.flush()
            except OSError:
                pass
        for i in range(1, 20_000):
            run.log_metric("m", float(i), step=i)
        started = time.monotonic()
        with pytest.raises(WriterError, match="disk full at"):
            await tk.flush()
        assert time.monotonic() - started < 30
        filler.unlink()  # space returns
        await asyncio.wait_for(tk.flush(), 60)
        series = await tk.get_metric_series(run.run_id, "m")
        assert series.steps.tolist() == list(range(20_000))


def _fill(disk: Path) -> Path:
    """Fill `disk` to the last byte it will take: big writes first, then small ones (so what
    is left is less than a page, and the next write of any size fails)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: a refused write leaves nothing
        for size in (64 << 10, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while f.write(b"\0" * size):
                    pass
    return filler


async def _written(tk: Tracker, within: float = 60.0) -> None:
    """Flush until it succeeds: once space returns, the writer's next retry may come later
    than write_timeout (its backoff grows to 5 s), so one flush can still raise."""
    deadline = time.monotonic() + within
    while True:
        try:
            await tk.flush()
            return
        except WriterError:  # each attempt waits write_timeout first: this loop never spins
            if time.monotonic() > deadline:
                raise


async def test_reads_on_a_full_disk_end_in_time_with_the_cause(small_disk: Path) -> None:
    """A read that must see queued writes (get_run, search_runs, a metric series) on a full
    disk raises WriterError "disk full at PATH" within write_timeout, not never; once space
    returns the same reads see everything."""
    async with Tracker(str(small_disk / "store"), write_timeout=1.0) as tk:
        run = await tk.start_run("disk")
        run.log_metric("m", 0.0, step=0)
        await tk.flush()
        filler = await asyncio.to_thread(_fill, small_disk)
        for i in range(1, 5_000):
            run.log_metric("m", float(i), step=i)
        reads: dict[str, Callable[[], Awaitable[object]]] = {
            "get_run": lambda: tk.get_run(run.run_id),
            "search_runs": lambda: tk.search_runs(["0"]),
            "get_metric_series": lambda: tk.get_metric_series(run.run_id, "m"),
        }
        for name, read in reads.items():
            started = time.monotonic()
            with pytest.raises(WriterError, match="disk full at") as info:
                await asyncio.wait_for(read(), 30)  # a hang fails here, not at pytest's limit
            assert time.monotonic() - started < 15, name
            assert str(small_disk) in str(info.value), name
        filler.unlink()  # space returns
        await _written(tk)
        got = await tk.get_run(run.run_id)
        assert got.data.metrics == {"m": 4_999.0}
        series = await tk.get_metric_series(run.run_id, "m")
        assert series.steps.tolist() == list(range(5_000))


async def test_spilling_to_a_full_disk_refuses_the_call_and_loses_nothing(
    small_disk: Path,
) -> None:
    """With on_full="spill", a spill write that meets a full disk makes log_metric raise
    QueueFullError saying "disk full at DIR" (not a raw OSError) and queue nothing of that
    call; every point accepted before it is stored once space returns."""
    async with Tracker(
        str(small_disk / "store"), write_timeout=1.0, max_queue=1_000, on_full="spill"
    ) as tk:
        run = await tk.start_run("spill")
        run.log_metric("m", 0.0, step=0)
        await tk.flush()
        filler = await asyncio.to_thread(_fill, small_disk)
        accepted = 1
        with pytest.raises(QueueFullError, match="disk full at") as info:
            while accepted < 1_000_000:  # bounded: the disk holds far fewer points than this
                run.log_metric("m", float(accepted), step=accepted)
                accepted += 1
                if accepted % 1_000 == 0:
                    await asyncio.sleep(0)  # let the writer take a batch and get stuck on it
        assert str(small_disk / "store") in str(info.value)
        assert not isinstance(info.value, OSError)
        with pytest.raises(QueueFullError, match="disk full at"):  # still full: still refused
            run.log_metric("m", -1.0, step=accepted)
        filler.unlink()  # space returns
        await _written(tk)
        run.log_metric("m", float(accepted), step=accepted)  # logging resumes
        await _written(tk)
        series = await tk.get_metric_series(run.run_id, "m")
        assert series.steps.tolist() == list(range(accepted + 1))
        assert series.values.tolist() == [float(i) for i in range(accepted + 1)]


class _Owner:
    """What a Run is to the queue: the holder of its open segment."""

    _points: RunPoints | None = None


def _log(q: EventQueue, owner: _Owner, step: int) -> None:
    """Queue one point of run "r", key "m", as Run.log_metric does."""
    seg = owner._points
    cols = None if seg is None else seg.cols.get("m")
    if cols is None or len(cols[2]) >= q.chunk:
        seg = q.open_points("r", owner)
        cols = seg.cols["m"] = (array("q"), array("q"), array("d"))
    cols[0].append(step)
    cols[1].append(step)
    cols[2].append(float(step))


def test_a_spill_write_the_disk_refuses_leaves_the_queue_whole(small_disk: Path) -> None:
    """Spill writes that meet a full disk raise QueueFullError and leave nothing half-written
    behind: the queue still hands the writer every accepted point, in order, from memory and
    from the spill file, while the disk is still full."""
    q = EventQueue(1_000, "spill", False, str(small_disk))
    owner = _Owner()
    accepted = 0
    for _ in range(5_000):  # the writer is behind: most of these are spilled
        _log(q, owner, accepted)
        accepted += 1
    assert q.spilled_pending > 0
    filler = _fill(small_disk)
    refused = 0
    while refused < 3:  # refused more than once: each refusal leaves the file as it was
        try:
            _log(q, owner, accepted)
            accepted += 1
        except QueueFullError as exc:
            assert "disk full at" in str(exc) and str(small_disk) in str(exc)
            refused += 1
        assert accepted < 1_000_000  # the 4 MiB disk is full long before this
    steps = []
    for chunk in q.take(1 << 62):  # the disk is still full: reading back needs no space
        assert isinstance(chunk, RunPoints)
        steps += chunk.cols["m"][0].tolist()
    assert steps == list(range(accepted))
    filler.unlink()
    q.close()
