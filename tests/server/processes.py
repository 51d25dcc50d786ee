"""Helpers for tests that run `tracker server` processes: servers that are always stopped,
fresh PostgreSQL schemas, requests released together, and each worker's own metrics."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import psutil
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import POSTGRES_DSN, postgres_schema, with_database
from tests.server.conftest import STOP_TIMEOUT, ServerProcess, start_server, wait_for
from tracker.server.config import MULTIPROC_ENV

API = "/api/2.0/mlflow"
REQUEST_TIMEOUT = 60.0
IN_FLIGHT = "tracker_http_requests_in_flight"


@contextlib.contextmanager
def fresh_postgres_schema() -> Iterator[str]:
    """A fresh schema in the test database for the length of the block (skipped, or failed in
    CI, when PostgreSQL does not answer)."""
    schema = postgres_schema()
    # One runner for both halves: asyncio.run would close the suspended context manager (and
    # drop the schema) as soon as it returned.
    with asyncio.Runner() as runner:
        name = runner.run(schema.__aenter__())
        try:
            yield name
        finally:
            runner.run(schema.__aexit__(None, None, None))


def postgres_uri(schema: str) -> str:
    """The backend store URI of `schema` in the test database."""
    return f"{with_database(POSTGRES_DSN, 'postgresql')}?search_path={schema}"


@contextlib.contextmanager
def backend_uri(kind: str, tmp_path: Path) -> Iterator[str]:
    """A fresh backend store URI: "sqlite" (a file under tmp_path) or "postgres" (a schema)."""
    if kind == "postgres":
        with fresh_postgres_schema() as schema:
            yield postgres_uri(schema)
    else:
        yield f"sqlite:///{tmp_path / 'tracker.db'}"


@contextlib.contextmanager
def running_server(cwd: Path, *args: str, backend: str) -> Iterator[ServerProcess]:
    """`tracker server` on a free port for the length of the block; it must exit 0 on
    SIGTERM, and is killed (workers included) if the block or the stop fails."""
    cwd.mkdir(parents=True, exist_ok=True)
    server = start_server(cwd, *args, backend=backend)
    try:
        yield server
        assert server.stop() == 0, server.log
    finally:
        kill(server)


def kill(server: ServerProcess) -> None:
    """SIGKILL the server and its workers (which run in sessions of their own, so killing the
    parent alone would leave them serving)."""
    try:
        workers = psutil.Process(server.proc.pid).children()
    except psutil.NoSuchProcess:
        workers = []
    if server.proc.poll() is None:
        server.proc.kill()
    server.proc.wait(timeout=STOP_TIMEOUT)
    for worker in workers:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.kill()
    psutil.wait_procs(workers, timeout=STOP_TIMEOUT)


# -- requests ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One MLflow REST call: POST with a JSON body, or GET with query parameters."""

    method: str
    rpc: str
    body: dict[str, Any]

    def encode(self, host: str) -> bytes:
        path = f"{API}/{self.rpc}"
        if self.method == "GET":
            return (f"GET {path}?{urlencode(self.body)} HTTP/1.1\r\nHost: {host}\r\n"
                    "Connection: close\r\n\r\n").encode()  # fmt: skip
        payload = json.dumps(self.body).encode()
        head = (f"{self.method} {path} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n")  # fmt: skip
        return head.encode() + payload


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any


def call(url: str, rpc: str, body: dict[str, Any], method: str = "POST") -> Reply:
    """One call on a connection of its own (so with several workers, any may answer it)."""
    if method == "GET":
        response = requests.get(f"{url}{API}/{rpc}", params=body, timeout=REQUEST_TIMEOUT)
    else:
        response = requests.post(f"{url}{API}/{rpc}", json=body, timeout=REQUEST_TIMEOUT)
    return Reply(response.status_code, response.json() if response.content else None)


def ok(url: str, rpc: str, body: dict[str, Any], method: str = "POST") -> Any:
    """A call that must succeed; its answer."""
    reply = call(url, rpc, body, method)
    assert reply.status == 200, reply
    return reply.body


