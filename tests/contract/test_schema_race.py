"""Creating the schema when several processes open a fresh database at once, on every backend."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable

import pytest

from tests.contract.workers import open_worker
from tracker.events import NewEvent, RunCreated
from tracker.stores.base import SCHEMA_VERSION, EventStore
from tracker.stores.schema import META, create_table_sql

PROCESSES = 6


async def _meta_rows(store: EventStore) -> list[tuple[object, ...]]:
    async with store.snapshot() as s:
        return await s.fetchall(f"SELECT version FROM {META.name}")


async def _append_one(store: EventStore) -> None:
    e = RunCreated("c" * 32, "0", "r", 1, "u", "file:///tmp/a", {}, None)
    await store.append([NewEvent(NewEvent.new_id(), e.stream_id, 1, 1, e)])


async def test_processes_opening_a_fresh_database_at_once_create_the_schema_once(
    store_factory: Callable[[], EventStore],
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
        assert await _meta_rows(store) == [(SCHEMA_VERSION,)]
        await _append_one(store)
        assert len(await store.read()) == 1
    finally:
        await store.aclose()


async def test_connections_opening_a_fresh_database_at_once_create_the_schema_once(
    store_factory: Callable[[], EventStore],
) -> None:
    """Eight stores in one process opening concurrently: same outcome as separate processes."""
    stores = [store_factory() for _ in range(8)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert {await s.schema_version() for s in stores} == {SCHEMA_VERSION}
        assert await _meta_rows(stores[0]) == [(SCHEMA_VERSION,)]
    finally:
        await asyncio.gather(*(s.aclose() for s in stores))


async def test_a_half_created_mysql_schema_is_completed_on_the_next_open(
    store_factory: Callable[[], EventStore],
) -> None:
    """MySQL commits each DDL statement alone, so a crash can leave some tables: the next open
    creates the rest instead of failing on the ones that exist."""
    store = store_factory()
    if store.dialect.name != "mysql":
        pytest.skip("DDL is transactional here: a crash cannot leave half a schema")
    await store.open()
    async with store.transaction() as s:
        for table in ("events", "runs", META.name):
            await s.execute(f"DROP TABLE {table}")
        await s.execute(create_table_sql(META, store.dialect.types)[0])  # a crash after this
    await store.aclose()
    again = store_factory()
    await again.open()
    try:
        assert await _meta_rows(again) == [(SCHEMA_VERSION,)]
        await _append_one(again)
        with pytest.raises(Exception, match="append-only"):
            async with again.transaction() as s:
                await s.execute("DELETE FROM events")
    finally:
        await again.aclose()
