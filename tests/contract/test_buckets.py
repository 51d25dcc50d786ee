"""Downsampling on every backend: buckets from chunk summaries and unpacked chunks keep every
spike and equal the buckets of the whole series read back."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
import sqlalchemy as sa

from tests.unit.test_series import same_buckets
from tracker import InvalidInputError, Tracker
from tracker.series import bucket_bounds, buckets
from tracker.stores.base import SqlEventStore
from tracker.stores.schema import metric_chunks

STEPS = 3000
SPIKES = {137: 1e6, 1499: -1e6, 2001: math.inf, 2002: -math.inf, 2999: 5e5}


@pytest.fixture
async def tk(store_factory: Callable[[], SqlEventStore]) -> AsyncIterator[Tracker]:
    # Batches by flush only: each flush below is one chunk per key in the log.
    async with Tracker(store=store_factory(), max_batch_age=60.0) as tracker:
        yield tracker


def value(step: int) -> float:
    if step in SPIKES:
        return SPIKES[step]
    if step % 97 == 5:
        return math.nan
    return math.sin(step / 50)


async def log_series(tk: Tracker) -> str:
    """Chunks of 10 steps (inside a bucket of 100), one of 700 steps (across buckets), a
    chunk logged late that overlaps earlier ones, and repeated steps with later timestamps."""
    run = await tk.start_run("buckets")
    flushes = [range(0, 1000, 1), range(1000, 1700), range(1700, STEPS)]
    for i, steps in enumerate(flushes):
        for n, step in enumerate(steps):
            run.log_metric("loss", value(step), step=step, timestamp=1000 + step)
            if i != 1 and n % 10 == 9:
                await tk.flush()
        await tk.flush()
    for step in range(50, 2950, 300):  # a second point at some steps, logged last
        run.log_metric("loss", -2.0 if step % 600 else 2.5, step=step, timestamp=90_000 + step)
    await tk.flush()
    return run.run_id


async def brute_force(tk: Tracker, run_id: str, start: int, end: int, n: int) -> object:
    p = await tk.get_metric_series(run_id, "loss", start_step=start, end_step=end)
    return buckets(p.steps, p.timestamps, p.values, start, end, n)


async def test_buckets_equal_the_whole_series_and_keep_the_spikes(tk: Tracker) -> None:
    """For the whole range and for ranges that cut chunks, get_metric_buckets equals buckets
    computed over get_metric_series, both answered from summaries and from unpacked chunks,
    and each spike (±1e6, ±Inf) is its bucket's max or min at its own step."""
    run_id = await log_series(tk)
    async with tk.database.snapshot() as s:
        ranges = await s.fetchall(sa.select(metric_chunks.c.min_step, metric_chunks.c.max_step))
    lower = bucket_bounds(0, STEPS - 1, 30)
    at = [np.searchsorted(lower, [int(a), int(b)], "right") for a, b in ranges]
    assert sum(a[0] == a[1] for a in at) >= 100 and sum(a[0] != a[1] for a in at) >= 2

    (whole,) = await tk.get_metric_buckets(run_id, "loss", buckets=30)
    assert (whole.start_step, whole.end_step, whole.n) == (0, STEPS - 1, 30)
    assert same_buckets(whole.buckets, await brute_force(tk, run_id, 0, STEPS - 1, 30))
    b = whole.buckets
    assert int(b.count.sum()) == STEPS + 10
    for step, spike in SPIKES.items():
        j = int(np.flatnonzero((b.lower <= step) & (step <= b.upper))[0])
        kind = b.max if spike > 0 else b.min
        assert (int(kind[0][j]), float(kind[2][j])) == (step, spike)
    for start, end, n in [(95, 2005, 7), (1001, 1001, 5), (640, 2710, 1000), (2990, 4000, 3)]:
        (part,) = await tk.get_metric_buckets(
            run_id, "loss", start_step=start, end_step=end, buckets=n
        )
        assert same_buckets(part.buckets, await brute_force(tk, run_id, start, end, n))


async def test_runs_share_bucket_bounds_and_unknown_runs_have_none(tk: Tracker) -> None:
    """Several runs are bucketed over the union of their steps, in the order asked; a run
    without the key gets no buckets; a bad bucket count or range is InvalidInputError."""
    long_id = await log_series(tk)
    short = await tk.start_run("short")
    for step in range(500, 800):
        short.log_metric("loss", float(step), step=step)
    await tk.flush()
    out = await tk.get_metric_buckets([short.run_id, "no-such-run", long_id], "loss", buckets=10)
    assert [m.run_id for m in out] == [short.run_id, "no-such-run", long_id]
    assert {(m.start_step, m.end_step) for m in out} == {(0, STEPS - 1)}
    assert out[0].buckets.index.tolist() == [1, 2]  # steps 500..799 of 0..2999 in tenths
    assert len(out[1].buckets) == 0
    assert (await tk.get_metric_buckets(long_id, "absent"))[0].start_step is None
    with pytest.raises(InvalidInputError, match="buckets must be a whole number from 1"):
        await tk.get_metric_buckets(long_id, "loss", buckets=0)
    with pytest.raises(InvalidInputError, match=r"start_step \(5000\) is after end_step"):
        await tk.get_metric_buckets(long_id, "loss", start_step=5000)
