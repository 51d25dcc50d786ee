"""Server benchmark: MLflow's own client against `tracker server` and against `mlflow server`.

Both servers are started here, each on a fresh store (ours: a temporary directory, the embedded
SQLite log; MLflow's: `sqlite:///` in a temporary directory) on a free loopback port, and
stopped in `finally`. Each round measures, for each server, with `MlflowClient(tracking_uri=url)`:

  (a) `log_batch` of 1,000 metrics a call (10 keys), N calls: points/s;
  (b) per-call `log_metric`, M calls: calls/s and per-call latency p50/p99;
  (c) --clients concurrent clients (threads, each its own MlflowClient and run) logging
      per-call `log_metric` for --duration seconds: requests/s (total and per server process)
      and latency p50/p99; with --raw also the same load from a lean aiohttp client (one
      connection per client, the same JSON bodies), which shows what the server does when
      MLflow's client is not the bottleneck;
  (d) the server's RSS (psutil, its whole process tree) sampled every 0.2 s during (c): at the
      start, the peak and the end.

Counts are sized to each server (MLflow's does ~18 log_metric calls/s on this machine kind)
and rates are reported, not totals. Figures are medians of --repeat rounds; ratios are
tracker ÷ MLflow within each round, then their median. Every HTTP call has a timeout
(MLFLOW_HTTP_REQUEST_TIMEOUT for MLflow's client, set below); the client does not retry
(MLFLOW_HTTP_REQUEST_MAX_RETRIES=0), so a latency is one request's and a failure is counted.

    python benchmarks/server.py --repeat 3
    python benchmarks/server.py --repeat 1 --duration 60      # a longer sustained load
    python benchmarks/server.py --servers tracker --also-workers 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Before mlflow is imported anywhere (here, and in the load processes, which inherit it).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
# MLflow's documented knob for concurrent clients: without it, requests keeps 10 connections
# per process and the other threads reconnect on every call.
os.environ.setdefault("MLFLOW_HTTP_POOL_MAXSIZE", "256")
os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"

ROOT = Path(__file__).resolve().parents[1]
HEALTH_DEADLINE = 120.0
"""Seconds a server gets to answer /health after it is started (MLflow migrates its schema)."""
STOP_GRACE = 15.0
KEYS = 10
BATCH = 1000
MLFLOW_DEFAULT_WORKERS = 4
"""`mlflow server --workers` when not given (MLflow 3.17)."""


def _machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def _load() -> float:
    return os.getloadavg()[0]


def _q(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- the servers


@dataclass
class Server:
    """A server process this script started (in its own process group), and its URL."""

    name: str
    url: str
    workers: int
    proc: subprocess.Popen[bytes]
    log: Path

    def _tree(self) -> list[Any]:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> int:
        """RSS of the server's whole process tree (its workers included)."""
        import psutil

        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def cpu_seconds(self) -> tuple[float, int]:
        """User + system CPU seconds of the server's process tree, and how many processes."""
        import psutil

        total = 0.0
        tree = self._tree()
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total, len(tree)

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL it after STOP_GRACE seconds."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_GRACE)
        # The group, not only the leader: MLflow's uvicorn workers and ours outlive a killed parent.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def _health(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + HEALTH_DEADLINE
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{url}/health not OK after {HEALTH_DEADLINE}s:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.2)


