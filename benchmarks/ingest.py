"""Ingest benchmark: an async training loop logging N points over K keys, then flushing.

Prints end-to-end points/s (durable in the log, views caught up), enqueue latency percentiles,
the longest the loop waited at one of its awaits, bytes per point (log and views together: the
SQLite files, or pg_total_relation_size of the store's schema after VACUUM) and peak RSS.
--mode picks the loop: `timed` (log_metric, each call timed), `untimed` (the same loop with no
timing), `log_metrics` (one call per step over all keys, each call timed). --sample-window
samples the durability window every 5 ms; --read-series times get_metric_series. With
--compare-mlflow, MLflow's own client runs in the same invocation on its SQLite store
(per-call log_metric, log_batch, and synchronous=False) and a ratio table is printed.

    python benchmarks/ingest.py                       # 1,000,000 points, embedded SQLite
    python benchmarks/ingest.py --repeat 3 --compare-mlflow
    python benchmarks/ingest.py --points 10000000 --repeat 1     # memory stays flat
    python benchmarks/ingest.py --uri postgresql://postgres@127.0.0.1/test
    python benchmarks/ingest.py --mode log_metrics    # 10 keys a call
    python benchmarks/ingest.py --mode untimed --points 2000000 --sample-window
    python benchmarks/ingest.py --keys 1 --read-series 5   # a 1,000,000-point series
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import gc
import json
import math
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracker


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


def _pct(lat: array[int], q: float) -> float:
    return lat[min(len(lat) - 1, int(q * len(lat)))] / 1000.0


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


MODES = ("timed", "untimed", "log_metrics")
GAP_TARGET = 0.005
"""The longest the training loop may wait at an `await` (issue 9)."""


class Window:
    """Samples the durability window, the age of the oldest point not yet durable, from the
    producer's own loop (and, once logging ends, from a task while flush() drains the rest).

    Not from a thread: `tk.statistics()` is not safe to call off the event loop's thread (it
    iterates the queue's open segments and their key dicts, which log_metric grows, and reads
    the writer's batch start twice), and a sampling thread would also take the GIL from the
    producer. The producer calls `checkpoint(logged)` every ~1,000 points: that records when
    the first `logged` points had all been logged, and every `interval` seconds it samples.

    Two ages are kept per sample. `true`: from `points_written` (points durable in the log) and
    the checkpoints, the time since the checkpoint at or before the first point not yet written
    was logged (an upper bound, by at most one checkpoint's ~1,000 points). `stat`: what
    `statistics().oldest_pending_age` reports at the same moment, for comparison."""

    def __init__(self, tk: tracker.Tracker, interval: float = 0.005) -> None:
        self.tk = tk
        self.interval = interval
        self.ck_t = array("d", [time.monotonic()])
        self.ck_n = array("q", [0])
        self.next = 0.0
        self.true: list[float] = []
        self.stat: list[float] = []
        self.logging_samples = 0
        self.spilled_while_logging = 0

    def checkpoint(self, logged: int) -> None:
        now = time.monotonic()
        self.ck_t.append(now)
        self.ck_n.append(logged)
        if now >= self.next:
            self.sample(now, logged)
            self.next = now + self.interval

    def sample(self, now: float, logged: int) -> None:
        st = self.tk.statistics()
        durable = st.points_written
        if durable >= logged:
            age = 0.0
        else:
            age = now - self.ck_t[bisect.bisect_right(self.ck_n, durable) - 1]
        self.true.append(age)
        self.stat.append(st.oldest_pending_age or 0.0)

    def end_of_logging(self, logged: int) -> None:
        self.checkpoint(logged)
        self.logging_samples = len(self.true)
        self.spilled_while_logging = self.tk.statistics().spilled_points

    async def drain(self, logged: int) -> None:
        """flush(), sampling every `interval` until it returns."""
        flush = asyncio.ensure_future(self.tk.flush())
        while not flush.done():
            await asyncio.wait({flush}, timeout=self.interval)
            self.sample(time.monotonic(), logged)
        await flush

    def summary(self) -> dict[str, Any]:
        during = self.true[: self.logging_samples]
        ms = 1000.0
        return {
            "window_samples": len(self.true),
            "window_p50_ms": _quantile(self.true, 0.50) * ms,
            "window_p99_ms": _quantile(self.true, 0.99) * ms,
            "window_max_ms": max(self.true, default=0.0) * ms,
            "window_logging_max_ms": max(during, default=0.0) * ms,
            "window_stat_p99_ms": _quantile(self.stat, 0.99) * ms,
            "window_stat_max_ms": max(self.stat, default=0.0) * ms,
            "spilled_while_logging": self.spilled_while_logging,
        }


async def run_ours(
    uri: str | None,
    points: int,
    keys: int,
    yield_every: int,
    upload_mb: int = 0,
    artifact_location: str | None = None,
    mode: str = "timed",
    sample_window: bool = False,
    read_series: int = 0,
) -> dict[str, Any]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    names = [f"metric_{i}" for i in range(keys)]
    steps = points // keys
    calls = steps if mode == "log_metrics" else steps * keys
    # Latency samples kept: the last million calls (none in the untimed mode).
    cap = 1 if mode == "untimed" else max(1, min(calls, 1_000_000))
    lat = array("q", bytes(8 * cap))
    clock = time.perf_counter_ns
    stalls = worst = 0
    gaps = array("q")  # how long each `await` of the loop took to return, ns
    # Checkpoints (window sampling) every ~1,000 points, on step boundaries that also hold
    # every await; without sampling the loop only checks at its awaits.
    tick = math.gcd(yield_every, max(1, 1000 // keys)) if sample_window else yield_every
    pg_before = await _pg_bytes(uri) if _is_postgres(uri) else 0
    load = os.getloadavg()[0]
    async with tracker.Tracker(uri) as tk:
        exp = await tk.create_experiment(f"bench-{time.time_ns()}", artifact_location)
        run = await tk.start_run(experiment_id=exp, params={"points": points})
        log = run.log_metric
        log_metrics = run.log_metrics
        window = Window(tk) if sample_window else None
        upload = None
        if upload_mb:
            blob = Path(tempfile.mkdtemp()) / "checkpoint.bin"
            with blob.open("wb") as f:
                for _ in range(upload_mb):
                    f.write(os.urandom(1 << 20))
            upload = asyncio.create_task(run.log_artifact(blob, "checkpoints"))

        async def at_tick(step: int) -> None:
            if window is not None:
                window.checkpoint((step + 1) * keys)
            if step % yield_every == 0:
                t0 = clock()
                await asyncio.sleep(0)  # where a real loop awaits its data loader or optimizer
                gaps.append(clock() - t0)

        gc.collect()
        i = 0
        start = time.perf_counter()
        # One loop per mode, so that no mode pays for another's branches.
        if mode == "timed":
            for step in range(steps):
                v = 1.0 / (step + 1)
                for name in names:
                    t0 = clock()
                    log(name, v, step)
                    d = clock() - t0
                    lat[i % cap] = d
                    if d > 1_000_000:
                        stalls += 1
                    if d > worst:
                        worst = d
                    i += 1
                if step % tick == 0:
                    await at_tick(step)
        elif mode == "untimed":
            for step in range(steps):
                v = 1.0 / (step + 1)
                for name in names:
                    log(name, v, step)
                if step % tick == 0:
                    await at_tick(step)
        else:
            for step in range(steps):
                m = dict.fromkeys(names, 1.0 / (step + 1))  # the caller's dict, not timed
                t0 = clock()
                log_metrics(m, step=step)
                d = clock() - t0
                lat[i % cap] = d
                if d > 1_000_000:
                    stalls += 1
                if d > worst:
                    worst = d
                i += 1
                if step % tick == 0:
                    await at_tick(step)
        logged = time.perf_counter() - start
        n = steps * keys
        upload_overlapped = upload is not None and not upload.done()
        if upload is not None:
            await upload
        if window is not None:
            window.end_of_logging(n)
            await window.drain(n)
        else:
            await tk.flush()
        elapsed = time.perf_counter() - start
        stats = tk.statistics()
        assert stats.points_written == n, stats
        assert stats.projected_position == stats.position
        path = getattr(tk.store, "path", None)
        reads: list[float] = []
        for _ in range(read_series):
            t0 = clock()
            series = await tk.get_metric_series(run.run_id, names[0])
            reads.append((clock() - t0) / 1e6)
            assert len(series) == steps, (len(series), steps)
    size = await _pg_bytes(uri) - pg_before if _is_postgres(uri) else _store_bytes(path)
    timed = mode != "untimed"
    lat = array("q", sorted(lat))
    gap_list = sorted(gaps)
    res: dict[str, Any] = {
        "mode": mode,
        "load": load,
        "points": n,
        "seconds": elapsed,
        "points_per_s": n / elapsed,
        "enqueue_s": logged,
        "p50_us": _pct(lat, 0.50) if timed else None,
        "p99_us": _pct(lat, 0.99) if timed else None,
        "p999_us": _pct(lat, 0.999) if timed else None,
        "max_us": worst / 1000.0 if timed else None,
        "stalls_over_1ms": stalls if timed else None,
        "await_max_ms": gap_list[-1] / 1e6 if gap_list else 0.0,
        "await_p99_ms": gap_list[min(len(gap_list) - 1, int(0.99 * len(gap_list)))] / 1e6
        if gap_list
        else 0.0,
        "awaits_over_5ms": sum(1 for g in gap_list if g > GAP_TARGET * 1e9),
        "bytes_per_point": size / n if size else float("nan"),
        "batches": stats.batches,
        "spilled": stats.spilled_points,
        # Points a log_* call wrote to the spill file itself (older trees: all of them).
        "spilled_inline": getattr(stats, "spilled_inline", stats.spilled_points),
        "upload_overlapped": upload_overlapped,
    }
    if window is not None:
        res.update(window.summary())
    if reads:
        res["read_points"] = steps
        res["read_ms"] = statistics.median(reads)
        res["read_min_ms"] = min(reads)
        res["read_max_ms"] = max(reads)
    return res


def _store_bytes(path: Path | None) -> int:
    """Bytes on disk of a closed SQLite store (log and views together); 0 for other stores."""
    if path is None or str(path) == ":memory:":
        return 0
    # Fold the WAL into the main file so the size is what stays on disk. A plain connection on
    # the closed file works whatever the store's internals are (the benchmark measures old trees).
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in Path(path).parent.glob(Path(path).name + "*"))


def _is_postgres(uri: str | None) -> bool:
    return uri is not None and uri.split("://", 1)[0].split("+")[0] in ("postgresql", "postgres")


async def _pg_bytes(uri: str | None) -> int:
    """pg_total_relation_size (heap, indexes, TOAST) of every table in the store's schema,
    after VACUUM; 0 before the store has created its tables."""
    import asyncpg

    assert uri is not None
    parts = urllib.parse.urlsplit(uri)
    query = dict(urllib.parse.parse_qsl(parts.query))
    schema = query.pop("schema", None) or query.pop("search_path", None)
    dsn = urllib.parse.urlunsplit(
        ("postgresql", parts.netloc, parts.path, urllib.parse.urlencode(query), "")
    )
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema} if schema else None)
    try:
        await conn.execute("VACUUM")
        size = await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname = current_schema()"
        )
    finally:
        await conn.close()
    return int(size)


MLFLOW_SCRIPT = r"""
import json, os, sys, time, tempfile
from pathlib import Path
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
mode, n, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = tempfile.mkdtemp()
db = Path(d) / "mlflow.db"
client = MlflowClient(tracking_uri=f"sqlite:///{db}")
exp = client.create_experiment("bench", artifact_location=f"file://{d}/artifacts")
run = client.create_run(exp).info.run_id
names = [f"metric_{i}" for i in range(keys)]
start = time.perf_counter()
now = int(time.time() * 1000)
if mode == "log_metric":
    for i in range(n):
        client.log_metric(run, names[i % keys], 1.0 / (i + 1), step=i // keys, timestamp=now)
elif mode == "log_batch":
    batch = []
    for i in range(n):
        batch.append(Metric(names[i % keys], 1.0 / (i + 1), now, i // keys))
        if len(batch) == 1000:
            client.log_batch(run, metrics=batch)
            batch = []
    if batch:
        client.log_batch(run, metrics=batch)
elif mode == "async":
    for i in range(n):
        client.log_metric(run, names[i % keys], 1.0 / (i + 1), step=i // keys, timestamp=now, synchronous=False)
    mlflow.flush_async_logging()
    client._tracking_client.store.flush_async_logging() if hasattr(client._tracking_client.store, "flush_async_logging") else None
elapsed = time.perf_counter() - start
size = sum(p.stat().st_size for p in Path(d).glob("mlflow.db*"))
print(json.dumps({"points": n, "seconds": elapsed, "points_per_s": n / elapsed, "bytes_per_point": size / n}))
"""


def run_mlflow(mode: str, points: int, keys: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", MLFLOW_SCRIPT, mode, str(points), str(keys)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"mlflow {mode} failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _fmt(res: dict[str, Any]) -> str:
    """One run's figures on one line; what a mode does not measure is left out."""
    out = f"{res['points_per_s']:>10,.0f} points/s"
    if res["p50_us"] is not None:
        unit = "call" if res["mode"] == "log_metrics" else "point"
        out += (
            f"  per {unit} p50 {res['p50_us']:.2f}us  p99 {res['p99_us']:.2f}us  "
            f"p99.9 {res['p999_us']:.2f}us  max {res['max_us']:.0f}us  "
            f">1ms: {res['stalls_over_1ms']:.0f}"
        )
    out += (
        f"  {res['bytes_per_point']:.1f} B/point  batches {res['batches']:.0f}  "
        f"spilled {res['spilled']:.0f} (inline {res['spilled_inline']:.0f})  await max {res['await_max_ms']:.1f}ms "
        f"(p99 {res['await_p99_ms']:.2f}ms, >5ms: {res['awaits_over_5ms']:.0f})"
    )
    if "window_p99_ms" in res:
        out += (
            f"\n         durability window p50 {res['window_p50_ms']:.0f}ms  "
            f"p99 {res['window_p99_ms']:.0f}ms  max {res['window_max_ms']:.0f}ms "
            f"(while logging {res['window_logging_max_ms']:.0f}ms; "
            f"{res['window_samples']:.0f} samples; oldest_pending_age says p99 "
            f"{res['window_stat_p99_ms']:.0f}ms max {res['window_stat_max_ms']:.0f}ms)  "
            f"spilled while logging {res['spilled_while_logging']:.0f}"
        )
    if "read_ms" in res:
        out += (
            f"\n         get_metric_series of {res['read_points']:,.0f} points: median "
            f"{res['read_ms']:.1f}ms (min {res['read_min_ms']:.1f}, max {res['read_max_ms']:.1f})"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument(
        "--uri", default=None, help="tracking URI (default: a fresh temporary directory)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--mode", choices=MODES, default="timed",
        help="timed: log_metric, each call timed; untimed: the same loop without timing; "
        "log_metrics: one run.log_metrics({...}, step=s) call per step over all --keys, "
        "each call timed",
    )  # fmt: skip
    ap.add_argument("--yield-every", type=int, default=100, help="steps between awaits in the loop")
    ap.add_argument(
        "--sample-window", action="store_true",
        help="sample the durability window (age of the oldest point not yet durable) every 5 ms",
    )  # fmt: skip
    ap.add_argument(
        "--read-series", type=int, default=0, metavar="N",
        help="then time tk.get_metric_series of the first key N times (its points: points/keys)",
    )  # fmt: skip
    ap.add_argument("--json", default=None, metavar="PATH", help="append each run as a JSON line")
    ap.add_argument("--upload-mb", type=int, default=0, help="upload a file this big meanwhile")
    ap.add_argument("--artifact-location", default=None, help="e.g. s3://bucket/prefix")
    ap.add_argument("--compare-mlflow", action="store_true")
    ap.add_argument(
        "--mlflow-call-points", type=int, default=2_000, help="points for per-call log_metric"
    )
    ap.add_argument("--mlflow-batch-points", type=int, default=100_000, help="points for log_batch")
    ap.add_argument(
        "--mlflow-async-points", type=int, default=2_000, help="points for synchronous=False"
    )
    args = ap.parse_args()

    print(f"machine: {_machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"tracker: {Path(tracker.__file__).parent}")
    results = []
    for r in range(args.repeat):
        with tempfile.TemporaryDirectory() as d:
            uri = args.uri or d
            res = asyncio.run(
                run_ours(
                    uri, args.points, args.keys, args.yield_every, args.upload_mb,
                    args.artifact_location, args.mode, args.sample_window, args.read_series,
                )
            )  # fmt: skip
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results.append(res)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"command": sys.argv[1:], **res}) + "\n")
        print(
            f"  run {r + 1} (load {res['load']:.2f}): {_fmt(res)}"
            + ("  (upload still running when logging ended)" if res["upload_overlapped"] else "")
        )
    med: dict[str, Any] = {
        k: None if results[0][k] is None else statistics.median(r[k] for r in results)
        for k in results[0]
        if k not in ("upload_overlapped", "mode")
    }
    med["mode"] = args.mode
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tracker {args.mode} (median of {len(results)}): {_fmt(med)}")
    print(f"peak RSS {rss_mb:.0f} MB")
    if not args.compare_mlflow:
        return
    rows = []
    for mode, n in (("log_metric", args.mlflow_call_points), ("log_batch", args.mlflow_batch_points),
                    ("async", args.mlflow_async_points)):  # fmt: skip
        m = run_mlflow(mode, n, args.keys)
        rows.append((mode, m))
        print(f"  mlflow {mode:<10} {m['points_per_s']:>10,.0f} points/s over {n:,} points, "
              f"{m['bytes_per_point']:.0f} B/point")  # fmt: skip
    print("\n| client | points/s | tracker is × faster | bytes/point |")
    print("|---|---:|---:|---:|")
    print(f"| tracker (median) | {med['points_per_s']:,.0f} | 1.0 | {med['bytes_per_point']:.1f} |")
    for mode, m in rows:
        print(f"| mlflow {mode} | {m['points_per_s']:,.0f} | {med['points_per_s'] / m['points_per_s']:,.1f} | "
              f"{m['bytes_per_point']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