def send_together(
    url: str, calls: Sequence[Call], *, busy: int = 0, timeout: float = REQUEST_TIMEOUT
) -> list[Reply]:
    """Send each call on a connection of its own, and release them together: each request
    goes out but its last byte, one connection at a time, each once /metrics shows the
    server answering the one before (it starts on the headers); then the last bytes go out
    back to back. No request can be decided before all have reached the server, so they race
    as closely as a client can make them; and with several workers each connection is
    accepted alone, so any worker may take it. `busy`: requests the server is already
    answering (and will be until these are released). The replies, in the order of `calls`."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    deadline = time.monotonic() + timeout
    raw = [c.encode(parts.netloc) for c in calls]
    conns: list[socket.socket] = []
    try:
        for i, data in enumerate(raw, 1):
            conn = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
            conns.append(conn)
            conn.sendall(data[:-1])
            # The scrape is itself in flight while it is answered.
            wait_for(lambda i=i: in_flight(url) >= busy + i + 1,
                     timeout=deadline - time.monotonic(),
                     what=f"the server to hold {i} requests")  # fmt: skip
        for conn, data in zip(conns, raw, strict=True):
            conn.sendall(data[-1:])
        replies = []
        for conn in conns:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            replies.append(_reply(conn))
        return replies
    finally:
        for conn in conns:
            conn.close()


def send_whole(url: str, call: Call, timeout: float = REQUEST_TIMEOUT) -> Reply:
    """Send `call` on a connection of its own in one write (headers and body together, unlike
    requests, which sends them apart), and read the reply."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as conn:
        conn.sendall(call.encode(parts.netloc))
        return _reply(conn)


def _reply(conn: socket.socket) -> Reply:
    response = http.client.HTTPResponse(conn)
    response.begin()
    body = response.read()
    return Reply(response.status, json.loads(body) if body else None)


# -- metrics -------------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """The server's /metrics as {(sample name, labels): value}."""
    text = requests.get(f"{url}/metrics", timeout=REQUEST_TIMEOUT).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def in_flight(url: str) -> float:
    return total(scrape(url), IN_FLIGHT)


def workers_of(server: ServerProcess) -> list[psutil.Process]:
    workers: list[psutil.Process] = psutil.Process(server.proc.pid).children()
    return workers


def requests_by_worker(server: ServerProcess, routes: Collection[str]) -> dict[int, float]:
    """Requests each worker has answered on `routes` (route patterns such as
    "/api/2.0/mlflow/runs/log-metric"), read from the worker's own file in prometheus-client's
    multiprocess directory: /metrics adds all workers up, so it cannot tell them apart."""
    counts = {}
    for worker in workers_of(server):
        directory = worker.environ()[MULTIPROC_ENV]
        counts[worker.pid] = _counter_of(Path(directory) / f"counter_{worker.pid}.db", routes)
    return counts


def _counter_of(path: Path, routes: Collection[str]) -> float:
    if not path.exists():  # a worker that has counted nothing has no file yet
        return 0.0
    # A copy: the worker keeps writing to its file while this reads it.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        families = MultiProcessCollector.merge([os.fspath(copy)], accumulate=False)  # type: ignore[no-untyped-call]
    return sum(
        float(s.value)
        for family in families
        for s in family.samples
        if s.name == "tracker_http_requests_total" and s.labels.get("route") in routes
    )


# -- MLflow calls the tests share ----------------------------------------------------------


def log_metric(run_id: str, key: str, step: int, value: float | None = None) -> Call:
    """A log-metric call; the value is the step unless given."""
    body = {"run_id": run_id, "key": key, "value": float(step) if value is None else value,
            "timestamp": 1, "step": step}  # fmt: skip
    return Call("POST", "runs/log-metric", body)


def new_run(url: str, experiment_id: str = "0") -> str:
    """Create a run; its id."""
    answer = ok(url, "runs/create", {"experiment_id": experiment_id, "start_time": 1})
    run_id: str = answer["run"]["info"]["run_id"]
    return run_id


def history(url: str, run_id: str, key: str) -> list[dict[str, Any]]:
    """The points of a metric, as metrics/get-history answers them (it leaves out an empty
    list, as MLflow does)."""
    answer = ok(url, "metrics/get-history", {"run_id": run_id, "metric_key": key}, "GET")
    points: list[dict[str, Any]] = answer.get("metrics", [])
    return points
