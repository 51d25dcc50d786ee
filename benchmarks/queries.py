"""Query speed: search_runs over 10,000 runs, get_run with 1,000 metric keys, downsampling.

Usage: python benchmarks/queries.py [--runs 10000] [--mlflow-runs 2000] [--repeat 5]
       [--backends sqlite,postgresql] [--no-mlflow]

Data: one experiment of `--runs` runs, each with 20 params, 20 metrics (one point each) and
10 tags, generated from a fixed seed and loaded through the Python API (start_run with the
params and tags, 500 at a time, then run.log_metrics and a flush) into (a) the embedded SQLite store
in a temporary directory and (b) a fresh PostgreSQL database (TRACKER_TEST_POSTGRES_DSN's
server; created here, dropped after). MLflow's own server (`mlflow server`, SQLite backend,
started here) is loaded with the same runs through MlflowClient (create_run + log_batch,
4 client threads); that takes minutes, so it gets `--mlflow-runs` runs, and our `tracker
server` (started here on an SQLite store loaded with those same runs) is measured on that
same data, both through MlflowClient, server against server.

Measured, each the median of `--repeat` calls after one warm-up call:
  - the three-clause search (a metric comparison, a param equality, a tag LIKE) ordered by
    another metric, its first page of 100: Python API on SQLite and PostgreSQL, and
    MlflowClient.search_runs against both servers;
  - get_run of a run with 1,000 metric keys (10 steps each);
  - get_metric_buckets of a 1,000,000-point series into 1,000 buckets.
The search's query plan is printed for SQLite (EXPLAIN QUERY PLAN) and PostgreSQL (EXPLAIN
ANALYZE, values inlined), compiled by the same code the store runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from tracker import Tracker

ROOT = Path(__file__).resolve().parents[1]
# Before mlflow is imported (lazily, below); the servers inherit them.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"

FILTER = "metrics.m00 > 0.5 AND params.p00 = 'adam' AND tags.t00 LIKE 'team-1%'"
ORDER = "metrics.m01 DESC"
PAGE = 100
N_PARAMS, N_METRICS, N_TAGS = 20, 20, 10
OPTIMIZERS = ("adam", "sgd", "rprop", "adagrad", "adamw", "lion", "lamb", "nadam", "ftrl", "lars")
FLUSH_EVERY = 500
HEALTH_DEADLINE = 120.0
STOP_GRACE = 15.0
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def load_avg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run_data(i: int) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """Run i's params, metrics and tags: p00 one of 10 optimizers (the equality matches 10%),
    t00 one of 20 teams (LIKE 'team-1%' matches 11 of them), m00 uniform (> 0.5: half)."""
    rng = np.random.default_rng(i)
    params = {"p00": OPTIMIZERS[i % len(OPTIMIZERS)]}
    params |= {f"p{k:02d}": f"v{int(x)}" for k, x in enumerate(rng.integers(0, 1000, 19), 1)}
    metrics = {f"m{k:02d}": float(x) for k, x in enumerate(rng.random(N_METRICS))}
    tags = {"t00": f"team-{int(rng.integers(0, 20))}"}
    tags |= {f"t{k:02d}": f"tag value {int(x)}" for k, x in enumerate(rng.integers(0, 50, 9), 1)}
    return params, metrics, tags


async def timed(fn: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    await fn()  # warm-up: statement caches and the page cache
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def timed_sync(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def fmt(times: list[float]) -> str:
    return f"{statistics.median(times):.1f} ms (runs: {', '.join(f'{t:.1f}' for t in times)})"


# -- loading ours ------------------------------------------------------------------------------


async def load_ours(tk: Tracker, runs: int) -> str:
    exp = str(await tk.create_experiment("queries"))
    t0 = time.perf_counter()
    for first in range(0, runs, FLUSH_EVERY):
        block = [(i, *run_data(i)) for i in range(first, min(runs, first + FLUSH_EVERY))]
        # Started together: the writer group-commits them, as it does concurrent callers'.
        started = await asyncio.gather(
            *(tk.start_run(experiment_id=exp, name=f"run-{i}", params=p, tags=t)
              for i, p, _, t in block)
        )  # fmt: skip
        for run, (_, _, metrics, _) in zip(started, block, strict=True):
            run.log_metrics(metrics, step=0)
        await tk.flush()
    dt = time.perf_counter() - t0
    print(f"  loaded {runs:,} runs in {dt:.1f} s ({runs / dt:,.0f} runs/s), load {load_avg()}")
    return exp


async def wide_run(tk: Tracker) -> str:
    """A run with 1,000 metric keys, 10 steps each."""
    run = await tk.start_run("wide")
    for step in range(10):
        run.log_metrics({f"metric_{k:04d}": k + step / 10 for k in range(1000)}, step=step)
    await tk.flush()
    return run.run_id


async def long_run(tk: Tracker, points: int) -> str:
    """A run with one metric of `points` points (normal noise, 20 spikes)."""
    run = await tk.start_run("long")
    rng = np.random.default_rng(0)
    values = rng.normal(size=points)
    values[rng.integers(0, points, size=20)] = 1e6
    run.log_metric_array("loss", values)
    await tk.flush()
    return run.run_id


async def measure_ours(tk: Tracker, exp: str, repeat: int, label: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    page = await tk.search_runs([exp], FILTER, order_by=[ORDER], max_results=PAGE)
    more = page.next_page_token is not None
    print(f"  {label}: the search returns {len(page.items)} runs, another page: {more}")
    out["search"] = await timed(
        lambda: tk.search_runs([exp], FILTER, order_by=[ORDER], max_results=PAGE), repeat
    )
    wide = await wide_run(tk)
    assert len((await tk.get_run(wide)).data.metrics) == 1000
    out["get_run"] = await timed(lambda: tk.get_run(wide), repeat)
    long = await long_run(tk, 1_000_000)
    got = await tk.get_metric_buckets(long, "loss", buckets=1000)
    assert len(got) == 1
    out["buckets"] = await timed(lambda: tk.get_metric_buckets(long, "loss", buckets=1000), repeat)
    for name, times in out.items():
        print(f"  {label} {name}: {fmt(times)}, load {load_avg()}")
    return out


# -- query plans -------------------------------------------------------------------------------


def search_sql(family: str, exp: str) -> tuple[str, tuple[Any, ...]]:
    """The first-page search statement as the store runs it: its SQL and arguments."""
    from tracker.projections.queries import _stages
    from tracker.search.grammar import parse_run_filter, parse_run_order_by
    from tracker.search.sql import run_search
    from tracker.stores.sql import compiled, in_params

    search = run_search(
        family, parse_run_filter(FILTER), parse_run_order_by([ORDER]), stages=_stages("ACTIVE_ONLY")
    )
    c = compiled(search.statement(1, None), family)
    return c.sql, c.args({**search.params, **in_params([exp], "e"), "limit": PAGE + 1})


def explain_sqlite(db: Path, exp: str) -> None:
    sql, args = search_sql("sqlite", exp)
    with contextlib.closing(sqlite3.connect(db)) as c:
        rows = c.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
    print("  EXPLAIN QUERY PLAN (SQLite):")
    depth = {0: -1}
    for id_, parent, _, detail in rows:
        depth[id_] = depth.get(parent, -1) + 1
        print(f"    {'  ' * depth[id_]}{detail}")


async def explain_postgres(dsn: str, exp: str) -> None:
    import asyncpg

    sql, args = search_sql("postgresql", exp)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    finally:
        await conn.close()
    print("  EXPLAIN (ANALYZE, BUFFERS) (PostgreSQL):")
    for r in rows:
        print(f"    {r[0]}")


def sqlite_file(store: Path) -> Path:
    files = [p for p in store.rglob("*") if p.suffix in (".db", ".sqlite")]
    return files[0]


# -- PostgreSQL: a fresh database --------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_database(dsn: str) -> Any:
    import asyncpg

    name = f"tracker_bench_queries_{os.getpid()}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    parts = urlsplit(dsn)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


async def analyze(dsn: str) -> None:
    """ANALYZE, as autovacuum does within a minute of a load this size: the plans are those
    of a database in use, not of one whose tables the planner has never seen."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def server(kind: str, store: Path) -> Iterator[str]:
    """`tracker server` on the SQLite store `store`, or `mlflow server` on sqlite:///store;
    yields its URL once /health answers; stops its process group after."""
    port = free_port()
    if kind == "tracker":
        cmd = [
            sys.executable, "-c", "from tracker.cli import main; main()", "server",
            "--backend-store-uri", str(store), "--artifacts-destination", str(store) + "-art",
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
    else:
        cmd = [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}",
            "--default-artifact-root", str(store) + "-art", "--host", "127.0.0.1",
            "--port", str(port),
        ]  # fmt: skip
    log = Path(str(store) + ".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + HEALTH_DEADLINE
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} server exited: {log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url + "/health", timeout=2) as r,
            ):
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server not healthy in {HEALTH_DEADLINE}s")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_GRACE)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def load_mlflow(url: str, runs: int, threads: int = 4) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    exp: str = MlflowClient(url).create_experiment("queries")
    t0 = time.perf_counter()

    def part(k: int) -> None:
        client = MlflowClient(url)
        for i in range(k, runs, threads):
            params, metrics, tags = run_data(i)
            run_id = client.create_run(exp, run_name=f"run-{i}").info.run_id
            ts = int(time.time() * 1000)
            client.log_batch(
                run_id,
                metrics=[Metric(k_, v, ts, 0) for k_, v in metrics.items()],
                params=[Param(k_, v) for k_, v in params.items()],
                tags=[RunTag(k_, v) for k_, v in tags.items()],
            )

    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(part, k) for k in range(threads)]:
            f.result()
    dt = time.perf_counter() - t0
    rate = runs / dt
    print(f"  MLflow: loaded {runs:,} runs in {dt:.1f} s ({rate:,.1f} runs/s), load {load_avg()}")
    return exp


