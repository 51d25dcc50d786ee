"""What an outage, a full disk or a shutdown during either does to data: nothing acknowledged
is lost, and nothing waits forever."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tracker import Tracker, WriterError
from tracker.errors import StoreUnavailableError
from tracker.events import NewEvent, RecordedEvent
from tracker.stores.sqlite import SQLiteEventStore


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
