"""Schema migrations as data: versions only increase, and a database tracker 0.1 made upgrades."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tracker import Tracker
from tracker.events import (
    MetricSeries,
    MetricsLogged,
    NewEvent,
    ParamsLogged,
    RunCreated,
    TagsSet,
)
from tracker.stores import migrations
from tracker.stores.base import SqlEventStore
from tracker.stores.migrations import MIGRATIONS, Migration

DATA = Path(__file__).parent / "data"
RUN = "a" * 32


def test_versions_start_at_one_and_only_increase() -> None:
    """Migrations are numbered 1, 2, 3, ... in order, each described."""
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert all(m.description for m in MIGRATIONS)
    assert MIGRATIONS[-1].version == migrations.SCHEMA_VERSION


def _v01_schema(family: str) -> list[str]:
    """The DDL tracker 0.1 (commit 3470de5) ran on this family, frozen when v2 was written."""
    statements: list[str] = json.loads((DATA / f"schema_v1_{family}.json").read_text())
    return [s for s in statements if not s.startswith("INSERT INTO tracker_schema")]


async def _as_tracker_01(store_factory: Callable[[], SqlEventStore]) -> SqlEventStore:
    """A database as tracker 0.1 left it: its schema, events in its log, its views claiming to
    be projected up to them (with a row the new views would never hold)."""
    store = store_factory()

    async def create(s: SqlEventStore, session: object) -> None:
        for stmt in _v01_schema(s.family):
            await session.execute_raw(stmt)  # type: ignore[attr-defined]

    old = (Migration(1, "tracker 0.1's schema, frozen", create),)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(migrations, "MIGRATIONS", old)
        mp.setattr(migrations, "SCHEMA_VERSION", 1)
        await store.open()
    created = RunCreated(RUN, "0", "old-run", 1000, "u", "file:///tmp/x", {"t": "1"}, None)
    series = MetricSeries("loss", [0, 1, 2], [10, 11, 12], [3.0, 2.0, 1.0])
    events = [created, ParamsLogged(RUN, {"lr": "0.1"}), TagsSet(RUN, {"k": "v"}),
              MetricsLogged(RUN, (series,))]  # fmt: skip
    await store.append(
        [NewEvent(NewEvent.new_id(), e.stream_id, i, 1000 + i, e) for i, e in enumerate(events, 1)]
    )
    async with store.transaction() as s:
        await s.execute_raw("INSERT INTO projection_state (name, position) VALUES ('views', 4)")
        await s.execute_raw(
            "INSERT INTO run_params (run_id, param_key, param_value) "
            "VALUES ('stale', 'only', 'in 0.1 views')"
        )
    await store.aclose()
    return store


async def test_a_tracker_01_database_upgrades_and_keeps_everything(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """Opening a database tracker 0.1 made applies the later migrations under the schema lock:
    the log is kept as it was, the views are rebuilt from it (0.1's are dropped), and the run
    reads back whole."""
    await _as_tracker_01(store_factory)
    store = store_factory()
    async with Tracker(store=store) as tk:
        assert await store.schema_version() == MIGRATIONS[-1].version
        run = await tk.get_run(RUN)
        assert run.info.run_name == "old-run"
        assert run.data.params == {"lr": "0.1"}
        assert run.data.tags["k"] == "v" and run.data.tags["t"] == "1"
        assert run.data.metrics == {"loss": 1.0}
        history = await tk.get_metric_history(RUN, "loss")
        assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.0)]
        assert len([r async for r in tk.replay(RUN)]) == 4
        # The Default experiment 0.1 never made is made now, and new writes work.
        new = await tk.start_run("after-upgrade")
        new.log_metric("m", 1.0)
        await new.end()
        assert (await tk.get_run(new.run_id)).data.metrics == {"m": 1.0}
    again = store_factory()
    await again.open()  # a second open finds nothing to do
    try:
        assert await again.schema_version() == MIGRATIONS[-1].version
    finally:
        await again.aclose()
