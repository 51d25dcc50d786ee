"""Crash safety: a SIGKILLed logger leaves an intact log holding every flushed point,
and SIGTERM or a normal exit of a synchronous loop loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tracker import Tracker
from tracker.events import MetricsLogged
from tracker.stores.sqlite import SQLiteEventStore

ROOT = Path(__file__).resolve().parents[2]

ASYNC_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import tracker

    async def main():
        async with tracker.Tracker(sys.argv[1]) as tk:
            run = await tk.start_run("crash", name="victim")
            print("run", run.run_id, flush=True)
            i = 0
            while True:
                for _ in range(500):
                    run.log_metric("m", float(i), step=i)
                    i += 1
                await tk.flush()
                print("acked", i, flush=True)

    asyncio.run(main())
    """
)

SYNC_CHILD = textwrap.dedent(
    """
    import faulthandler, signal, sys, time
    import tracker

    faulthandler.register(signal.SIGUSR1)  # the test asks for every thread's stack if it hangs

    with tracker.SyncTracker(sys.argv[1]) as tk:
        run = tk.start_run("term", name="sync")
        for i in range(20_000):
            run.log_metric("m", float(i), step=i)
        print("run", run.run_id, flush=True)  # logged, never flushed
        time.sleep(60)
    """
)


def _spawn(code: str, store_dir: Path, stderr: int | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, str(store_dir)], stdout=subprocess.PIPE, stderr=stderr,
        text=True, env=env,
    )  # fmt: skip


def _exit_status(child: subprocess.Popen[str], timeout: float) -> int:
    """The child's exit status; if it is still running after `timeout`, its threads' stacks
    (faulthandler, SIGUSR1) go into the failure, and it is killed."""
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGUSR1)
        time.sleep(1)
        child.kill()
        _, err = child.communicate()
        pytest.fail(f"still running {timeout}s after SIGTERM; its threads:\n{err}")


async def _steps(store_dir: Path, run_id: str) -> list[int]:
    async with Tracker(str(store_dir)) as tk:
        series = await tk.get_metric_series(run_id, "m")
        return [int(s) for s in series.steps]


async def test_sigkill_loses_nothing_that_flush_acknowledged(tmp_path: Path) -> None:
    """After SIGKILL mid-logging, the log passes integrity_check and holds every acked point."""
    child = _spawn(ASYNC_CHILD, tmp_path)
    assert child.stdout is not None
    run_id = child.stdout.readline().split()[1]
    acked = 0
    deadline = time.monotonic() + 60
    while acked < 20_000 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if line.startswith("acked"):
            acked = int(line.split()[1])
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert acked >= 20_000

    store = SQLiteEventStore(tmp_path / "tracker.db")
    await store.open()
    assert await store.integrity_check() == "ok"
    await store.aclose()
    steps = await _steps(tmp_path, run_id)
    assert len(steps) >= acked
    assert steps == list(range(len(steps)))  # a prefix, without holes
    async with Tracker(str(tmp_path)) as tk:  # and the log itself holds each point once
        logged = [
            p[0]
            async for rec in tk.replay(run_id)
            if isinstance(rec.event, MetricsLogged)
            for s in rec.event.series
            for p in s.points()
        ]
    assert sorted(logged) == steps


async def test_sigterm_drains_a_sync_training_loop(tmp_path: Path) -> None:
    """SIGTERM to a SyncTracker process stores every point logged before it, flushed or not."""
    child = _spawn(SYNC_CHILD, tmp_path, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    run_id = child.stdout.readline().split()[1]
    child.send_signal(signal.SIGTERM)
    assert _exit_status(child, timeout=60) == 128 + signal.SIGTERM
    child.stdout.close()
    child.stderr.close()
    steps = await _steps(tmp_path, run_id)
    assert steps == list(range(20_000))
    async with Tracker(str(tmp_path)) as tk:
        assert (await tk.get_run(run_id)).info.status == "KILLED"
