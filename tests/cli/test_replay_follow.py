"""`tracker replay RUN_ID --follow` as a real process: history, then events as they commit,
and a clean exit on SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from tracker import Tracker

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 30.0


class Follower:
    """The process, and its stdout's lines as they come (read by a thread)."""

    def __init__(self, store: Path, run_id: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_TRACKING_URI")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracker.cli", "replay", run_id, "--follow",
             "--backend-store-uri", str(store)],
            cwd=store.parent, env={**env, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._start_reader()

    def _start_reader(self) -> None:
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    async def events(self, n: int) -> list[dict[str, Any]]:
        """The next `n` printed events (failing after DEADLINE seconds)."""
        out: list[dict[str, Any]] = []
        for _ in range(n):
            try:
                line = await asyncio.to_thread(self.lines.get, timeout=DEADLINE)
            except queue.Empty:
                pytest.fail(f"no event printed within {DEADLINE}s; got {out}")
            if line is None:
                pytest.fail(f"the process ended: {self.stop()}")
            out.append(orjson.loads(line))
        return out

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        """Signal it; its exit status and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"still running {DEADLINE}s after the signal: {err.decode()}")
        return self.proc.returncode, err.decode()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_replay_follow_prints_new_events_until_interrupted(tmp_path: Path, sig: int) -> None:
    """The run's history first, then each event appended afterwards, in order and once; a
    signal ends it with status 0."""
    store = tmp_path / "mlruns"
    async with Tracker(str(store)) as tk:
        run = await tk.start_run(name="followed")
        run.log_param("lr", "0.1")
        await tk.flush()
        follower = Follower(store, run.run_id)
        try:
            history = await follower.events(2)
            assert [e["type"] for e in history] == ["RunCreated", "ParamsLogged"]
            other = await tk.start_run(name="other")
            other.log_metric("x", 1.0)
            for step in range(3):
                run.log_metric("loss", 1.0 / (step + 1), step=step)
                await tk.flush()
            run.set_tag("phase", "done")
            await tk.flush()
            live = await follower.events(4)
        finally:
            status, err = follower.stop(sig)
    assert [e["type"] for e in live] == ["MetricsLogged"] * 3 + ["TagsSet"]
    assert all(e["data"]["run_id"] == run.run_id for e in live)
    positions = [e["position"] for e in history + live]
    assert positions == sorted(set(positions))
    assert status == 0, err
    assert "Traceback" not in err


def test_replay_follow_refuses_until(tmp_path: Path) -> None:
    """--follow with --until is a usage error (status 2), saying why."""
    done = subprocess.run(
        [sys.executable, "-m", "tracker.cli", "replay", "abc", "--follow", "--until", "3",
         "--backend-store-uri", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=DEADLINE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 2
    assert "--until" in done.stderr
