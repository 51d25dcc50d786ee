"""The native client against `tracker server`: points/s from `Tracker("http://...")` logging
with log_metrics (10 keys a call) until flush() returns, i.e. every point acknowledged by the
server, durable in its log and applied to its views. The server runs in its own process on a
fresh SQLite store; the client's outbox is in a temporary directory.

    python benchmarks/remote.py --points 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracker
from benchmarks.server import _machine, start_server


async def one_round(url: str, points: int, keys: int, outbox: str) -> dict[str, float]:
    names = [f"m{i}" for i in range(keys)]
    async with tracker.Tracker(url, outbox_dir=outbox) as tk:
        run = await tk.start_run("remote-bench")
        started = time.perf_counter()
        for step in range(points // keys):
            run.log_metrics(dict.fromkeys(names, step * 0.5), step=step)
            if step % 100 == 0:
                await asyncio.sleep(0)  # a training loop awaits its data now and then
        logged = time.perf_counter() - started
        await tk.flush()
        elapsed = time.perf_counter() - started
        for key in (names[0], names[-1]):  # every point arrived, checked through the server
            got = await tk.get_metric_series(run.run_id, key)
            assert len(got.values) == points // keys, (key, len(got.values))
    return {"points_s": points / elapsed, "log_s": logged, "total_s": elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(_machine(), f"load {os.getloadavg()[0]:.1f}")
    rates = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=".") as d:
            server = start_server("tracker", None, Path(d))
            try:
                r = asyncio.run(one_round(server.url, args.points, args.keys, f"{d}/outbox"))
            finally:
                server.stop()
        rates.append(r["points_s"])
        print(f"round {i + 1}: {r['points_s']:,.0f} points/s (logging {r['log_s']:.2f} s, "
              f"acknowledged after {r['total_s']:.2f} s), load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"median {statistics.median(rates):,.0f} points/s")


if __name__ == "__main__":
    main()
