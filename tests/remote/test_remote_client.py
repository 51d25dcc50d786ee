"""The remote client, Tracker("http://..."), against real `tracker server` processes: logging and
reading through the server, refusals, a server killed mid-run, a client killed with its points in
the outbox, and `tracker sync`."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.server.conftest import ServerProcess, server_env, start_server
from tests.server.processes import backend_uri, history, kill, ok
from tracker import Tracker
from tracker.errors import InvalidInputError, ParamConflictError, WriterError
from tracker.events import MetricsLogged
from tracker.remote import RemoteStatistics
from tracker.remote.outbox import SUFFIX

DEADLINE = 60.0
NATIVE = "/api/tracker/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A `tracker server` on a free port, on the embedded SQLite store under tmp_path."""
    (tmp_path / "server").mkdir()
    proc = start_server(tmp_path / "server")
    try:
        yield proc
    finally:
        kill(proc)


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    path = tmp_path / "server"
    path.mkdir()
    return path


def outbox_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SUFFIX}"))


def stored_points(url: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Every point of `key` as the log holds it (duplicates included), from the run's events
    through the native API: a point stored twice shows twice here, unlike in a history."""
    out: list[tuple[int, float]] = []
    after = 0
    while True:
        page = requests.get(
            f"{url}{NATIVE}/runs/{run_id}/events", params={"after": after}, timeout=DEADLINE
        ).json()
        for event in page["events"]:
            if event["type"] == "MetricsLogged":
                for s in event["data"]["series"]:
                    if s["key"] == key:
                        out += zip(s["steps"], s["values"], strict=True)
        if "next_after" not in page:
            return out
        after = page["next_after"]


async def test_logs_and_reads_back_through_the_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Metrics, params and tags logged through Tracker(url) are durable on the server once
    flush() returns, read back the same through the client and through MLflow's REST API, and
    the outbox is empty (its file removed) once everything is acknowledged."""
    outbox = tmp_path / "outbox"
    async with Tracker(server.url, outbox_dir=outbox) as tk:
        run = await tk.start_run("remote", params={"lr": 0.1}, tags={"team": "ml"})
        for step in range(1000):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        run.set_tag("phase", "train")
        position = await tk.flush()
        assert position > 0
        stats = tk.statistics()
        assert isinstance(stats, RemoteStatistics)
        assert stats.outbox_batches == 0 and stats.outbox_bytes == 0 and stats.outbox_lag is None
        assert stats.acknowledged >= 3

        view = await tk.get_run(run.run_id)
        assert view.data.params == {"lr": "0.1"}
        assert view.data.tags["team"] == "ml" and view.data.tags["phase"] == "train"
        assert view.data.metrics["loss"] == pytest.approx(1.0 / 1000)
        series = await tk.get_metric_series(run.run_id, "loss")
        assert series.steps.tolist() == list(range(1000))
        page = await tk.get_metric_history(run.run_id, "loss", max_results=300)
        assert [m.step for m in page.items] == list(range(300)) and page.next_page_token
        found = await tk.search_runs([view.info.experiment_id], "params.lr = '0.1'")
        assert [r.info.run_id for r in found.items] == [run.run_id]
        experiment = await tk.get_experiment_by_name("remote")
        assert experiment is not None and experiment.experiment_id == view.info.experiment_id
        events = [rec async for rec in tk.replay(run.run_id)]
        assert sum(len(s) for e in events if isinstance(e.event, MetricsLogged)
                   for s in e.event.series) == 1000  # fmt: skip
        await run.end()
        assert (await tk.get_run(run.run_id)).info.status == "FINISHED"
    assert [p["step"] for p in history(server.url, run.run_id, "loss")] == list(range(1000))
    answer = ok(server.url, "runs/get", {"run_id": run.run_id}, "GET")
    assert {"key": "lr", "value": "0.1"} in answer["run"]["data"]["params"]
    assert outbox_files(outbox) == []


async def test_a_param_conflict_is_raised_by_flush_and_by_an_awaited_call(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A param another client logged first with another value: the queued write's refusal is
    raised by the next flush() as ParamConflictError with its fields, an awaited write raises
    it at once, and nothing refused stays in the outbox."""
    async with Tracker(server.url, outbox_dir=tmp_path / "outbox") as tk:
        run = await tk.start_run()
        ok(server.url, "runs/log-parameter", {"run_id": run.run_id, "key": "lr", "value": "0.2"})
        run.log_param("lr", "0.1")  # the handle does not know of the other client's value
        with pytest.raises(ParamConflictError) as info:
            await tk.flush()
        assert (info.value.key, info.value.old_value, info.value.new_value) == ("lr", "0.2", "0.1")
        with pytest.raises(ParamConflictError):
            await tk.log_param(run.run_id, "lr", "0.3")
        await tk.flush()  # reported once
        assert tk.statistics().outbox_batches == 0  # type: ignore[attr-defined]
        assert (await tk.get_run(run.run_id)).data.params == {"lr": "0.2"}


async def test_outbox_dir_needs_a_server_url(tmp_path: Path) -> None:
    """outbox_dir with a store URI is refused, saying what it is for."""
    with pytest.raises(InvalidInputError, match="tracking server"):
        Tracker(str(tmp_path / "mlruns"), outbox_dir=tmp_path / "outbox")


async def flush_until_acknowledged(tk: Tracker, deadline: float) -> None:
    """flush() until it succeeds: it raises WriterError while the server is unreachable."""
    while True:
        try:
            await tk.flush(timeout=max(0.1, deadline - time.monotonic()))
            return
        except WriterError:
            if time.monotonic() > deadline:
                raise


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The server's store: the embedded SQLite file, or a fresh PostgreSQL schema."""
    with backend_uri(request.param, tmp_path) as uri:
        yield uri


async def test_a_server_killed_mid_run_loses_and_duplicates_nothing(
    server_dir: Path, tmp_path: Path, backend: str
) -> None:
    """The server is SIGKILLed while the client logs, and started again on the same port
    and store: the client keeps logging meanwhile, flush() succeeds once the server is back,
    and every point is stored exactly once, on SQLite and on PostgreSQL."""
    port = free_port()
    server = start_server(server_dir, "--port", str(port), backend=backend)
    outbox = tmp_path / "outbox"
    try:
        async with Tracker(server.url, outbox_dir=outbox, write_timeout=0.5) as tk:
            run = await tk.start_run("restart")
            step = 0
            for _ in range(20):  # batches in flight while the server dies
                for _ in range(500):
                    run.log_metric("x", float(step), step=step)
                    step += 1
                await asyncio.sleep(0.01)
            server.proc.kill()
            server.proc.wait(timeout=DEADLINE)
            for _ in range(10):  # logging goes on while the server is down
                for _ in range(500):
                    run.log_metric("x", float(step), step=step)
                    step += 1
                await asyncio.sleep(0.01)
            with pytest.raises(WriterError, match="nothing is lost"):
                await tk.flush()
            await tk.flush(outbox_only=True)
            stats = tk.statistics()
            assert isinstance(stats, RemoteStatistics)
            assert stats.outbox_batches > 0 and stats.outbox_bytes > 0
            assert stats.outbox_lag is not None and stats.outbox_lag > 0
            server = start_server(server_dir, "--port", str(port), backend=backend)
            await flush_until_acknowledged(tk, time.monotonic() + DEADLINE)
            assert tk.statistics().outbox_batches == 0  # type: ignore[attr-defined]
            series = await tk.get_metric_series(run.run_id, "x")
            assert series.steps.tolist() == list(range(step))
        points = stored_points(server.url, run.run_id, "x")
        assert sorted(s for s, _ in points) == list(range(step))  # each once
        assert outbox_files(outbox) == []
    finally:
        kill(server)


CLIENT = """
import asyncio, sys
from tracker import Tracker

async def main(url: str, outbox: str, n: int) -> None:
    async with Tracker(url, outbox_dir=outbox) as tk:
        run = await tk.start_run("killed")
        print(run.run_id, flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the server is stopped now
        for step in range(n):
            run.log_metric("x", float(step), step=step)
        await tk.flush(outbox_only=True)
        print("in the outbox", flush=True)
        await asyncio.sleep(600)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def read_line(proc: subprocess.Popen[str], what: str) -> str:
    """The next line of the process's stdout, within DEADLINE."""
    assert proc.stdout is not None
    box: list[str] = []
    reader = threading_read(proc, box)
    reader.join(DEADLINE)
    if not box or not box[0]:
        proc.kill()
        raise AssertionError(f"no {what} from the client: {proc.communicate()[1]}")
    return box[0].strip()


def threading_read(proc: subprocess.Popen[str], box: list[str]) -> Any:
    import threading

    assert proc.stdout is not None
    stdout = proc.stdout
    thread = threading.Thread(target=lambda: box.append(stdout.readline()), daemon=True)
    thread.start()
    return thread


async def reopen_and_flush(url: str, outbox: Path) -> None:
    async with Tracker(url, outbox_dir=outbox) as tk:
        await tk.flush(timeout=DEADLINE)
        assert tk.statistics().outbox_batches == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("deliverer", ["tracker sync", "next tracker"])
def test_what_a_killed_client_left_in_its_outbox_is_delivered_once(
    server_dir: Path, tmp_path: Path, deliverer: str
) -> None:
    """A client killed after its points reached the outbox, with the server down: once the
    server is back, `tracker sync DIR --to URL` (or the next tracker opened on that outbox
    directory, before its own batches) delivers them, each point once, and empties the
    outbox; a second sync finds nothing to send."""
    port = free_port()
    outbox = tmp_path / "outbox"
    n = 5000
    server = start_server(server_dir, "--port", str(port))
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, server.url, str(outbox), str(n)],
        env=server_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        run_id = read_line(client, "run id")
        assert server.stop() == 0, server.log
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.flush()
        assert read_line(client, "flush") == "in the outbox"
        client.kill()
        client.wait(timeout=DEADLINE)
        assert len(outbox_files(outbox)) == 1  # its batches, left behind

        server = start_server(server_dir, "--port", str(port))
        sync = [sys.executable, "-m", "tracker.cli", "sync", str(outbox), "--to", server.url]
        if deliverer == "tracker sync":
            done = subprocess.run(sync, env=server_env(), capture_output=True, text=True,
                                  timeout=DEADLINE)  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert re.search(r"outbox empty: [1-9][\d,]* commands delivered", done.stdout)
        else:
            asyncio.run(reopen_and_flush(server.url, outbox))
        points = stored_points(server.url, run_id, "x")
        assert sorted(s for s, _ in points) == list(range(n))
        assert outbox_files(outbox) == []
        again = subprocess.run(sync, env=server_env(), capture_output=True, text=True,
                               timeout=DEADLINE)  # fmt: skip
        assert again.returncode == 0 and "0 commands" in again.stdout, again.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            client.kill()
        client.communicate(timeout=DEADLINE)  # waits, and closes the pipes
        kill(server)


def test_tracker_sync_refuses_a_url_that_is_no_server(tmp_path: Path) -> None:
    """`tracker sync` with a store URI for --to fails with a one-line error saying what to give."""
    done = subprocess.run(
        [sys.executable, "-m", "tracker.cli", "sync", str(tmp_path), "--to", "./mlruns"],
        env=server_env(), capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert done.returncode == 2 and "http://host:port" in done.stderr
