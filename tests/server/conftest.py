"""Fixtures: the app in-process for raw HTTP, and `tracker server` as a subprocess for MLflow's
client (which is synchronous, and would block an in-process event loop)."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer

from tests.backends import POSTGRES_DSN, postgres_schema, with_database
from tracker.server import ServerConfig, create_app

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class ServerProcess:
    """A `tracker server` subprocess, its URL, and everything it wrote to stderr."""

    url: str
    proc: subprocess.Popen[str]
    artifacts: Path
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None
    """The thread reading stderr; joined on stop, so `log` holds the last lines too."""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it to exit; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=STOP_TIMEOUT)
        if self.reader is not None:
            self.reader.join(timeout=5)  # EOF once every worker has exited too
        return code

    @property
    def log(self) -> str:
        return "".join(self.lines)


def server_env(**extra: str) -> dict[str, str]:
    """The environment for a server subprocess: this worktree's `tracker` first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKER_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def start_server(
    cwd: Path, *args: str, backend: str | None = None, env: dict[str, str] | None = None
) -> ServerProcess:
    """Start `tracker server --port 0` and return once it answers /health."""
    artifacts = cwd / "artifacts"
    return start_tracker(
        cwd, "server", "--port", "0", "--backend-store-uri", backend or str(cwd / "mlruns"),
        "--artifacts-destination", str(artifacts), *args, env=env, artifacts=artifacts,
    )  # fmt: skip


def start_tracker(
    cwd: Path, *args: str, env: dict[str, str] | None = None, artifacts: Path | None = None
) -> ServerProcess:
    """Start `tracker ARGS...` (a command that serves: `server`, `ui`), read the URL it says it
    listens on, and return once that answers /health."""
    artifacts = artifacts or cwd / "artifacts"
    command = [sys.executable, "-m", "tracker.cli", *args]
    proc = subprocess.Popen(
        command, cwd=cwd, env=env or server_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    found: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        # Keeps reading for the server's whole life, so a full pipe never blocks its logging.
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                lines.append(line)
                if match := _LISTENING.search(line):
                    found.put(match.group(1))
        finally:
            proc.stderr.close()  # at EOF: the server has exited
            found.put(None)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        url = found.get(timeout=START_TIMEOUT)
    except queue.Empty:
        url = None
    if url is None:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
        raise AssertionError(f"the server did not start:\n{''.join(lines)}")
    server = ServerProcess(url, proc, artifacts, lines, reader)
    # The socket listens before the app is up; the first request waits in the backlog.
    try:
        response = requests.get(f"{url}/health", timeout=START_TIMEOUT)
    except requests.ConnectionError as exc:
        proc.wait(timeout=STOP_TIMEOUT)
        raise AssertionError(f"the server went away while starting ({exc}):\n{server.log}") from exc
    assert response.text == "OK", server.log
    return server


def wait_for(condition: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Wait until `condition()` is true, checking at growing intervals, up to `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@pytest.fixture(autouse=True)
def _mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's client retries 500s for minutes by default; our INVALID_STATE answers are 500s.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _postgres_uri(schema: str) -> str:
    return f"{with_database(POSTGRES_DSN, 'postgresql')}?search_path={schema}"


@pytest.fixture(scope="module", params=["sqlite"])
def mlflow_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server per test module, on the embedded SQLite store (or, for modules that
    parametrise this fixture with "postgres", on a fresh PostgreSQL schema)."""
    cwd = tmp_path_factory.mktemp("server")
    if request.param == "postgres":
        schema = postgres_schema()
        # One runner for both halves: asyncio.run would close the suspended context manager
        # (and drop the schema) as soon as it returned.
        with asyncio.Runner() as runner:
            name = runner.run(schema.__aenter__())
            try:
                server = start_server(cwd, backend=_postgres_uri(name))
                yield server
                assert server.stop() == 0, server.log
            finally:
                runner.run(schema.__aexit__(None, None, None))
        return
    server = start_server(cwd)
    yield server
    assert server.stop() == 0, server.log


@pytest.fixture
def mlflow_url(mlflow_server: ServerProcess) -> str:
    return mlflow_server.url


def app_config(tmp_path: Path, **overrides: Any) -> ServerConfig:
    return ServerConfig(
        backend_store_uri=str(tmp_path / "mlruns"),
        artifacts_destination=str(tmp_path / "artifacts"),
        **overrides,
    )


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    """The app in-process, on the embedded store under tmp_path, behind aiohttp's client."""
    async with TestClient(TestServer(create_app(app_config(tmp_path)))) as client:
        yield client
