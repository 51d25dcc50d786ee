"""The projection runner on every backend and on the in-memory log: it follows the log as it
grows, catches a newly added projection up alone, and rebuilds one projection by name."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final

import pytest
import sqlalchemy as sa

from tests.backends import BACKENDS
from tracker.errors import InvalidInputError
from tracker.events import (
    EVENT_TYPES,
    DomainEvent,
    ExperimentCreated,
    NewEvent,
    RecordedEvent,
    RunCreated,
    TagsSet,
)
from tracker.projections import default_projections
from tracker.projections.base import Context, Projection, handles
from tracker.projections.runner import ProjectionRunner
from tracker.stores.base import Database, EventLog, now_ms
from tracker.stores.memory import InMemoryEventLog
from tracker.stores.schema import experiments, projection_state, run_tags, runs
from tracker.stores.sqlite import SQLiteEventStore

RUN = "a" * 32
DEADLINE: Final = 10.0


@pytest.fixture(params=[*sorted(BACKENDS), "memory"])
async def roles(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[EventLog, Database]]:
    """An open log and the open database its views live in: one store on each SQL backend,
    and the in-memory log with an in-memory SQLite database (as tracker.testing pairs them)."""
    if request.param == "memory":
        log, database = InMemoryEventLog(), SQLiteEventStore(":memory:")
        await log.open()
        await database.open()
        yield log, database
        await database.aclose()
        await log.aclose()
        return
    async with BACKENDS[request.param](tmp_path) as factory:
        store = factory()
        await store.open()
        yield store, store
        await store.aclose()


async def _append(log: EventLog, *events: DomainEvent) -> list[RecordedEvent]:
    """Append events, each as the next in its stream."""
    heads: dict[str, int] = {}
    batch = []
    for e in events:
        stream = e.stream_id
        if stream not in heads:
            heads[stream] = await log.stream_head(stream)
        heads[stream] += 1
        batch.append(NewEvent(NewEvent.new_id(), stream, heads[stream], now_ms(), e))
    return await log.append(batch)


def _run(run_id: str, experiment_id: str = "0", name: str = "r") -> RunCreated:
    return RunCreated(run_id, experiment_id, name, 1000, "u", "file:///tmp/a", {}, None)


# -- follow ----------------------------------------------------------------------------------------

_TAG: Final = sa.select(run_tags.c.tag_value).where(
    run_tags.c.run_id == sa.bindparam("rid"), run_tags.c.tag_key == sa.bindparam("key")
)


async def _tag(database: Database, key: str) -> str | None:
    async with database.snapshot() as s:
        rows = await s.fetchall(_TAG, {"rid": RUN, "key": key})
    return rows[0][0] if rows else None


async def test_follow_applies_events_as_they_commit(roles: tuple[EventLog, Database]) -> None:
    """A follower catches up, then applies each event appended while it waits (the views show
    it within a deadline); cancelling it stops it promptly and leaves the runner usable."""
    log, database = roles
    runner = ProjectionRunner(log, database, default_projections())
    await runner.open()
    await _append(log, _run(RUN))
    reached: list[int] = []
    moved = asyncio.Condition()

    async def follow() -> None:
        async for position in runner.follow(poll_interval=0.01):
            async with moved:
                reached.append(position)
                moved.notify_all()

    async def reaches(position: int) -> None:
        async with moved:
            await moved.wait_for(lambda: bool(reached) and reached[-1] >= position)

    task = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(reaches(1), DEADLINE)  # caught up with what was there
        assert await _tag(database, "a") is None
        first = await _append(log, TagsSet(RUN, {"a": "1"}))
        await asyncio.wait_for(reaches(first[-1].position), DEADLINE)
        assert await _tag(database, "a") == "1"
        later = await _append(log, TagsSet(RUN, {"a": "2"}), TagsSet(RUN, {"b": "3"}))
        await asyncio.wait_for(reaches(later[-1].position), DEADLINE)
        assert await _tag(database, "a") == "2" and await _tag(database, "b") == "3"
        assert reached == sorted(set(reached))  # each position once, in order
        assert runner.positions == dict.fromkeys(runner.positions, later[-1].position)
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=DEADLINE)
    assert task.cancelled()
    assert not runner._lock.locked()
    await _append(log, TagsSet(RUN, {"c": "4"}))
    assert await asyncio.wait_for(runner.catch_up(), DEADLINE) == await log.head()
    assert await _tag(database, "c") == "4"


async def test_leaving_the_follow_loop_closes_it(roles: tuple[EventLog, Database]) -> None:
    """Breaking out of `async for ... in runner.follow()` stops following; positions stay."""
    log, database = roles
    runner = ProjectionRunner(log, database, default_projections())
    await runner.open()
    await _append(log, _run(RUN))
    follower = runner.follow(poll_interval=0.01)
    async with asyncio.timeout(DEADLINE):
        assert await anext(follower) == 1
        pending = asyncio.ensure_future(anext(follower))  # waiting on the feed now
        await _append(log, TagsSet(RUN, {"a": "1"}))
        assert await pending == 2
        await follower.aclose()
    assert runner.position == 2 and not runner._lock.locked()


class _TimedLog(InMemoryEventLog):
    """The in-memory log, noting when each read happens (how often a follower polls)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[float] = []
        self.read_done = asyncio.Condition()

    async def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        page = await super().read(after, limit)
        async with self.read_done:
            self.reads.append(asyncio.get_running_loop().time())
            self.read_done.notify_all()
        return page


