"""Many-writer benchmark: N processes log into one store at once, through the public API only.

Each process opens its own `tracker.Tracker(uri)`, starts a run (with params and tags) and
waits at a barrier; once all are released together, each logs P points over K keys from an
async loop (with a param and a tag logged midway) and flushes. Prints total points/s (from
the barrier's release to the last process's flush returning: every point durable and the
views caught up), each process's own points/s, and checks that every run, param, tag and
point arrived by reading them back through the public API (search_runs and paged
get_metric_history). Only calls that the Tracker has had since before issue 8 are used, so
the same script measures old and new trees (it imports the tracker package of the tree it
sits in, and prints which).

    python benchmarks/writers.py                          # 4 processes, fresh embedded SQLite
    python benchmarks/writers.py --processes 8 --points 100000 --repeat 5
    python benchmarks/writers.py --uri postgresql://postgres@127.0.0.1:5432/tracker_bench
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracker

BARRIER_TIMEOUT = 120.0  # seconds for every process to open its tracker and start its run
RESULT_TIMEOUT = 600.0  # seconds for a process to log, flush and close after the release


def _machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


async def _write(
    uri: str, experiment_id: str, index: int, points: int, keys: int, yield_every: int,
    barrier: Barrier,
) -> dict[str, Any]:  # fmt: skip
    names = [f"metric_{i}" for i in range(keys)]
    steps = points // keys
    async with tracker.Tracker(uri) as tk:
        run = await tk.start_run(
            experiment_id=experiment_id,
            name=f"writer-{index}",
            params={"writer": index, "points": points},
            tags={"bench": "writers"},
        )
        # Opening and starting are set-up, not measured: every process waits here, so the
        # logging phases overlap fully.
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)
        released = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process on Linux
        log = run.log_metric
        for step in range(steps):
            v = 1.0 / (step + 1)
            for name in names:
                log(name, v, step)
            if step == steps // 2:
                run.log_param("midway", step)
                run.set_tag("phase", "second half")
            if step % yield_every == 0:
                await asyncio.sleep(0)  # where a real loop awaits its data loader or optimizer
        await tk.flush()
        flushed = time.monotonic()
        stats = tk.statistics()
    return {
        "run_id": run.run_id,
        "points": steps * keys,
        "released": released,
        "flushed": flushed,
        "points_written": stats.points_written,
        "batches": stats.batches,
    }


def _child(
    uri: str, experiment_id: str, index: int, points: int, keys: int, yield_every: int,
    barrier: Barrier, results: Queue[tuple[int, dict[str, Any] | str]],
) -> None:  # fmt: skip
    try:
        out: dict[str, Any] | str = asyncio.run(
            _write(uri, experiment_id, index, points, keys, yield_every, barrier)
        )
    except BaseException:
        barrier.abort()  # the others must not wait for a process that is gone
        out = traceback.format_exc()
    results.put((index, out))


async def _create_experiment(uri: str) -> str:
    # The parent creates the store and the experiment before the writers start, so that the
    # writers measure logging, not N processes racing to create one fresh store.
    async with tracker.Tracker(uri) as tk:
        return str(await tk.create_experiment(f"writers-{time.time_ns()}"))


async def _verify(uri: str, experiment_id: str, written: list[dict[str, Any]], keys: int) -> None:
    """Read back every run, param, tag and point through the public API; raise on a gap."""
    async with tracker.Tracker(uri) as tk:
        runs = []
        token = None
        while True:
            page = await tk.search_runs([experiment_id], max_results=1000, page_token=token)
            runs.extend(page.items)
            token = page.next_page_token
            if not token:
                break
        by_id = {r.info.run_id: r for r in runs}
        expected = {w["run_id"] for w in written}
        if set(by_id) != expected:
            raise AssertionError(f"runs found {sorted(by_id)} != written {sorted(expected)}")
        for w in written:
            r = by_id[w["run_id"]]
            if r.data.params.get("midway") is None or r.data.tags.get("phase") != "second half":
                raise AssertionError(f"run {w['run_id']}: params/tags missing: {r.data}")
            if r.info.status != "FINISHED":
                raise AssertionError(f"run {w['run_id']} is {r.info.status}, not FINISHED")
            per_key = w["points"] // keys
            for k in range(keys):
                n = 0
                token = None
                while True:
                    points = await tk.get_metric_history(
                        w["run_id"], f"metric_{k}", max_results=25_000, page_token=token
                    )
                    n += len(points.items)
                    token = points.next_page_token
                    if not token:
                        break
                if n != per_key:
                    raise AssertionError(
                        f"run {w['run_id']} metric_{k}: {n} points, {per_key} logged"
                    )


def run_once(
    uri: str, processes: int, points: int, keys: int, yield_every: int, verify: bool
) -> dict[str, Any]:
    experiment_id = asyncio.run(_create_experiment(uri))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results: Queue[tuple[int, dict[str, Any] | str]] = ctx.Queue()
    procs = [
        ctx.Process(
            target=_child,
            args=(uri, experiment_id, i, points, keys, yield_every, barrier, results),
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    outs: dict[int, dict[str, Any] | str] = {}
    try:
        deadline = time.monotonic() + BARRIER_TIMEOUT + RESULT_TIMEOUT
        while len(outs) < processes:
            index, out = results.get(timeout=max(0.1, deadline - time.monotonic()))
            outs[index] = out
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    failed = {i: o for i, o in outs.items() if isinstance(o, str)}
    if failed:
        raise RuntimeError(
            "writer(s) failed:\n" + "\n".join(f"[{i}] {o}" for i, o in failed.items())
        )
    written = [o for _, o in sorted(outs.items()) if isinstance(o, dict)]
    for w in written:
        if w["points_written"] != w["points"]:
            raise AssertionError(f"writer wrote {w['points_written']} of {w['points']} points")
    start = min(w["released"] for w in written)
    seconds = max(w["flushed"] for w in written) - start
    total = sum(w["points"] for w in written)
    per_process = [w["points"] / (w["flushed"] - w["released"]) for w in written]
    if verify:
        asyncio.run(_verify(uri, experiment_id, written, keys))
    return {
        "points": total,
        "seconds": seconds,
        "points_per_s": total / seconds,
        "per_process": per_process,
        "per_process_median": statistics.median(per_process),
        "batches": sum(w["batches"] for w in written),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--uri", default=None, help="tracking URI (default: a fresh temporary directory per run)"
    )
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--points", type=int, default=1_000_000, help="points per process")
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--yield-every", type=int, default=100, help="steps between awaits in the loop")
    ap.add_argument("--no-verify", action="store_true", help="skip reading every point back")
    args = ap.parse_args()

    print(f"machine: {_machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"tracker: {Path(tracker.__file__).parent}")
    results = []
    for r in range(args.repeat):
        with tempfile.TemporaryDirectory() as d:
            res = run_once(
                args.uri or d, args.processes, args.points, args.keys, args.yield_every,
                not args.no_verify,
            )  # fmt: skip
        results.append(res)
        each = " ".join(f"{p:,.0f}" for p in res["per_process"])
        print(
            f"  run {r + 1}: {res['points_per_s']:>10,.0f} points/s total over {res['seconds']:.2f}s "
            f"({args.processes} processes × {res['points'] // args.processes:,} points; "
            f"per process: {each}; batches {res['batches']})"
            + ("" if args.no_verify else "  all points read back")
        )
    med_total = statistics.median(r["points_per_s"] for r in results)
    med_each = statistics.median(p for r in results for p in r["per_process"])
    print(
        f"writers (median of {len(results)}): {med_total:,.0f} points/s total; "
        f"{med_each:,.0f} points/s per process ({args.processes} processes)"
    )


if __name__ == "__main__":
    main()
