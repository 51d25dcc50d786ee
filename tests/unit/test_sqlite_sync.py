"""The embedded store spends one fsync a batch: log appends commit with the store's
`synchronous` (FULL by default), the views' transactions with NORMAL at most, since they are
rebuilt from the log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tracker import Tracker
from tracker.stores.sqlite import SQLiteEventStore


def _commits(statements: list[str]) -> list[tuple[str, bool]]:
    """Each COMMIT's synchronous level, and whether its transaction appended to the log."""
    level, appended, out = "", False, []
    for sql in statements:
        text = sql.strip().upper()
        if text.startswith("PRAGMA SYNCHRONOUS"):
            level = text.split()[-1]
        elif text.startswith("BEGIN"):
            appended = False
        elif text.startswith("INSERT INTO EVENTS"):
            appended = True
        elif text.startswith("COMMIT"):
            out.append((level, appended))
    return out


@pytest.mark.parametrize("configured, views", [("full", "NORMAL"), ("off", "OFF")])
async def test_appends_are_synced_as_configured_and_views_at_most_normal(
    tmp_path: Path, configured: str, views: str
) -> None:
    store = SQLiteEventStore(tmp_path / "tracker.db", synchronous=configured)
    async with Tracker(store=store, max_batch_age=0.001) as tk:
        seen: list[str] = []

        def trace(c: sqlite3.Connection) -> None:
            c.set_trace_callback(seen.append)

        await store._conn(False).call(trace)
        run = await tk.start_run()
        for i in range(3):
            run.log_metric("m", float(i), step=i)
            await tk.flush()
        await store._conn(False).call(lambda c: c.set_trace_callback(None))
    commits = _commits(seen)
    appends = [level for level, appended in commits if appended]
    others = [level for level, appended in commits if not appended]
    assert len(appends) >= 4  # the run, then each flushed point
    assert set(appends) == {configured.upper()}, commits
    assert len(others) >= len(appends) and set(others) == {views}, commits
