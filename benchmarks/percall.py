"""Awaited writes one at a time: what a call that arrives alone costs (a server's per-call
request, a script's set_tag). Each call is one log append and one projection transaction.

    python benchmarks/percall.py --calls 300 --repeat 5
    python benchmarks/percall.py --tree /path/to/another/checkout   # the same against other code
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path


async def one_round(calls: int, where: str) -> float:
    import tracker

    with tempfile.TemporaryDirectory(dir=where) as d:
        async with tracker.Tracker(d, max_batch_age=0.001) as tk:
            run = await tk.start_run()
            started = time.perf_counter()
            for i in range(calls):
                await tk.set_tag(run.run_id, f"k{i}", "v")
            return (time.perf_counter() - started) / calls * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--dir", default=".", help="where the stores go (a real disk: fsync counts)")
    args = ap.parse_args()
    sys.path.insert(0, args.tree)
    import tracker

    print(f"tracker from {Path(tracker.__file__).parent}")
    ms = [asyncio.run(one_round(args.calls, args.dir)) for _ in range(args.repeat)]
    print(" ".join(f"{m:.2f}" for m in ms), f"median {statistics.median(ms):.2f} ms a call")


if __name__ == "__main__":
    main()