async def test_an_idle_follower_waits_between_polls() -> None:
    """With nothing new in the log, a follower reads it once per poll interval, not in a
    busy loop."""
    log, database = _TimedLog(), SQLiteEventStore(":memory:")
    await log.open()
    await database.open()
    runner = ProjectionRunner(log, database, default_projections())
    await runner.open()
    follower = runner.follow(poll_interval=0.05)
    try:
        async with asyncio.timeout(DEADLINE):
            assert await anext(follower) == 0
            idle = asyncio.ensure_future(anext(follower))
            async with log.read_done:
                start = len(log.reads)
                await log.read_done.wait_for(lambda: len(log.reads) >= start + 5)
            gaps = [b - a for a, b in itertools.pairwise(log.reads[start:])]
            assert min(gaps) >= 0.04, gaps
            idle.cancel()
            await asyncio.wait({idle})
    finally:
        await follower.aclose()
        await database.aclose()


# -- a projection added later, and rebuilding one by name --------------------------------------

_TOY: Final = sa.Table(
    "toy_run_experiments",
    sa.MetaData(),
    sa.Column("run_id", sa.Unicode(64), primary_key=True),
    sa.Column("experiment_id", sa.Unicode(64), nullable=False),
)
_COUNTS: Final = sa.select(_TOY.c.experiment_id, sa.func.count()).group_by(_TOY.c.experiment_id)


class RunsPerExperiment(Projection):
    """A projection a later version could add: how many runs each experiment has."""

    name = "runs_per_experiment"
    version = 1
    tables = (_TOY,)
    ignores = frozenset(t for t in EVENT_TYPES.values() if t is not RunCreated)

    @handles(RunCreated)
    def _created(self, ctx: Context, rec: RecordedEvent, e: RunCreated) -> None:
        ctx.write(ctx.insert_ignore(_TOY), {"run_id": e.run_id, "experiment_id": e.experiment_id})


async def _counts(database: Database) -> dict[str, int]:
    async with database.snapshot() as s:
        return {r[0]: int(r[1]) for r in await s.fetchall(_COUNTS)}


_STORED: Final = sa.select(projection_state.c.name, projection_state.c.position)
_RUN_NAME: Final = sa.select(runs.c.run_name).where(runs.c.run_id == sa.bindparam("rid"))
_EXP_NAME: Final = sa.select(experiments.c.name).where(
    experiments.c.experiment_id == sa.bindparam("eid")
)
_TAMPER_RUN: Final = sa.update(runs).where(runs.c.run_id == RUN).values(run_name="tampered")
_TAMPER_EXP: Final = (
    sa.update(experiments).where(experiments.c.experiment_id == "1").values(name="tampered")
)


