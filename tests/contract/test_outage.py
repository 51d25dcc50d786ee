"""Connections killed by the server while a Tracker logs: retried, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from array import array
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import stamina
from stamina.instrumentation import RetryDetails

from tests.backends import POSTGRES_DSN
from tracker import Tracker
from tracker.errors import StoreUnavailableError
from tracker.events import MetricSeries, MetricsLogged, NewEvent, run_stream
from tracker.stores.base import SqlEventStore
from tracker.stores.postgres import PostgresEventStore
from tracker.stores.sqlalchemy import SqlAlchemyEventStore
from tracker.stores.sqlite import SQLiteEventStore

KEYS = ("loss", "acc")
STEPS = 6000
_KILL = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = $1"
)


def _named(store_factory: Callable[[], SqlEventStore], name: str) -> SqlEventStore:
    """A store of the backend whose connections carry `name`, so that the test kills only them."""
    probe = store_factory()
    assert isinstance(store_factory, partial)
    if isinstance(probe, PostgresEventStore):
        return store_factory(server_settings={"application_name": name})
    if isinstance(probe, SqlAlchemyEventStore) and probe.family == "postgresql":
        return store_factory(connect_args={"server_settings": {"application_name": name}})
    pytest.skip("kills connections with PostgreSQL's pg_terminate_backend")


async def _killer(
    name: str, stop: asyncio.Event, every: float, first: asyncio.Event | None = None
) -> int:
    import asyncpg

    admin: Any = await asyncpg.connect(POSTGRES_DSN)
    killed = 0
    try:
        while not stop.is_set():
            killed += int(await admin.fetchval(_KILL, name))
            if killed and first is not None:
                first.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        await admin.close()
    return killed


async def test_killed_connections_lose_and_duplicate_nothing(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """While a Tracker logs 12,000 points in small batches, the server kills all of its
    connections every 50 ms: the writer retries and reconnects, and afterwards every point is in
    the log exactly once and in the metric history exactly once."""
    name = f"tracker-outage-{secrets.token_hex(4)}"
    store = _named(store_factory, name)
    async with Tracker(store=store, max_batch_age=0.005) as tk:
        run = await tk.start_run("outage")
        stop, first_kill = asyncio.Event(), asyncio.Event()
        killer = asyncio.create_task(_killer(name, stop, every=0.05, first=first_kill))
        for step in range(STEPS):
            for key in KEYS:
                run.log_metric(key, step / 7, step=step, timestamp=step)
            if step % 20 == 0:
                await asyncio.sleep(0.01)  # spread the points over many batches and kills
            if step % 1000 == 0:
                run.set_tag(f"t{step}", str(step))
        await asyncio.wait_for(first_kill.wait(), 60)  # at least one kill hit the tracker
        stop.set()
        killed = await killer
        await tk.flush(timeout=60)
        assert killed > 0

        for key in KEYS:
            page = await tk.get_metric_history(run.run_id, key, max_results=STEPS + 1)
            assert [m.step for m in page.items] == list(range(STEPS))
            assert [m.value for m in page.items] == [s / 7 for s in range(STEPS)]
        got = await tk.get_run(run.run_id)
        assert {k: v for k, v in got.data.tags.items() if k.startswith("t")} == {
            f"t{s}": str(s) for s in range(0, STEPS, 1000)
        }
        points: dict[str, list[int]] = {k: [] for k in KEYS}
        sequences = []
        async for rec in tk.store.iter_stream(run_stream(run.run_id)):
            sequences.append(rec.sequence)
            if isinstance(rec.event, MetricsLogged):
                for series in rec.event.series:
                    points[series.key].extend(series.steps)
        assert sequences == list(range(1, len(sequences) + 1))
        for key in KEYS:
            assert sorted(points[key]) == list(range(STEPS)), f"{key}: lost or doubled points"


async def test_idle_connections_killed_by_the_server_are_replaced(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """After the server drops every pooled connection, the next read and append succeed at
    once: the pool notices dead connections and opens new ones."""
    name = f"tracker-idle-{secrets.token_hex(4)}"
    store = _named(store_factory, name)
    await store.open()
    try:
        await asyncio.gather(store.head(), store.head(), store.head())  # several pooled
        import asyncpg

        admin: Any = await asyncpg.connect(POSTGRES_DSN)
        try:
            assert await admin.fetchval(_KILL, name) >= 1
        finally:
            await admin.close()
        assert await store.head() == 0
        async with Tracker(store=store) as tk:
            run = await tk.start_run("after")
            run.log_metric("m", 1.0, step=0)
            await tk.flush(timeout=10)
            assert len((await tk.get_metric_history(run.run_id, "m")).items) == 1
    finally:
        await store.aclose()


class _FaultyCommits:
    """Makes chosen transactions of a store fail at COMMIT: either the commit is lost
    (rolled back) or only its reply is (committed), as when the connection dies right then."""

    def __init__(self, store: SqlEventStore) -> None:
        self.store = store
        self.transaction = store.transaction
        self.lose_commit = 0
        self.lose_reply = 0
        self.projection_only = False
        self.injected = 0
        self._in_projection = False
        lock_projection = store.lock_projection

        async def locking(session: Any) -> None:
            self._in_projection = True
            await lock_projection(session)

        store.lock_projection = locking  # type: ignore[method-assign]
        store.transaction = self._faulty  # type: ignore[method-assign]
        if isinstance(store, PostgresEventStore):
            # Its appends take a pooled connection directly (three round trips, no session):
            # intercept their COMMIT on that connection instead.
            connection = store._connection

            @contextlib.asynccontextmanager
            async def faulty_connection(begin: str | None) -> Any:
                async with connection(begin) as conn:
                    yield _CommitFaults(conn, self) if begin and "advisory" in begin else conn

            store._connection = faulty_connection  # type: ignore[method-assign]

    @contextlib.asynccontextmanager
    async def _faulty(self) -> Any:
        self._in_projection = False
        async with self.transaction() as s:
            yield s
            if self.lose_commit and (self._in_projection or not self.projection_only):
                self.lose_commit -= 1
                self.injected += 1
                raise StoreUnavailableError("injected: connection lost before COMMIT")
        if self.lose_reply and (self._in_projection or not self.projection_only):
            self.lose_reply -= 1
            self.injected += 1
            raise StoreUnavailableError("injected: connection lost after COMMIT")


class _CommitFaults:
    """An asyncpg connection whose COMMIT the faults can lose, or whose reply they can."""

    def __init__(self, conn: Any, faults: _FaultyCommits) -> None:
        self._conn, self._faults = conn, faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def execute(self, sql: str, *args: Any) -> Any:
        f = self._faults
        if sql == "COMMIT" and not f.projection_only:
            if f.lose_commit:
                f.lose_commit -= 1
                f.injected += 1
                await self._conn.execute("ROLLBACK")
                raise StoreUnavailableError("injected: connection lost before COMMIT")
            if f.lose_reply:
                f.lose_reply -= 1
                f.injected += 1
                await self._conn.execute("COMMIT")
                raise ConnectionResetError("injected: connection lost after COMMIT")
        return await self._conn.execute(sql, *args)


def _new_metrics(run: str, seq: int, step: int) -> NewEvent:
    s = MetricSeries("m", array("q", [step]), array("q", [step]), array("d", [step / 3]))
    event = MetricsLogged(run, (s,))
    return NewEvent(NewEvent.new_id(), event.stream_id, seq, step, event)


async def test_an_append_whose_commit_reply_is_lost_reports_what_it_stored(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """When the connection dies after COMMIT reached the server, append finds out that the
    batch is in and returns it, so the writer does not store it again under new ids; when it
    dies before, append raises StoreUnavailableError and nothing is stored."""
    store = store_factory()
    if isinstance(store, SQLiteEventStore):
        pytest.skip("SQLite commits in-process: no reply can be lost on the way")
    await store.open()
    try:
        faults = _FaultyCommits(store)
        run = "d" * 32
        faults.lose_reply = 1
        batch = [_new_metrics(run, 1, 0), _new_metrics(run, 2, 1)]
        stored = await store.append(batch)
        assert faults.injected == 1
        assert [r.event_id for r in stored] == [e.event_id for e in batch]
        assert [r.position for r in await store.read()] == [r.position for r in stored]

        faults.lose_commit = 1
        with pytest.raises(StoreUnavailableError):
            await store.append([_new_metrics(run, 3, 2)])
        assert faults.injected == 2
        assert len(await store.read()) == 2
        again = await store.append([_new_metrics(run, 3, 2)])  # the writer's retry
        assert [r.position for r in again] == [stored[-1].position + 1]
    finally:
        await store.aclose()


async def test_a_projection_whose_commit_is_lost_is_redone(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """A projection transaction lost at COMMIT leaves the projector's position where the
    database has it, so the writer's retry and later reads bring the views up to date."""
    store = store_factory()
    faults = _FaultyCommits(store)
    faults.projection_only = True
    async with Tracker(store=store) as tk:
        run = await tk.start_run("faulty")
        await tk.flush()
        faults.lose_commit = 1
        for step in range(100):
            run.log_metric("m", step / 3, step=step)
        await tk.flush(timeout=30)
        assert faults.injected == 1
        page = await tk.get_metric_history(run.run_id, "m")
        assert [m.step for m in page.items] == list(range(100))
        assert (await tk.get_run(run.run_id)).data.metrics["m"] == 99 / 3


