"""Creating the schema when several processes open a fresh database at once, on every backend."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from tests.contract.workers import open_worker
from tracker.events import NewEvent, RunCreated
from tracker.stores.base import SqlEventStore
from tracker.stores.migrations import MIGRATIONS
from tracker.stores.schema import schema_versions

PROCESSES = 6
APPLIED = [(m.version,) for m in MIGRATIONS]


async def _meta_rows(store: SqlEventStore) -> list[tuple[object, ...]]:
    async with store.snapshot() as s:
        return sorted(await s.fetchall(sa.select(schema_versions.c.version)))


async def _append_one(store: SqlEventStore) -> None:
    e = RunCreated("c" * 32, "0", "r", 1, "u", "file:///tmp/a", {}, None)
    await store.append([NewEvent(NewEvent.new_id(), e.stream_id, 1, 1, e)])


async def test_processes_opening_a_fresh_database_at_once_create_the_schema_once(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """Six processes released together into open() on a fresh database all succeed, and the
    schema is created exactly once (no duplicate-table or duplicate-version errors)."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=open_worker, args=(store_factory, start)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        await asyncio.to_thread(p.join, 120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    store = store_factory()
    await store.open()
    try:
        assert await _meta_rows(store) == APPLIED
        await _append_one(store)
        assert len(await store.read()) == 1
    finally:
        await store.aclose()


async def test_connections_opening_a_fresh_database_at_once_create_the_schema_once(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """Eight stores in one process opening concurrently: same outcome as separate processes."""
    stores = [store_factory() for _ in range(8)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert {await s.schema_version() for s in stores} == {MIGRATIONS[-1].version}
        assert await _meta_rows(stores[0]) == APPLIED
    finally:
        await asyncio.gather(*(s.aclose() for s in stores))


async def test_a_half_created_mysql_schema_is_completed_on_the_next_open(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """MySQL commits each DDL statement alone, so a crash can leave some tables: the next open
    creates the rest instead of failing on the ones that exist."""
    store = store_factory()
    if store.family != "mysql":
        pytest.skip("DDL is transactional here: a crash cannot leave half a schema")
    await store.open()
    async with store.transaction() as s:
        for table in ("events", "projection_state", "projection_errors", "tracker_schema"):
            await s.execute_raw(f"DROP TABLE {table}")
        for stmt in store.ddl(schema_versions):  # a crash after this
            await s.execute_raw(stmt)
    await store.aclose()
    again = store_factory()
    await again.open()
    try:
        assert await _meta_rows(again) == APPLIED
        await _append_one(again)
        with pytest.raises(Exception, match="append-only"):
            async with again.transaction() as s:
                await s.execute_raw("DELETE FROM events")
    finally:
        await again.aclose()
