"""An event the views cannot take never stops them, nor the opening of a store: every backend."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from tests.helpers import runner_for
from tracker import Tracker
from tracker.events import NewEvent, RunCreated, TagsSet
from tracker.stores import schema
from tracker.stores.base import SqlEventStore, now_ms

RUN = "b" * 32
LONG = "d" * 32


async def _append_raw(store: SqlEventStore, position: int, event_type: str, payload: bytes) -> None:
    """An events row as another (newer, or broken) writer could have left it."""
    async with store.transaction() as s:
        await s.execute(
            sa.insert(schema.events),
            {"position": position, "event_id": bytes([position]) * 16,
             "stream_id": f"run-{'c' * 32}", "seq": position, "event_type": event_type,
             "schema_version": 1, "recorded_at": now_ms(), "payload": payload},
        )  # fmt: skip


async def test_events_the_views_cannot_take_are_recorded_and_skipped(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """Events appended straight to the log that no projection can apply (a type this code
    does not know, a payload that does not decode, values a column refuses: a 300-character run
    name on PostgreSQL and MariaDB, a NUL in a tag on PostgreSQL) are recorded in
    projection_errors with the reason and counted in statistics(), skipped, and everything
    after them is applied; a new
    tracker opens the store, reads work, and a rebuild ends in the same state."""
    store = store_factory()
    await store.open()
    head = await store.head()
    await _append_raw(store, head + 1, "EventFromTheFuture", b"{}")
    await _append_raw(store, head + 2, "TagsSet", b"\xffnot json")
    # Valid for the log, refused by the views on some backends: a run name past the column's
    # 250 characters (PostgreSQL and MariaDB refuse it; SQLite keeps it).
    long_name = RunCreated(LONG, "0", "x" * 300, 1, "u", "file:///tmp/a", {}, None)
    run = RunCreated(RUN, "0", "fine", 1, "u", "file:///tmp/b", {}, None)
    # The value issue 7 reported: NUL passes the log (a JSON payload) but PostgreSQL's text
    # columns refuse it; appended here past the call-site validation that now stops it.
    nul = TagsSet(RUN, {"k": "a\x00b"})
    good = TagsSet(RUN, {"after": "yes"})
    recorded = await store.append(
        [NewEvent(NewEvent.new_id(), e.stream_id, seq, now_ms(), e)
         for e, seq in ((long_name, 1), (run, 1), (nul, 2), (good, 3))]
    )  # fmt: skip
    long_at, nul_at = recorded[0].position, recorded[2].position
    family = store.family
    await store.aclose()

    async with Tracker(store=store_factory()) as tk:  # opening catches the views up
        errors = await tk.projection_errors()
        kinds = {(e.event_type, e.position) for e in errors}
        assert ("EventFromTheFuture", head + 1) in kinds
        assert ("TagsSet", head + 2) in kinds
        reasons = {e.position: e.error.lower() for e in errors}
        if family in ("postgresql", "mysql"):  # VARCHAR(250) is enforced there
            assert ("RunCreated", long_at) in kinds
            assert "too long" in reasons[long_at]
        else:  # SQLite keeps the long name: nothing to skip
            assert ("RunCreated", long_at) not in kinds
            assert (await tk.get_run(LONG)).info.run_name == "x" * 300
        if family == "postgresql":  # text cannot hold NUL there
            assert ("TagsSet", nul_at) in kinds
            assert "0x00" in reasons[nul_at]
        else:
            assert ("TagsSet", nul_at) not in kinds
            assert (await tk.get_run(RUN)).data.tags["k"] == "a\x00b"
        assert all(e.error for e in errors)
        assert tk.statistics().projection_errors == len(errors) >= 3 * 2  # each projection
        assert tk.runner.position == await tk.log.head()
        run = await tk.get_run(RUN)  # the events after the bad ones were applied
        assert run.data.tags["after"] == "yes"
        later = await tk.start_run("still-works")
        later.log_metric("m", 1.0)
        await later.end()
        assert (await tk.get_run(later.run_id)).data.metrics == {"m": 1.0}
        rebuilt = await runner_for(tk.store)  # type: ignore[arg-type]
        await rebuilt.rebuild()
        assert {(e.event_type, e.position) for e in await rebuilt.errors()} == kinds