@contextlib.contextmanager
def _retries() -> Iterator[list[RetryDetails]]:
    """Every retry stamina schedules meanwhile (the tracker's own hooks keep running)."""
    seen: list[RetryDetails] = []

    def record(details: RetryDetails) -> None:
        seen.append(details)

    before = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([*before, record])
    try:
        yield seen
    finally:
        stamina.instrumentation.set_on_retry_hooks(before)


def _outages(seen: list[RetryDetails]) -> int:
    return sum(isinstance(d.caused_by, StoreUnavailableError) for d in seen)


async def test_reads_and_open_survive_killed_connections(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """While the server kills the tracker's connections every few milliseconds, get_run and
    search_runs keep answering, right, and Tracker.open() keeps succeeding: reads and open
    retry a lost connection as writes do, and no StoreUnavailableError reaches the caller.
    Each loop runs until kills have interrupted it several times (seen as retries)."""
    name = f"tracker-reads-{secrets.token_hex(4)}"
    async with Tracker(store=_named(store_factory, name)) as tk:
        runs = []
        for i in range(5):
            run = await tk.start_run(name=f"run-{i}")
            run.log_param("i", str(i))
            run.log_metric("m", float(i), step=i)
            run.set_tag("t", f"tag-{i}")
            await run.end()
            runs.append(run.run_id)
        await tk.flush()
        newest_first = runs[::-1]  # started one after the other: search_runs' order

        stop = asyncio.Event()
        killer = asyncio.create_task(_killer(name, stop, every=0.05))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        reads = 0
        try:
            with _retries() as seen:
                while _outages(seen) < 5 or reads < 100:
                    assert loop.time() < deadline, f"{reads} reads, {_outages(seen)} retried"
                    i = reads % len(runs)
                    got = await tk.get_run(runs[i])
                    assert got.data.params == {"i": str(i)}
                    assert got.data.metrics == {"m": float(i)}
                    assert got.data.tags["t"] == f"tag-{i}"
                    page = await tk.search_runs()
                    assert [r.info.run_id for r in page.items] == newest_first
                    reads += 1
        finally:
            stop.set()
            killed = await killer
        assert killed > 0

    stop = asyncio.Event()
    killer = asyncio.create_task(_killer(name, stop, every=0.02))
    opened = 0
    deadline = loop.time() + 60
    try:
        with _retries() as seen:
            while _outages(seen) < 3 or opened < 5:
                assert loop.time() < deadline, f"{opened} opens, {_outages(seen)} retried"
                async with Tracker(store=_named(store_factory, name)) as again:
                    opened += 1
                    got = await again.get_run(runs[0])
                    assert got.data.params == {"i": "0"}
    finally:
        stop.set()
        await killer
