"""SyncTracker with on_full="block": points/s at a small queue (max_queue=1000) and at the
default (1,000,000), from a plain synchronous loop into a fresh embedded SQLite store.

Each run logs N points of one key (value i / 7 at step i) and stops the clock when flush() returns (every
point durable in the log and in the views). Prints the median of the runs for each queue size,
with the writer's batches and points per batch, which is what blocking costs: a full queue
hands the writer batches of about max_queue points, and each batch pays the writer's fixed
cost per commit.

    python benchmarks/block.py                  # 1,000,000 points, 3 runs per queue size
    python benchmarks/block.py --points 3000000 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracker import SyncTracker


def one_run(points: int, max_queue: int) -> tuple[float, int]:
    """Points/s end to end, and the writer's batch count, for one fresh store."""
    with (
        tempfile.TemporaryDirectory(prefix="tracker-block-") as where,
        SyncTracker(where, max_queue=max_queue, on_full="block") as tk,
    ):
        run = tk.start_run(name="block")
        log = run.log_metric
        started = time.perf_counter()
        for i in range(points):
            log("loss", i / 7, i)
        tk.flush()
        elapsed = time.perf_counter() - started
        stats = tk.statistics()
        assert stats.points_written >= points, stats
        run.end()
    return points / elapsed, stats.batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--queues", type=int, nargs="+", default=[1_000, 1_000_000])
    args = parser.parse_args()

    rows = []
    for max_queue in args.queues:
        runs = [one_run(args.points, max_queue) for _ in range(args.repeat)]
        rates = [r for r, _ in runs]
        batches = statistics.median(b for _, b in runs)
        rows.append((max_queue, statistics.median(rates), min(rates), max(rates), batches))
        print(f"max_queue={max_queue:,}: " + ", ".join(f"{r:,.0f}" for r in rates), flush=True)

    print(f'\nSyncTracker, on_full="block", {args.points:,} points, median of {args.repeat}\n')
    print("| max_queue | points/s (median) | min | max | batches | points/batch |")
    print("|---:|---:|---:|---:|---:|---:|")
    for max_queue, median, low, high, batches in rows:
        per_batch = args.points / batches if batches else float("nan")
        print(
            f"| {max_queue:,} | {median:,.0f} | {low:,.0f} | {high:,.0f} | {batches:,.0f} "
            f"| {per_batch:,.0f} |"
        )
    if len(rows) >= 2 and rows[-1][1]:
        print(f"\nmax_queue={rows[0][0]:,} runs at {rows[0][1] / rows[-1][1]:.0%} of "
              f"max_queue={rows[-1][0]:,}")  # fmt: skip


if __name__ == "__main__":
    main()