def start_server(kind: str, workers: int | None, d: Path) -> Server:
    """Start `kind` ("tracker" or "mlflow") on a fresh store under `d`; return once /health answers."""
    port = _free_port()
    if kind == "tracker":
        n = workers or 1
        cmd = [
            sys.executable, "-c", "from tracker.cli import main; main()", "server",
            "--backend-store-uri", str(d / "store"), "--artifacts-destination", str(d / "art"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(n),
        ]  # fmt: skip
        name = "tracker" if n == 1 else f"tracker --workers {n}"
    else:
        n = workers or MLFLOW_DEFAULT_WORKERS
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
            "--default-artifact-root", str(d / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        if workers:
            cmd += ["--workers", str(workers)]
        name = "mlflow" if workers is None else f"mlflow --workers {n}"
    log = d / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=d, start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    server = Server(name, f"http://127.0.0.1:{port}", n, proc, log)
    try:
        _health(server.url, proc, log)
    except BaseException:
        server.stop()
        raise
    return server


# --------------------------------------------------------------------------- (a) and (b)


def _client(url: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def _new_run(client: Any) -> str:
    exp = client.create_experiment(f"bench-{time.time_ns()}-{threading.get_ident()}")
    run_id: str = client.create_run(exp).info.run_id
    return run_id


def bench_batch(url: str, calls: int) -> dict[str, float]:
    """(a) `log_batch` of BATCH metrics over KEYS keys, `calls` times (plus one untimed)."""
    from mlflow.entities import Metric

    client = _client(url)
    run = _new_run(client)
    now = int(time.time() * 1000)

    def batch(c: int) -> list[Any]:
        per_key = BATCH // KEYS
        return [
            Metric(f"metric_{i % KEYS}", 1.0 / (c * BATCH + i + 1), now, c * per_key + i // KEYS)
            for i in range(BATCH)
        ]

    batches = [batch(c) for c in range(calls + 1)]
    client.log_batch(run, metrics=batches[0])  # warm-up: connection, caches
    lat = []
    start = time.perf_counter()
    for b in batches[1:]:
        t0 = time.perf_counter()
        client.log_batch(run, metrics=b)
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    got = len(client.get_metric_history(run, "metric_0"))
    expect = (calls + 1) * BATCH // KEYS
    if got != expect:
        raise AssertionError(f"{url}: metric_0 has {got} points, expected {expect}")
    return {
        "points_per_s": calls * BATCH / elapsed,
        "p50_ms": _q(lat, 0.5) * 1000,
        "p99_ms": _q(lat, 0.99) * 1000,
    }


def bench_call(url: str, calls: int) -> dict[str, float]:
    """(b) per-call `log_metric`, `calls` times (plus five untimed)."""
    client = _client(url)
    run = _new_run(client)
    now = int(time.time() * 1000)
    for i in range(5):
        client.log_metric(run, "warmup", float(i), timestamp=now, step=i)
    lat = []
    start = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter()
        client.log_metric(run, "loss", 1.0 / (i + 1), timestamp=now, step=i)
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    got = len(client.get_metric_history(run, "loss"))
    if got != calls:
        raise AssertionError(f"{url}: loss has {got} points, expected {calls}")
    return {
        "calls_per_s": calls / elapsed,
        "p50_ms": _q(lat, 0.5) * 1000,
        "p99_ms": _q(lat, 0.99) * 1000,
    }


# --------------------------------------------------------------------------- (c) and (d)


def _load_mlflow(url: str, threads: int, duration: float) -> dict[str, Any]:
    """Load process body: `threads` MlflowClients, each its own run, per-call log_metric."""
    exp = _client(url).create_experiment(f"load-{time.time_ns()}")
    # One client at a time: MLflow's server on SQLite times out a burst of 50 creates.
    setup = threading.Lock()
    barrier = threading.Barrier(threads + 1, timeout=300)
    go = threading.Event()
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * threads
    setup_errors: list[BaseException] = []

    def client_thread(k: int) -> None:
        try:
            with setup:
                client = _client(url)
                run = client.create_run(exp).info.run_id
        except BaseException as e:
            setup_errors.append(e)
            barrier.abort()
            return
        barrier.wait()
        go.wait(600)
        now = int(time.time() * 1000)
        mine = lat[k]
        t_start = time.time()
        deadline = time.perf_counter() + duration
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            try:
                client.log_metric(run, "loss", 1.0 / (i + 1), timestamp=now, step=i)
            except Exception:
                errors[k] += 1
            else:
                mine.append(time.perf_counter() - t0)
            i += 1
        spans[k] = (t_start, time.time())

    ts = [threading.Thread(target=client_thread, args=(k,), daemon=True) for k in range(threads)]
    for t in ts:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        raise RuntimeError(f"setting up the clients failed: {setup_errors[:1]!r}") from None
    _ready_then_go()
    cpu0 = time.process_time()
    go.set()
    for t in ts:
        t.join(duration + 120)
    return {
        "lat_ms": [round(x * 1000, 3) for xs in lat for x in xs],
        "errors": sum(errors),
        "cpu_s": time.process_time() - cpu0,
        "start": min(s for s, _ in spans),
        "end": max(e for _, e in spans),
    }


def _load_raw(url: str, clients: int, duration: float) -> dict[str, Any]:
    """Load process body: `clients` concurrent aiohttp requests in flight, each for its own run."""
    import asyncio

    import aiohttp

    api = url + "/api/2.0/mlflow"

    async def main() -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=30)
        conn = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(timeout=timeout, connector=conn) as http:

            async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
                async with http.post(api + path, json=body) as r:
                    out: dict[str, Any] = await r.json(content_type=None)
                    if r.status != 200:
                        raise RuntimeError(f"{path}: {r.status} {out}")
                    return out

            exp = (await post("/experiments/create", {"name": f"raw-{time.time_ns()}"}))[
                "experiment_id"
            ]
            runs = []
            for _ in range(clients):  # sequential: MLflow's server on SQLite refuses bursts
                created = await post("/runs/create", {"experiment_id": exp})
                runs.append(created["run"]["info"]["run_id"])
            await asyncio.get_running_loop().run_in_executor(None, _ready_then_go)
            lat: list[float] = []
            errors = 0
            now = int(time.time() * 1000)
            deadline = time.perf_counter() + duration

            async def one(run: str) -> None:
                nonlocal errors
                i = 0
                while (t0 := time.perf_counter()) < deadline:
                    body = {"run_id": run, "key": "loss", "value": 1.0 / (i + 1),
                            "timestamp": now, "step": i}  # fmt: skip
                    try:
                        async with http.post(api + "/runs/log-metric", json=body) as r:
                            await r.read()
                            ok = r.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        ok = False
                    if ok:
                        lat.append(time.perf_counter() - t0)
                    else:
                        errors += 1
                    i += 1

            start, cpu0 = time.time(), time.process_time()
            await asyncio.gather(*(one(r) for r in runs))
            return {
                "lat_ms": [round(x * 1000, 3) for x in lat],
                "errors": errors,
                "cpu_s": time.process_time() - cpu0,
                "start": start,
                "end": time.time(),
            }

    return asyncio.run(main())


def _ready_then_go() -> None:
    """In a load process: tell the parent that setup is done, then wait for its "go"."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"load process {proc.pid} not ready in time")
        return proc.stdout.readline()
    finally:
        sel.close()


@dataclass
class RssSampler:
    """Samples a server's RSS every `interval` seconds on a thread."""

    server: Server
    interval: float = 0.2
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    cpu: list[float] = field(default_factory=list)
    processes: int = 0

    def start(self) -> None:
        cpu, self.processes = self.server.cpu_seconds()
        self.cpu.append(cpu)
        self.samples.append(self.server.rss_bytes())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.server.rss_bytes())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.samples.append(self.server.rss_bytes())
        self.cpu.append(self.server.cpu_seconds()[0])


def bench_concurrent(
    server: Server, mode: str, clients: int, duration: float, processes: int
) -> dict[str, float]:
    """(c) and (d): `clients` concurrent per-call clients over `processes` load processes."""
    per = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    procs: list[subprocess.Popen[str]] = []
    sampler = RssSampler(server)
    try:
        for n in per:
            cmd = [sys.executable, __file__, "--load-process", mode, "--url", server.url,
                   "--clients", str(n), "--duration", str(duration)]  # fmt: skip
            pipe = subprocess.PIPE
            procs.append(subprocess.Popen(cmd, stdin=pipe, stdout=pipe, text=True))
        setup_deadline = time.monotonic() + 300
        for p in procs:
            line = _read_line(p, setup_deadline)
            if line.strip() != "ready":
                raise RuntimeError(f"load process {p.pid} said {line!r}")
        sampler.start()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=duration + 180)
            if p.returncode != 0:
                raise RuntimeError(f"load process {p.pid} exited with {p.returncode}")
            outs.append(json.loads(out.strip().splitlines()[-1]))
        sampler.stop()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    lat = [x for o in outs for x in o["lat_ms"]]
    wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    rss = sampler.samples
    mb = 1024 * 1024
    return {
        "req_per_s": len(lat) / wall,
        "req_per_s_per_process": len(lat) / wall / server.workers,
        "p50_ms": _q(lat, 0.5),
        "p99_ms": _q(lat, 0.99),
        "errors": sum(o["errors"] for o in outs),
        "server_cpu_ms_per_req": (sampler.cpu[-1] - sampler.cpu[0]) * 1000 / max(1, len(lat)),
        "client_cpu_ms_per_req": sum(o["cpu_s"] for o in outs) * 1000 / max(1, len(lat)),
        "server_processes": sampler.processes,
        "rss_start_mb": rss[0] / mb,
        # Half-way: flat memory means the second half adds about nothing to it.
        "rss_half_mb": rss[len(rss) // 2] / mb,
        "rss_peak_mb": max(rss) / mb,
        "rss_end_mb": rss[-1] / mb,
    }


# --------------------------------------------------------------------------- the rounds


@dataclass
class Sizes:
    batch_calls: int
    calls: int


def run_round(
    kind: str, workers: int | None, sizes: Sizes | None, args: argparse.Namespace
) -> tuple[str, dict[str, dict[str, float]]]:
    """One server, fresh: (a) and (b) when `sizes` is given, then (c)/(d) with each client kind."""
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as d:
        server = start_server(kind, workers, Path(d))
        try:
            if sizes is not None:
                out["batch"] = {"load": _load(), **bench_batch(server.url, sizes.batch_calls)}
                out["call"] = {"load": _load(), **bench_call(server.url, sizes.calls)}
            for mode in ("mlflow", "raw") if args.raw else ("mlflow",):
                load = _load()
                res = bench_concurrent(
                    server, mode, args.clients, args.duration, args.client_processes
                )
                out[f"conc_{mode}"] = {"load": load, **res}
        finally:
            server.stop()
    return server.name, out


def _fmt(x: float) -> str:
    if x != x:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _table(
    title: str,
    bench: str,
    cols: list[tuple[str, str]],
    rounds: list[dict[str, dict[str, dict[str, float]]]],
    ratio_key: str | None,
    higher_is_better: bool = True,
) -> None:
    """One markdown table: a row per server and round, a median row per server, then ratios."""
    print(f"\n### {title}\n")
    print("| server | round | load | " + " | ".join(c for c, _ in cols) + " |")
    print("|---|---:|---:|" + "---:|" * len(cols))
    names = list(dict.fromkeys(n for r in rounds for n in r if bench in r[n]))
    for name in names:
        rows = [r[name][bench] for r in rounds if name in r and bench in r[name]]
        for i, row in enumerate(rows):
            vals = " | ".join(_fmt(row[k]) for _, k in cols)
            print(f"| {name} | {i + 1} | {row['load']:.1f} | {vals} |")
        med = " | ".join(f"**{_fmt(statistics.median(r[k] for r in rows))}**" for _, k in cols)
        print(f"| **{name}** | **median** | | {med} |")
    if ratio_key is None or "mlflow" not in names:
        return
    print()
    for name in names:
        if not name.startswith("tracker"):
            continue
        ratios = [
            r[name][bench][ratio_key] / r["mlflow"][bench][ratio_key]
            for r in rounds
            if name in r and "mlflow" in r and bench in r[name] and bench in r["mlflow"]
        ]
        if not higher_is_better:
            ratios = [1 / x for x in ratios]
        print(
            f"{name} ÷ mlflow ({ratio_key}), per round: "
            + ", ".join(f"{x:.1f}×" for x in ratios)
            + f"; median **{statistics.median(ratios):.1f}×**"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--servers", default="tracker,mlflow", help="comma-separated: tracker, mlflow")
    ap.add_argument("--batch-calls", type=int, default=100, help="(a) log_batch calls, ours")
    ap.add_argument(
        "--mlflow-batch-calls", type=int, default=20, help="(a) log_batch calls, MLflow's"
    )
    ap.add_argument("--calls", type=int, default=2000, help="(b) log_metric calls, ours")
    ap.add_argument("--mlflow-calls", type=int, default=200, help="(b) log_metric calls, MLflow's")
    ap.add_argument("--clients", type=int, default=50, help="(c) concurrent clients")
    ap.add_argument("--duration", type=float, default=15.0, help="(c) seconds of load")
    ap.add_argument(
        "--client-processes", type=int, default=1,
        help="(c) processes the clients' threads are spread over",
    )  # fmt: skip
    ap.add_argument(
        "--raw", action=argparse.BooleanOptionalAction, default=True,
        help="(c) also load each server from a lean aiohttp client",
    )  # fmt: skip
    ap.add_argument(
        "--mlflow-workers", type=int, default=None,
        help=f"mlflow server --workers (default: not passed, i.e. {MLFLOW_DEFAULT_WORKERS})",
    )  # fmt: skip
    ap.add_argument(
        "--also-workers", type=int, default=2,
        help="(c) also run `tracker server --workers N` (0: skip)",
    )  # fmt: skip
    ap.add_argument("--json", default=None, metavar="PATH", help="write every round as JSON")
    ap.add_argument("--load-process", choices=("mlflow", "raw"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.load_process:
        body = _load_mlflow if args.load_process == "mlflow" else _load_raw
        print(json.dumps(body(args.url, args.clients, args.duration)))
        return

    import mlflow

    import tracker

    servers = args.servers.split(",")
    print(f"machine: {_machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"tracker: {Path(tracker.__file__).parent}; mlflow {mlflow.__version__}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    started = time.monotonic()
    rounds: list[dict[str, dict[str, dict[str, float]]]] = []
    for r in range(args.repeat):
        this: dict[str, dict[str, dict[str, float]]] = {}
        if "tracker" in servers:
            name, res = run_round("tracker", None, Sizes(args.batch_calls, args.calls), args)
            this[name] = res
        if "mlflow" in servers:
            sizes = Sizes(args.mlflow_batch_calls, args.mlflow_calls)
            name, res = run_round("mlflow", args.mlflow_workers, sizes, args)
            this[name] = res
        if "tracker" in servers and args.also_workers > 1:
            name, res = run_round("tracker", args.also_workers, None, args)
            this[name] = res
        rounds.append(this)
        print(f"round {r + 1} done at {time.monotonic() - started:.0f}s (load {_load():.2f}):")
        for name, res in this.items():
            for bench, row in res.items():
                print(
                    f"  {name:<20} {bench:<12} "
                    + "  ".join(f"{k} {_fmt(v)}" for k, v in row.items())
                )
    if args.json:
        Path(args.json).write_text(json.dumps({"command": sys.argv[1:], "rounds": rounds}))

    print(f"\nmedians of {len(rounds)} rounds; total {time.monotonic() - started:.0f}s")
    lat = [("p50 ms", "p50_ms"), ("p99 ms", "p99_ms")]
    _table(f"(a) log_batch, {BATCH:,} metrics a call", "batch",
           [("points/s", "points_per_s"), *lat], rounds, "points_per_s")  # fmt: skip
    _table("(b) per-call log_metric", "call", [("calls/s", "calls_per_s"), *lat], rounds,
           "calls_per_s")  # fmt: skip
    conc = [("req/s", "req_per_s"), ("req/s per process", "req_per_s_per_process"), *lat,
            ("errors", "errors"), ("server CPU ms/req", "server_cpu_ms_per_req"),
            ("client CPU ms/req", "client_cpu_ms_per_req")]  # fmt: skip
    mem = [("processes", "server_processes"), ("RSS start MB", "rss_start_mb"),
           ("half-way MB", "rss_half_mb"),
           ("peak MB", "rss_peak_mb"), ("end MB", "rss_end_mb")]  # fmt: skip
    for mode, label in (("mlflow", "MLflow's client"), ("raw", "a lean aiohttp client")):
        bench = f"conc_{mode}"
        if not any(bench in res for r in rounds for res in r.values()):
            continue
        _table(f"(c) {args.clients} concurrent per-call clients, {label}, {args.duration:g} s",
               bench, conc, rounds, "req_per_s")  # fmt: skip
        _table(f"(d) server RSS during (c), {label}", bench, mem, rounds, None)


if __name__ == "__main__":
    main()
