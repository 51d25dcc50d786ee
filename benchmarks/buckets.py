"""Downsampling speed: a 1,000,000-point series on SQLite reduced to 1,000 buckets."""

# Usage: python benchmarks/buckets.py [--points 1000000] [--buckets 1000] [--chunks 100,10000]
#        [--repeat 5]
#
# The series is logged with run.log_metric, one point per step, flushed every `chunk` points,
# so that the log holds chunks of that many points: chunks of 100 lie inside a 1,000-step bucket
# and are answered from their stored summaries, chunks of 10,000 cross buckets and are unpacked.
# Each figure is the median of `repeat` calls of get_metric_buckets (after one warm-up call),
# and get_metric_series + tracker.series.buckets over the same range is timed beside it.

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from tracker import Tracker
from tracker.series import bucket_bounds, buckets

SPIKE = 1e6


def spike_steps(points: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.random.default_rng(1).integers(0, points, size=20)


async def load(tk: Tracker, points: int, chunk: int) -> str:
    run = await tk.start_run(f"buckets-{chunk}")
    values = np.random.default_rng(0).normal(size=points)
    values[spike_steps(points)] = SPIKE  # spikes that must survive
    for i, v in enumerate(values.tolist()):
        run.log_metric("loss", v, step=i)
        if (i + 1) % chunk == 0:
            await tk.flush()
    await tk.flush()
    return run.run_id


async def timed(fn: Callable[[], Awaitable[object]], repeat: int) -> float:
    await fn()  # warm-up: caches and the page cache
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--buckets", type=int, default=1000)
    parser.add_argument("--chunks", default="100,10000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"# {platform.python_version()} on {platform.machine()}, {args.points:,} points")
    print(
        "| chunk | chunks | get_metric_buckets (ms) | series + buckets (ms) "
        "| buckets showing a spike / holding one |"
    )
    print("|---|---|---|---|---|")
    for chunk in (int(c) for c in args.chunks.split(",")):
        with tempfile.TemporaryDirectory() as d:
            async with Tracker(d) as tk:
                run_id = await load(tk, args.points, chunk)

                async def api(run_id: str = run_id) -> object:
                    return await tk.get_metric_buckets(run_id, "loss", buckets=args.buckets)

                async def brute(run_id: str = run_id) -> object:
                    p = await tk.get_metric_series(run_id, "loss")
                    return buckets(
                        p.steps, p.timestamps, p.values, 0, args.points - 1, args.buckets
                    )

                ms = await timed(api, args.repeat)
                brute_ms = await timed(brute, args.repeat)
                (out,) = await tk.get_metric_buckets(run_id, "loss", buckets=args.buckets)
                kept = int(np.count_nonzero(out.buckets.max[2] == SPIKE))
                lower = bucket_bounds(0, args.points - 1, args.buckets)
                held = len(set(np.searchsorted(lower, spike_steps(args.points), "right")))
                n_chunks = math.ceil(args.points / chunk)
                print(f"| {chunk:,} | {n_chunks:,} | {ms:.1f} | {brute_ms:.1f} | {kept}/{held} |")


if __name__ == "__main__":
    asyncio.run(main())
