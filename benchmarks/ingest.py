"""Ingest benchmark: an async training loop logging N points over K keys, then flushing.

Prints end-to-end points/s (durable in the log, views caught up), enqueue latency percentiles,
bytes per point on disk (log and views together) and peak RSS. With --compare-mlflow, MLflow's
own client runs in the same invocation on its SQLite store (per-call log_metric, log_batch,
and synchronous=False) and a ratio table is printed.

    python benchmarks/ingest.py                       # 1,000,000 points, embedded SQLite
    python benchmarks/ingest.py --repeat 3 --compare-mlflow
    python benchmarks/ingest.py --points 10000000 --repeat 1     # memory stays flat
    python benchmarks/ingest.py --uri postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
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


async def run_ours(
    uri: str | None,
    points: int,
    keys: int,
    yield_every: int,
    upload_mb: int = 0,
    artifact_location: str | None = None,
) -> dict[str, Any]:
    names = [f"metric_{i}" for i in range(keys)]
    steps = points // keys
    cap = min(steps * keys, 1_000_000)  # latency samples kept: the last million calls
    lat = array("q", bytes(8 * cap))
    clock = time.perf_counter_ns
    stalls = worst = 0
    async with tracker.Tracker(uri) as tk:
        exp = await tk.create_experiment(f"bench-{time.time_ns()}", artifact_location)
        run = await tk.start_run(experiment_id=exp, params={"points": points})
        log = run.log_metric
        upload = None
        if upload_mb:
            blob = Path(tempfile.mkdtemp()) / "checkpoint.bin"
            with blob.open("wb") as f:
                for _ in range(upload_mb):
                    f.write(os.urandom(1 << 20))
            upload = asyncio.create_task(run.log_artifact(blob, "checkpoints"))
        gc.collect()
        i = 0
        start = time.perf_counter()
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
            if step % yield_every == 0:
                await asyncio.sleep(0)  # where a real loop awaits its data loader or optimizer
        logged = time.perf_counter() - start
        upload_overlapped = upload is not None and not upload.done()
        if upload is not None:
            await upload
        await tk.flush()
        elapsed = time.perf_counter() - start
        stats = tk.statistics()
        assert stats.points_written == i, stats
        assert stats.projected_position == stats.position
        path = getattr(tk.store, "path", None)
    size = _store_bytes(path)
    lat = array("q", sorted(lat))
    return {
        "points": i,
        "seconds": elapsed,
        "points_per_s": i / elapsed,
        "enqueue_s": logged,
        "p50_us": _pct(lat, 0.50),
        "p99_us": _pct(lat, 0.99),
        "p999_us": _pct(lat, 0.999),
        "max_us": worst / 1000.0,
        "stalls_over_1ms": stalls,
        "bytes_per_point": size / i if size else float("nan"),
        "batches": stats.batches,
        "spilled": stats.spilled_points,
        "upload_overlapped": upload_overlapped,
    }


def _store_bytes(path: Path | None) -> int:
    """Bytes on disk of a closed SQLite store (log and views together); 0 for other stores."""
    if path is None or str(path) == ":memory:":
        return 0
    # Fold the WAL into the main file so the size is what stays on disk. A plain connection on
    # the closed file works whatever the store's internals are (the benchmark measures old trees).
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in Path(path).parent.glob(Path(path).name + "*"))


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
    import json

    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


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
    ap.add_argument("--yield-every", type=int, default=100, help="steps between awaits in the loop")
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
                    args.artifact_location,
                )
            )  # fmt: skip
        results.append(res)
        print(
            f"  run {r + 1}: {res['points_per_s']:>10,.0f} points/s  p50 {res['p50_us']:.2f}us  "
            f"p99 {res['p99_us']:.2f}us  p99.9 {res['p999_us']:.2f}us  max {res['max_us']:.0f}us  "
            f">1ms: {res['stalls_over_1ms']}  {res['bytes_per_point']:.1f} B/point  "
            f"batches {res['batches']}  spilled {res['spilled']}"
            + ("  (upload still running when logging ended)" if res["upload_overlapped"] else "")
        )
    med = {
        k: statistics.median(r[k] for r in results) for k in results[0] if k != "upload_overlapped"
    }
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"tracker (median of {len(results)}): {med['points_per_s']:,.0f} points/s end to end; enqueue "
        f"p50 {med['p50_us']:.2f}us p99 {med['p99_us']:.2f}us p99.9 {med['p999_us']:.2f}us "
        f"max {med['max_us']:.0f}us; {med['bytes_per_point']:.1f} bytes/point; peak RSS {rss_mb:.0f} MB"
    )
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