async def _stored(database: Database) -> dict[str, int]:
    async with database.snapshot() as s:
        return {r[0]: int(r[1]) for r in await s.fetchall(_STORED)}


async def _names(database: Database) -> tuple[str, str]:
    """The run's name in the runs view, the experiment's in the experiments view."""
    async with database.snapshot() as s:
        run = (await s.fetchall(_RUN_NAME, {"rid": RUN}))[0][0]
        exp = (await s.fetchall(_EXP_NAME, {"eid": "1"}))[0][0]
    return run, exp


async def test_a_new_projection_catches_up_alone_and_one_rebuilds_by_name(
    roles: tuple[EventLog, Database],
) -> None:
    """A projection added to a store whose views are current catches up from position 0 while
    the others keep their positions and tables (a mark left in their rows survives); then
    rebuild(["runs"]) rebuilds that projection alone (its mark is gone, the others' stays)."""
    log, database = roles
    old = ProjectionRunner(log, database, default_projections())
    await old.open()
    await _append(
        log,
        ExperimentCreated("1", "one", "file:///tmp/1", 1000),
        ExperimentCreated("2", "two", "file:///tmp/2", 1000),
        _run(RUN, "1", "first"), _run("b" * 32, "1"), _run("c" * 32, "1"),
        _run("d" * 32, "2"), _run("e" * 32, "2"), TagsSet(RUN, {"t": "1"}),
    )  # fmt: skip
    head = await log.head()
    assert await old.catch_up() == head
    before = await _stored(database)
    assert set(before.values()) == {head}
    async with database.transaction() as s:  # marks a re-application would overwrite
        await s.execute(_TAMPER_RUN)
        await s.execute(_TAMPER_EXP)

    runner = ProjectionRunner(log, database, [*default_projections(), RunsPerExperiment()])
    await runner.open()
    assert runner.positions == {**before, "runs_per_experiment": 0}
    read: list[int] = []
    assert await runner.catch_up(progress=read.append) == head
    assert sum(read) == head  # the whole log, for the new projection
    assert await _counts(database) == {"1": 3, "2": 2}
    assert await _stored(database) == {**before, "runs_per_experiment": head}
    assert await _names(database) == ("tampered", "tampered")  # the others applied nothing

    assert await runner.rebuild(["runs"]) == head
    assert await _names(database) == ("first", "tampered")  # runs rebuilt, experiments kept
    assert await _counts(database) == {"1": 3, "2": 2}
    assert await _stored(database) == {**before, "runs_per_experiment": head}
    assert runner.positions == dict.fromkeys(runner.positions, head)


@pytest.mark.parametrize("names", [["runs", "nope"], "runs"], ids=["unknown", "a-string"])
async def test_rebuilding_an_unknown_projection_is_refused(
    roles: tuple[EventLog, Database], names: Sequence[str]
) -> None:
    """An unknown name (or a bare string for the list) raises InvalidInputError, a ValueError
    that names the projections there are or shows the list to give; nothing is dropped."""
    log, database = roles
    runner = ProjectionRunner(log, database, [*default_projections(), RunsPerExperiment()])
    await runner.open()
    await _append(log, _run(RUN, "1"))
    await runner.catch_up()
    with pytest.raises(InvalidInputError) as caught:
        await runner.rebuild(names)
    assert isinstance(caught.value, ValueError)
    if isinstance(names, str):
        assert "['runs']" in str(caught.value)
    else:
        message = str(caught.value)
        assert "no projection named nope" in message
        assert "experiments, runs, metrics, runs_per_experiment" in message
    assert await _counts(database) == {"1": 1}
    assert runner.position == await log.head()


async def test_projection_names_must_be_unique() -> None:
    """Two projections of one name are refused with InvalidInputError naming them."""
    with pytest.raises(InvalidInputError, match="unique"):
        ProjectionRunner(InMemoryEventLog(), SQLiteEventStore(":memory:"), [
            RunsPerExperiment(), RunsPerExperiment()
        ])  # fmt: skip
