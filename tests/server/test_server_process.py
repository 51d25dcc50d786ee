"""`tracker server` as a process: where it binds, graceful shutdown, workers, refused setups."""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import requests

from tests.server.conftest import (
    STOP_TIMEOUT,
    ServerProcess,
    server_env,
    start_server,
    wait_for,
)

API = "/api/2.0/mlflow"


def in_flight(server: ServerProcess) -> float:
    """Requests being answered, read from /metrics (the scrape itself is one of them)."""
    text = requests.get(f"{server.url}/metrics", timeout=30).text
    line = next(x for x in text.splitlines() if x.startswith("tracker_http_requests_in_flight"))
    return float(line.split()[1])


def refuses_connections(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=5):
            return False
    except (ConnectionRefusedError, ConnectionResetError):
        # Reset: the connection sat in the backlog of a socket that was closed meanwhile.
        return True


@pytest.fixture
def server(tmp_path: Path) -> ServerProcess:
    return start_server(tmp_path)


def test_binds_loopback_by_default(server: ServerProcess) -> None:
    """Without --host the server listens on 127.0.0.1 only."""
    assert urlsplit(server.url).hostname == "127.0.0.1"
    listening = [
        c.laddr for c in psutil.Process(server.proc.pid).net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    ]  # fmt: skip
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
    assert server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_finishes_in_flight_requests(
    server: ServerProcess, tmp_path: Path, sig: signal.Signals
) -> None:
    """On SIGTERM or SIGINT the server stops accepting, lets an upload that is half sent finish
    (its answer is 200 and the file is whole), drains the writer and exits 0."""
    body = b"a" * 100_000 + b"b" * 100_000
    parts = urlsplit(server.url)
    upload = socket.create_connection((parts.hostname, parts.port), timeout=30)
    path = "/api/2.0/mlflow-artifacts/artifacts/0/late/artifacts/upload.bin"
    upload.sendall(
        f"PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body[:100_000]
    )
    wait_for(lambda: in_flight(server) >= 2, what="the upload to be in flight")
    run = requests.post(f"{server.url}{API}/runs/create", json={"experiment_id": "0"}, timeout=30)
    run_id = run.json()["run"]["info"]["run_id"]
    server.proc.send_signal(sig)
    wait_for(lambda: refuses_connections(server.url), what="the server to stop accepting")
    upload.sendall(body[100_000:])
    reply = b""
    while chunk := upload.recv(65536):
        reply += chunk
    upload.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply
    assert server.proc.wait(timeout=STOP_TIMEOUT) == 0, server.log
    assert (server.artifacts / "0/late/artifacts/upload.bin").read_bytes() == body
    # The run created before the signal is durable: a new server reads it back.
    again = start_server(tmp_path)
    got = requests.get(f"{again.url}{API}/runs/get", params={"run_id": run_id}, timeout=30)
    assert got.status_code == 200
    assert again.stop() == 0


def test_two_workers_share_the_port_and_the_store(tmp_path: Path) -> None:
    """--workers 2 runs two processes on one socket and one store: what one writes, any reads
    back at once; /metrics adds up both workers; SIGTERM stops both and the parent exits 0."""
    server = start_server(tmp_path, "--workers", "2")
    workers = psutil.Process(server.proc.pid).children()
    assert len(workers) == 2
    session = requests.Session()
    for i in range(30):
        created = session.post(f"{server.url}{API}/experiments/create",
                               json={"name": f"w-{i}"}, timeout=30)  # fmt: skip
        assert created.status_code == 200, created.text
        # A new connection each time, so the kernel may hand it to either worker.
        got = requests.get(f"{server.url}{API}/experiments/get-by-name",
                           params={"experiment_name": f"w-{i}"}, timeout=30)  # fmt: skip
        assert got.json()["experiment"]["experiment_id"] == created.json()["experiment_id"]
    text = requests.get(f"{server.url}/metrics", timeout=30).text
    line = next(
        x for x in text.splitlines()
        if x.startswith("tracker_http_requests_total")
        and 'route="/api/2.0/mlflow/experiments/create"' in x and 'status="200"' in x
    )  # fmt: skip
    assert float(line.split()[1]) == 30
    assert server.stop() == 0, server.log
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracker.cli", "server", "--port", "0", *args],
        cwd=tmp_path, env=server_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--backend-store-uri", "http://127.0.0.1:5000"), "not another server"),
        (("--backend-store-uri", "mssql+aioodbc://h/db"), "--backend-store-uri"),
        (("--artifacts-destination", "ftp://host/x"), "--artifacts-destination"),
    ],
)
def test_refused_configuration(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    """A configuration that cannot work exits non-zero at once, saying which flag is wrong,
    without a traceback."""
    started = time.monotonic()
    done = run_cli(tmp_path, *args)
    assert done.returncode != 0
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 30


def test_port_in_use(tmp_path: Path) -> None:
    """A port that is taken is one clear line and exit code 1."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "tracker.cli", "server", "--port", port],
            cwd=tmp_path, env=server_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_store_that_cannot_open(tmp_path: Path, workers: str) -> None:
    """A store that refuses to open (here MLflow's own database) stops the server with the
    store's error and exit code 1, one worker or several."""
    with contextlib.closing(sqlite3.connect(tmp_path / "mlflow.db")) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        db.commit()
    done = run_cli(
        tmp_path, "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db", "-w", workers
    )
    assert done.returncode == 1, done.stderr
    assert "Error:" in done.stderr and "MLflow tracking database" in done.stderr
    assert "Traceback" not in done.stderr


def test_upload_cut_off_is_not_a_server_error(server: ServerProcess) -> None:
    """A client that drops its connection mid-upload stores nothing and is logged as an
    abandoned upload, not as an internal error with a traceback."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as upload:
        upload.sendall(
            b"PUT /api/2.0/mlflow-artifacts/artifacts/0/cut.bin HTTP/1.1\r\nHost: t\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"a" * 1000
        )
        wait_for(lambda: in_flight(server) >= 2, what="the upload to be in flight")
    wait_for(lambda: "abandoned" in server.log, what="the server to notice")
    assert not (server.artifacts / "0" / "cut.bin").exists()
    assert server.stop() == 0
    assert "internal error" not in server.log and "Traceback" not in server.log
