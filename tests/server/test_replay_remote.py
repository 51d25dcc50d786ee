"""`tracker replay RUN_ID [--follow]` against a tracking server's URL: the history through the
native API, then the live stream, in order and once, ending cleanly on SIGINT."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from tests.cli.test_replay_follow import DEADLINE, REPO, Follower
from tests.server.processes import backend_uri, log_metric, new_run, ok, running_server, send_whole


class RemoteFollower(Follower):
    """The same reader of a `tracker replay --follow` process, pointed at a server."""

    def __init__(self, url: str, run_id: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracker.cli", "replay", run_id, "--follow",
             "--backend-store-uri", url],
            cwd=cwd, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._start_reader()


async def test_replay_follows_a_run_through_a_server(tmp_path: Path) -> None:
    with (
        backend_uri("sqlite", tmp_path) as backend,
        running_server(tmp_path / "srv", backend=backend) as server,
    ):
        run_id = new_run(server.url)
        ok(server.url, "runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"})
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tracker.cli", "replay", run_id, "--backend-store-uri",
             server.url],
            capture_output=True, timeout=DEADLINE, env={"PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        history = [orjson.loads(line) for line in done.stdout.splitlines()]
        assert [e["type"] for e in history] == ["RunCreated", "ParamsLogged"]

        follower = RemoteFollower(server.url, run_id, tmp_path)
        try:
            assert await follower.events(2) == history
            other = new_run(server.url)
            send_whole(server.url, log_metric(other, "x", 0))
            for step in range(3):
                await asyncio.to_thread(send_whole, server.url, log_metric(run_id, "loss", step))
            live = await follower.events(3)
        finally:
            status, err = follower.stop(signal.SIGINT)
    assert [e["type"] for e in live] == ["MetricsLogged"] * 3
    assert [e["data"]["series"][0]["steps"] for e in live] == [[0], [1], [2]]
    positions = [e["position"] for e in history + live]
    assert positions == sorted(set(positions))
    assert status == 0, err
    assert "Traceback" not in err


def test_replay_of_an_unknown_run_through_a_server_says_so(tmp_path: Path) -> None:
    with (
        backend_uri("sqlite", tmp_path) as backend,
        running_server(tmp_path / "srv", backend=backend) as server,
    ):
        done = subprocess.run(
            [sys.executable, "-m", "tracker.cli", "replay", "f" * 32, "--backend-store-uri",
             server.url],
            capture_output=True, text=True, timeout=DEADLINE, env={"PYTHONPATH": str(REPO)},
        )  # fmt: skip
    assert done.returncode == 1
    assert "no run" in done.stderr and "Traceback" not in done.stderr
