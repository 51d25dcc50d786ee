"""Bounds that bound: the queue counts every operation, calls are queued whole or not at all,
caches stay within their size, and one bad write never sinks its batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracker import QueueFullError, Tracker
from tracker.commands import LogBatch
from tracker.errors import InvalidInputError


async def test_every_queued_operation_counts_against_max_queue(tmp_path: Path) -> None:
    """10,000 set_tag calls with max_queue=100 and on_full='raise': the 101st is refused, and
    what was accepted is stored."""
    async with Tracker(str(tmp_path), max_queue=100, on_full="raise", max_batch_age=60) as tk:
        run = await tk.start_run()
        accepted = 0
        with pytest.raises(QueueFullError):
            for i in range(10_000):
                run.set_tag(f"t{i}", "v")
                accepted += 1
        assert accepted <= 100
        await tk.flush()
        assert len((await tk.get_run(run.run_id)).data.tags) - 2 == accepted  # + name, user


async def test_log_metrics_is_queued_whole_or_not_at_all(tmp_path: Path) -> None:
    """When the queue is full, a log_metrics call of several keys raises before queueing any
    of its points, so retrying it stores each point once."""
    async with Tracker(str(tmp_path), max_queue=40, on_full="raise", max_batch_age=60) as tk:
        run = await tk.start_run()
        calls = refused = 0
        for step in range(200):
            try:
                run.log_metrics({f"k{i}": float(step) for i in range(7)}, step=step)
                calls += 1
            except QueueFullError:
                refused += 1
                await tk.flush()
                run.log_metrics({f"k{i}": float(step) for i in range(7)}, step=step)  # retried
                calls += 1
        await tk.flush()
        assert refused > 0 and calls == 200
        for i in range(7):
            series = await tk.get_metric_series(run.run_id, f"k{i}")
            assert series.steps.tolist() == list(range(200))  # each point once


async def test_the_decision_cache_is_bounded(tmp_path: Path) -> None:
    """With room for 8 streams, logging to 100 runs keeps at most 8 cached, and decisions
    stay right for runs that were evicted (their facts are read again)."""
    async with Tracker(str(tmp_path)) as tk:
        tk.handler._cache_streams = 8
        runs = [await tk.start_run() for _ in range(30)]
        for run in runs:
            run.log_param("lr", "0.1")
        await tk.flush()
        assert len(tk.handler._streams) <= 8
        for run in runs:  # all evicted by now but the last few: re-read, and still write-once
            with pytest.raises(InvalidInputError, match="Changing param values"):
                await tk.log_param(run.run_id, "lr", "0.2")


async def test_a_write_that_cannot_be_encoded_fails_alone(tmp_path: Path) -> None:
    """A command whose event cannot be encoded (a lone surrogate smuggled past validation) is
    refused by itself; 2,000 points of another run in the same batch are stored."""
    async with Tracker(str(tmp_path), max_batch_age=60) as tk:
        good, bad = await tk.start_run("good"), await tk.start_run("bad")
        for i in range(2000):
            good.log_metric("m", float(i), step=i)
        smuggled = LogBatch(run_id=bad.run_id, tags={"k": "ok"})
        object.__setattr__(smuggled, "tags", {"k": "a\ud800b"})  # what validation refuses
        from tracker.writer import Op

        tk._queue.put(Op(smuggled))
        with pytest.raises(InvalidInputError, match="cannot be encoded"):
            await tk.flush()
        series = await tk.get_metric_series(good.run_id, "m")
        assert series.steps.tolist() == list(range(2000))
        assert "k" not in (await tk.get_run(bad.run_id)).data.tags
