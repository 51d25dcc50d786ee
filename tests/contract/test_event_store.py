"""The SqlEventStore contract, run on every real backend."""

from __future__ import annotations

import asyncio
import math
from array import array

import pytest
import sqlalchemy as sa

from tracker.errors import ConcurrencyError
from tracker.events import (
    ExperimentCreated,
    MetricSeries,
    MetricsLogged,
    NewEvent,
    ParamsLogged,
    RunCreated,
    TagsSet,
    run_stream,
)
from tracker.stores.base import EventLog, SqlEventStore

RUN = "a" * 32


def _created(run_id: str = RUN) -> RunCreated:
    return RunCreated(run_id, "0", "r", 1000, "u", "file:///tmp/a", {"t": "1"}, None)


def _new(event, seq: int, event_id: bytes | None = None, at: int = 1000) -> NewEvent:
    return NewEvent(event_id or NewEvent.new_id(), event.stream_id, seq, at, event)


def _metrics(n: int, run_id: str = RUN, key: str = "loss") -> MetricsLogged:
    s = MetricSeries(
        key, array("q", range(n)), array("q", [5] * n), array("d", [i / 3 for i in range(n)])
    )
    return MetricsLogged(run_id, (s,))


async def test_append_assigns_increasing_positions_and_reads_back_equal_events(
    event_log: EventLog,
) -> None:
    """Positions strictly increase, and events read back equal what was appended."""
    events = [_new(_created(), 1), _new(ParamsLogged(RUN, {"a": "1"}), 2), _new(_metrics(10), 3)]
    recorded = await event_log.append(events)
    assert [r.position for r in recorded] == sorted({r.position for r in recorded})
    back = await event_log.read(after=0)
    assert [r.event for r in back] == [e.event for e in events]
    assert [r.position for r in back] == [r.position for r in recorded]
    more = await event_log.append([_new(TagsSet(RUN, {"x": "y"}), 4)])
    assert more[0].position > recorded[-1].position
    assert await event_log.head() == more[0].position
    assert await event_log.stream_head(run_stream(RUN)) == 4
    assert await event_log.stream_head(run_stream("b" * 32)) == 0


async def test_duplicate_event_id_is_a_no_op(event_log: EventLog) -> None:
    """Appending an event id already in the log stores nothing and raises nothing."""
    first = _new(_created(), 1)
    await event_log.append([first])
    again = await event_log.append([first])
    assert again == []
    assert len(await event_log.read()) == 1


async def test_sequence_conflict_raises_and_stores_nothing_of_the_batch(
    event_log: EventLog,
) -> None:
    """A taken (stream, sequence) raises ConcurrencyError; the whole batch is rolled back."""
    await event_log.append([_new(_created(), 1)])
    other = _new(ExperimentCreated("7", "e", "file:///x", 1), 1)
    clash = _new(ParamsLogged(RUN, {"a": "1"}), 1)
    with pytest.raises(ConcurrencyError):
        await event_log.append([other, clash])
    assert [r.event for r in await event_log.read()] == [_created()]


async def test_the_log_refuses_update_and_delete(store: SqlEventStore) -> None:
    """The database itself refuses to change or remove an appended event."""
    await store.append([_new(_created(), 1)])
    for statement in ("UPDATE events SET seq = 99", "DELETE FROM events"):
        with pytest.raises(Exception, match=r"(?i)append-only|refused|not allowed|denied"):
            async with store.transaction() as s:
                await s.execute(sa.text(statement))
    assert len(await store.read()) == 1


async def test_read_stream_bounds_by_position_and_time(event_log: EventLog) -> None:
    """read_stream honours until_position and until_time, both inclusive."""
    r = await event_log.append(
        [
            _new(_created(), 1, at=100),
            _new(_metrics(3), 2, at=200),
            _new(TagsSet(RUN, {"a": "b"}), 3, at=300),
        ]
    )
    s = run_stream(RUN)
    assert len(await event_log.read_stream(s)) == 3
    assert [x.position for x in await event_log.read_stream(s, until_position=r[1].position)] == [
        r[0].position,
        r[1].position,
    ]
    assert len(await event_log.read_stream(s, until_time=200)) == 2
    assert len(await event_log.read_stream(s, until_time=99)) == 0


