"""Test helpers shared by the suites."""

from __future__ import annotations

from typing import Any

from tracker.stores.base import EventStore
from tracker.stores.schema import VIEWS


async def dump_views(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every view table's rows, sorted, blobs as bytes: equal dumps mean equal views."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with store.snapshot() as s:
        for table in VIEWS:
            rows = await s.fetchall(f"SELECT {', '.join(table.column_names)} FROM {table.name}")
            norm = [
                tuple(bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v for v in r)
                for r in rows
            ]
            out[table.name] = sorted(norm, key=repr)
    return out
