"""Test helpers shared by the suites."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tracker.projections import default_projections
from tracker.projections.runner import ProjectionRunner
from tracker.stores.base import SqlEventStore

VIEW_TABLES = [t for p in default_projections() for t in p.tables]


async def dump_views(store: SqlEventStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every view table's rows, sorted, blobs as bytes: equal dumps mean equal views."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with store.snapshot() as s:
        for table in VIEW_TABLES:
            rows = await s.fetchall(sa.select(*table.c))
            norm = [
                tuple(bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v for v in r)
                for r in rows
            ]
            out[table.name] = sorted(norm, key=repr)
    return out


async def runner_for(store: SqlEventStore) -> ProjectionRunner:
    """An opened projection runner over a store's own log and views."""
    runner = ProjectionRunner(store, store, default_projections())
    await runner.open()
    return runner
