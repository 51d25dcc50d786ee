"""Test helpers shared by the suites."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from tracker.events import MetricsLogged, RecordedEvent
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


def logged_points(events: Iterable[RecordedEvent]) -> dict[str, list[tuple[int, float]]]:
    """Each metric key's (step, value) points in the order the log holds them: the order they
    were logged in (get_metric_history sorts by step, so it would hide a reordering)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for rec in events:
        if isinstance(rec.event, MetricsLogged):
            for series in rec.event.series:
                points = zip(series.steps.tolist(), series.values.tolist(), strict=True)
                out.setdefault(series.key, []).extend(points)
    return out
