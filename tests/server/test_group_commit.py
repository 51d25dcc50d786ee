"""Group commit: concurrent requests to one server share the writer's batches (one append
transaction each), read from the server's Prometheus metrics rather than from timings."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.backends import POSTGRES_DSN
from tests.server.conftest import ServerProcess, wait_for
from tests.server.processes import (
    REQUEST_TIMEOUT,
    Reply,
    fresh_postgres_schema,
    history,
    log_metric,
    new_run,
    postgres_uri,
    running_server,
    scrape,
    send_together,
    send_whole,
    total,
)
from tracker.stores.postgres import LOCK_LOG_SQL

REQUESTS = 50
BATCHES = "tracker_writer_batches_total"
QUEUE_DEPTH = "tracker_writer_queue_depth"
IN_FLIGHT = "tracker_http_requests_in_flight"
HOLD_DEADLINE = 20.0
"""The longest the test holds the store's write lock (SQLite's busy timeout is 30 s)."""

# Another backend waiting for the advisory lock this session holds: the server's append.
_WAITING_SQL = """
SELECT count(*) FROM pg_locks held JOIN pg_locks waiting
  USING (locktype, database, classid, objid, objsubid)
WHERE held.pid = pg_backend_pid() AND held.granted AND held.locktype = 'advisory'
  AND NOT waiting.granted
"""


@dataclass(frozen=True, slots=True)
class Backend:
    kind: str
    uri: str
    where: str
    """The SQLite file, or the PostgreSQL schema."""


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        with fresh_postgres_schema() as schema:
            yield Backend("postgres", postgres_uri(schema), schema)
        return
    path = tmp_path / "tracker.db"
    yield Backend("sqlite", f"sqlite:///{path}", str(path))


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path / "server", backend=backend.uri) as server:
        yield server


def steps(url: str, run_id: str, key: str) -> list[int]:
    return sorted(p["step"] for p in history(url, run_id, key))


def batches(url: str) -> float:
    return total(scrape(url), BATCHES)


def test_concurrent_requests_share_commits(server: ServerProcess) -> None:
    """Fifty log-metric requests released together are each answered 200 and stored, in
    fewer batches (append transactions) than requests."""
    run_id = new_run(server.url)
    before = batches(server.url)
    replies = send_together(server.url, [log_metric(run_id, "m", i) for i in range(REQUESTS)])
    assert [r.status for r in replies] == [200] * REQUESTS, replies
    committed = batches(server.url) - before
    assert 1 <= committed < REQUESTS
    assert steps(server.url, run_id, "m") == list(range(REQUESTS))


@contextlib.contextmanager
def append_lock(backend: Backend) -> Iterator[Callable[[str], bool]]:
    """Hold the lock every append of `backend` takes, for the length of the block; yields a
    test of whether the server's writer is blocked on it (given the server's URL)."""
    if backend.kind == "sqlite":
        conn = sqlite3.connect(backend.where, timeout=HOLD_DEADLINE, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # SQLite's one write lock, as the server's appends

            def sqlite_waiting(url: str) -> bool:
                # SQLite does not show who waits for its lock. The one request in flight
                # (besides this scrape) runs without a pause from its headers to the queue
                # (it was sent in one write), so once it is answering and the queue is empty,
                # the writer has taken it and is blocked.
                samples = scrape(url)
                return total(samples, IN_FLIGHT) == 2 and total(samples, QUEUE_DEPTH) == 0

            yield sqlite_waiting
        finally:
            conn.close()  # rolls back: the lock goes
        return
    with asyncio.Runner() as runner:
        pg = runner.run(asyncpg.connect(POSTGRES_DSN, timeout=REQUEST_TIMEOUT))
        try:
            runner.run(pg.execute(f"SET search_path TO {backend.where}"))
            runner.run(pg.execute("BEGIN"))
            runner.run(pg.execute(LOCK_LOG_SQL))  # the statement the server's appends run

            def postgres_waiting(url: str) -> bool:
                return bool(runner.run(pg.fetchval(_WAITING_SQL)))

            yield postgres_waiting
        finally:
            runner.run(pg.close())  # ends the transaction: the lock goes


def test_requests_queued_behind_a_commit_go_in_one_batch(
    server: ServerProcess, backend: Backend
) -> None:
    """While one append waits for the store, fifty requests that arrive meanwhile are queued;
    once the store answers they are committed together: two batches in all for the 51
    requests, each answered 200 only then, and every write stored."""
    run_id = new_run(server.url)
    before = batches(server.url)
    with ThreadPoolExecutor(max_workers=2) as pool:
        with append_lock(backend) as writer_waiting:
            first = pool.submit(send_whole, server.url, log_metric(run_id, "first", 0))
            wait_for(lambda: writer_waiting(server.url), timeout=HOLD_DEADLINE,
                     what="the first request's append to wait for the lock")  # fmt: skip
            burst = pool.submit(
                send_together, server.url,
                [log_metric(run_id, "m", i) for i in range(REQUESTS)], busy=1,
            )  # fmt: skip
            wait_for(lambda: total(scrape(server.url), QUEUE_DEPTH) == REQUESTS,
                     timeout=HOLD_DEADLINE, what=f"{REQUESTS} requests queued")  # fmt: skip
            # Nothing is answered while the store holds the writer up.
            assert not first.done() and not burst.done()
            assert batches(server.url) == before
        answered: Reply = first.result(timeout=REQUEST_TIMEOUT)
        replies: list[Reply] = burst.result(timeout=REQUEST_TIMEOUT)
    assert answered.status == 200, answered
    assert [r.status for r in replies] == [200] * REQUESTS, replies
    assert batches(server.url) - before == 2
    assert steps(server.url, run_id, "first") == [0]
    assert steps(server.url, run_id, "m") == list(range(REQUESTS))