def search_through_client(url: str, exp: str, repeat: int, label: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)

    def once() -> Any:
        return client.search_runs([exp], FILTER, order_by=[ORDER], max_results=PAGE)

    got = once()
    print(f"  {label}: MlflowClient.search_runs returns {len(got)} runs")
    times = timed_sync(once, repeat)
    print(f"  {label} search through MlflowClient: {fmt(times)}, load {load_avg()}")
    return times


def search_over_http(url: str, exp: str, repeat: int, label: str) -> list[float]:
    """The same search as one bare HTTP request (urllib, JSON body): the server's part of
    the time, without MlflowClient turning the answer into Run objects."""
    import json

    body = json.dumps(
        {"experiment_ids": [exp], "filter": FILTER, "order_by": [ORDER], "max_results": PAGE}
    ).encode()

    def once() -> bytes:
        req = urllib.request.Request(
            url + "/api/2.0/mlflow/runs/search", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            answer: bytes = r.read()
            return answer

    times = timed_sync(once, repeat)
    answer = once()
    run = json.loads(answer)["runs"][0]
    shape = {k: sorted(v) if isinstance(v, dict) else v for k, v in run.items() if k != "data"}
    data = {k: len(v) for k, v in run["data"].items()}
    print(
        f"  {label} search over bare HTTP ({len(answer):,} bytes): {fmt(times)}, load {load_avg()}"
    )
    print(f"    a run's fields: {shape}; data: {data}")
    return times


def first_ids(url: str, exp: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    page = MlflowClient(url).search_runs([exp], FILTER, order_by=[ORDER], max_results=PAGE)
    return [r.data.tags.get("mlflow.runName", r.info.run_name) for r in page]


# -- main --------------------------------------------------------------------------------------


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--mlflow-runs", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()
    backends = args.backends.split(",")  # "" for the servers only
    print(f"# Python {platform.python_version()}, {os.cpu_count()} cores, load {load_avg()}")
    print(f"# filter: {FILTER}; order_by: {ORDER}; first page of {PAGE}")
    with tempfile.TemporaryDirectory(prefix="bench-queries-") as tmp:
        d = Path(tmp)
        if "sqlite" in backends:
            print(f"SQLite, {args.runs:,} runs:")
            async with Tracker(str(d / "ours")) as tk:
                exp = await load_ours(tk, args.runs)
                await measure_ours(tk, exp, args.repeat, "SQLite")
            explain_sqlite(sqlite_file(d / "ours"), exp)
        if "postgresql" in backends:
            print(f"PostgreSQL, {args.runs:,} runs:")
            dsn = os.environ.get("TRACKER_TEST_POSTGRES_DSN", DEFAULT_DSN)
            async with fresh_database(dsn) as db:
                async with Tracker(db) as tk:
                    exp = await load_ours(tk, args.runs)
                    await analyze(db)
                    await measure_ours(tk, exp, args.repeat, "PostgreSQL")
                await explain_postgres(db, exp)
        if not args.no_mlflow:
            n = args.mlflow_runs
            print(f"Servers, {n:,} runs each, through MlflowClient:")
            store = d / f"ours-{n}"
            async with Tracker(str(store)) as tk:
                ours_exp = await load_ours(tk, n)
            with server("tracker", store) as url:
                ours = search_through_client(url, ours_exp, args.repeat, "tracker server")
                ours_http = search_over_http(url, ours_exp, args.repeat, "tracker server")
                ours_names = first_ids(url, ours_exp)
            with server("mlflow", d / "mlflow.db") as url:
                mlflow_exp = load_mlflow(url, n)
                theirs = search_through_client(url, mlflow_exp, args.repeat, "mlflow server")
                theirs_http = search_over_http(url, mlflow_exp, args.repeat, "mlflow server")
                theirs_names = first_ids(url, mlflow_exp)
            same = "the same" if ours_names == theirs_names else "DIFFERENT"
            print(f"  both servers return {same} runs in the same order")
            for how, a, b in (
                ("MlflowClient", theirs, ours),
                ("bare HTTP", theirs_http, ours_http),
            ):
                ratio = statistics.median(a) / statistics.median(b)
                print(f"  MLflow ÷ tracker, {how}: {ratio:.1f}×")


if __name__ == "__main__":
    asyncio.run(main())