async def test_metric_values_round_trip_bit_for_bit(event_log: EventLog) -> None:
    """NaN, ±Inf, -0.0 and extreme steps survive the log exactly."""
    values = array("d", [math.nan, math.inf, -math.inf, -0.0, 1e-300])
    steps = array("q", [-(1 << 63), (1 << 63) - 1, 0, 1, 2])
    s = MetricSeries("m", steps, array("q", [0, 1, 2, 3, (1 << 62)]), values)
    await event_log.append([_new(MetricsLogged(RUN, (s,)), 1)])
    (back,) = await event_log.read()
    assert back.event == MetricsLogged(RUN, (s,))


async def test_concurrent_appenders_never_share_a_position(store_factory) -> None:
    """Two connections appending at once get distinct positions and lose nothing."""
    a, b = store_factory(), store_factory()
    await a.open()
    await b.open()
    try:

        async def writer(st: SqlEventStore, run_id: str) -> None:
            await st.append([_new(_created(run_id), 1)])
            for i in range(2, 22):
                await st.append([_new(_metrics(5, run_id), i)])

        await asyncio.gather(writer(a, "1" * 32), writer(b, "2" * 32))
        events = await a.read(limit=1000)
        positions = [e.position for e in events]
        assert len(events) == 42
        assert positions == sorted(set(positions))
    finally:
        await a.aclose()
        await b.aclose()


async def test_schema_upgrade_is_idempotent(store_factory) -> None:
    """Opening a store on an existing database finds the schema and leaves it alone."""
    s1 = store_factory()
    await s1.open()
    await s1.append([_new(_created(), 1)])
    s2 = store_factory()
    await s2.open()
    assert await s2.upgrade() == await s2.schema_version() > 0
    assert len(await s2.read()) == 1
    await s1.aclose()
    await s2.aclose()


async def test_known_ids_and_payload_slices(event_log: EventLog) -> None:
    """known_ids says which ids are stored; read_slices gives bytes of stored payloads."""
    first, second = _new(_created(), 1), _new(_metrics(3), 2)
    recorded = await event_log.append([first, second])
    assert await event_log.known_ids([first.event_id, b"\x00" * 16]) == {first.event_id}
    payload = recorded[1].payload
    assert payload is not None
    got = await event_log.read_slices([(recorded[1].position, 2, 5), (recorded[0].position, 0, 1)])
    assert got[0] == payload[2:7] and len(got[1]) == 1


async def test_follow_sees_events_that_commit_later(event_log: EventLog) -> None:
    """follow() yields what is in the log, then each new event as it is appended, in order."""
    await event_log.append([_new(_created(), 1)])
    seen: list[int] = []
    feed = event_log.follow(after=0, poll_interval=0.01)

    async def take(n: int) -> None:
        async for rec in feed:
            seen.append(rec.position)
            if len(seen) == n:
                return

    await asyncio.wait_for(take(1), 10)
    await event_log.append([_new(TagsSet(RUN, {"a": "1"}), 2)])
    await event_log.append([_new(TagsSet(RUN, {"a": "2"}), 3)])
    await asyncio.wait_for(take(3), 10)
    await feed.aclose()
    assert seen == sorted(seen) and len(set(seen)) == 3


async def test_read_stream_can_leave_out_event_types(event_log: EventLog) -> None:
    """exclude_types leaves those types out of a stream read (what decisions skip)."""
    await event_log.append([_new(_created(), 1), _new(_metrics(2), 2), _new(TagsSet(RUN, {}), 3)])
    kinds = [
        type(r.event).__name__
        for r in await event_log.read_stream(
            run_stream(RUN), exclude_types=frozenset({"MetricsLogged"})
        )
    ]
    assert kinds == ["RunCreated", "TagsSet"]
    assert await event_log.stream_head(run_stream(RUN)) == 3
