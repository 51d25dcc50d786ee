"""Web UI benchmark, in Debian's chromium driven by Playwright (as tests/ui does).

A store is seeded here (a temporary directory, the embedded SQLite log), `tracker ui --port 0`
is started on it, and the browser measures, from the start of the page's navigation:

  (a) a run page with --metrics metrics of --points points each, until every chart has drawn
      its buckets (the viewport is tall enough to hold them all);
  (b) the runs table of an experiment of --runs runs, until its first page (50 rows) is shown;
  (c) live latency: a point logged through the REST API (as a training loop's MLflow client
      would) until the open run page's chart has it, --samples times.

Figures are medians of --repeat page loads (the first, cold, is reported apart).

    python benchmarks/ui.py
    python benchmarks/ui.py --points 100000 --runs 1000 --repeat 3     # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
from playwright.sync_api import sync_playwright

import tracker

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 120_000
_LISTENING = re.compile(r"listening on (http://\S+)")


async def seed(uri: str, metrics: int, points: int, chunk: int, runs: int) -> tuple[str, str]:
    """The big run's id, and the id of the experiment of `runs` runs. The points are logged
    `chunk` at a time: the log keeps each call's points together, and a chunk that crosses a
    chart's bucket bounds is unpacked to be bucketed (--chunk 100000: the worst case)."""
    async with tracker.Tracker(uri) as tk:
        run = await tk.start_run("big", name="big")
        steps = np.arange(points, dtype=np.int64)
        rng = np.random.default_rng(0)
        for m in range(metrics):
            values = np.exp(-steps / (points / 4)) + rng.normal(0, 0.01, points)
            for lo in range(0, points, chunk):
                run.log_metric_array(f"metric_{m:02d}", values[lo : lo + chunk],
                                     steps[lo : lo + chunk])  # fmt: skip
            await tk.flush()
        await run.end()
        big = run.run_id
        many = await tk.create_experiment("many")
        for i in range(runs):
            r = await tk.start_run(experiment_id=many, name=f"run-{i:05d}",
                                   params={"lr": f"{(i % 10) / 100:.2f}"})  # fmt: skip
            r.log_metric("loss", 1 / (i + 1))
            await r.end()
    return big, many


def start(store: str, cwd: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKER_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker.cli", "ui", "--port", "0", "--backend-store-uri", store],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        if match := _LISTENING.search(line):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining
            return proc, match.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("tracker ui did not start")


def until(page: Any, url: str, condition: str) -> float:
    """Milliseconds from the navigation's start until `condition` holds on the page."""
    page.goto("about:blank")
    page.goto(url)
    handle = page.wait_for_function(f"() => ({condition}) && performance.now()", timeout=WAIT_MS)
    return float(handle.json_value())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=1000, help="points a log call")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tracker-ui-bench-") as tmp:
        store = str(Path(tmp) / "mlruns")
        t0 = time.perf_counter()
        big, many = asyncio.run(seed(store, args.metrics, args.points, args.chunk, args.runs))
        print(f"seeded {args.metrics}x{args.points:,} points ({args.chunk:,} a call) and "
              f"{args.runs:,} runs "
              f"in {time.perf_counter() - t0:.0f}s")  # fmt: skip
        proc, url = start(store, tmp)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1600, "height": 2400})
                drawn = (
                    "[...document.querySelectorAll('canvas[data-key]')]"
                    f".filter(c => c.dataset.drawn === '1').length === {args.metrics}"
                )
                report(
                    "run page, all charts drawn",
                    [until(page, f"{url}/#/runs/{big}", drawn) for _ in range(args.repeat)],
                )
                rows = "document.querySelectorAll('#runs tbody tr').length === 50"
                report("runs table, first page",
                       [until(page, f"{url}/#/experiments/{many}", rows)
                        for _ in range(args.repeat)])  # fmt: skip
                report("live point on its chart", live(page, url, many, args.samples))
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def live(page: Any, url: str, experiment_id: str, samples: int) -> list[float]:
    api = f"{url}/api/2.0/mlflow"
    with requests.Session() as http:
        info = http.post(f"{api}/runs/create", json={"experiment_id": experiment_id},
                         timeout=30).json()["run"]["info"]  # fmt: skip

        def log(step: int) -> None:
            point = {"key": "loss", "value": 1 / (step + 1), "step": step,
                     "timestamp": int(time.time() * 1000)}  # fmt: skip
            http.post(f"{api}/runs/log-batch", json={"run_id": info["run_id"],
                      "metrics": [point]}, timeout=30).raise_for_status()  # fmt: skip

        log(0)
        page.goto(f"{url}/#/runs/{info['run_id']}")
        page.wait_for_function("document.querySelector('canvas[data-key=\"loss\"]')"
                               "?.dataset.drawn === '1'", timeout=WAIT_MS)  # fmt: skip
        out = []
        for step in range(1, samples + 1):
            t0 = time.perf_counter()
            log(step)
            page.wait_for_function(
                "s => document.querySelector('canvas[data-key=\"loss\"]').dataset.lastStep === s",
                arg=str(step), timeout=WAIT_MS, polling=5,
            )  # fmt: skip
            out.append((time.perf_counter() - t0) * 1000)
    return [0.0, *out]  # report() drops the first figure as the cold one


def report(what: str, ms: list[float]) -> None:
    cold, warm = ms[0], ms[1:] or ms
    print(f"{what:32s} median {statistics.median(warm):7.0f} ms   max {max(warm):7.0f} ms"
          f"   (cold {cold:.0f} ms)" if cold else
          f"{what:32s} median {statistics.median(warm):7.0f} ms   max {max(warm):7.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
