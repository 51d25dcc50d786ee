"""Code the multi-process contract tests run in spawned processes (importable, picklable)."""

from __future__ import annotations

import asyncio
import random
from array import array
from collections.abc import Callable
from typing import Any

from tests.helpers import runner_for
from tracker.events import MetricSeries, MetricsLogged, NewEvent, ParamsLogged, RunCreated, TagsSet
from tracker.stores.base import SqlEventStore

Factory = Callable[[], SqlEventStore]
RUNS_PER_WRITER = 5


def event_id(writer: int, n: int) -> bytes:
    """Deterministic ids, so the test knows every id a writer appended."""
    return writer.to_bytes(4, "big") + n.to_bytes(12, "big")


def run_id(writer: int, r: int) -> str:
    return f"{writer:02x}{r:030x}"


def writer_events(writer: int, count: int, seed: int) -> list[NewEvent]:
    """`count` events over a few runs of this writer, each run's stream numbered from 1: runs
    opened, then bursts of one kind of event on one run, as a training loop produces them."""
    rng = random.Random(seed)
    heads = [0] * RUNS_PER_WRITER
    out: list[NewEvent] = []

    def add(r: int, event: Any) -> None:
        heads[r] += 1
        n = len(out)
        out.append(NewEvent(event_id(writer, n), event.stream_id, heads[r], 1000 + n, event))

    for r in range(min(RUNS_PER_WRITER, count)):
        add(
            r,
            RunCreated(run_id(writer, r), "0", f"w{writer}r{r}", 1000, "u", "file:///a", {}, None),
        )
    while len(out) < count:
        r = rng.randrange(RUNS_PER_WRITER)
        rid = run_id(writer, r)
        kind = rng.random()
        for _ in range(min(rng.randint(1, 60), count - len(out))):
            n = len(out)
            if kind < 0.7:
                k = rng.randint(1, 4)
                step0 = heads[r] * 10
                series = MetricSeries(
                    f"m{rng.randrange(3)}",
                    array("q", range(step0, step0 + k)),
                    array("q", [n] * k),
                    array("d", [rng.random() for _ in range(k)]),
                )
                add(r, MetricsLogged(rid, (series,)))
            elif kind < 0.85:
                add(r, ParamsLogged(rid, {f"p{heads[r]}": str(n)}))
            else:
                add(r, TagsSet(rid, {f"t{rng.randrange(5)}": str(n)}))
    return out


def append_worker(factory: Factory, writer: int, count: int, start: Any) -> None:
    """Append this writer's events in batches of random size, re-sending some batches whole
    (as a retry would) and projecting now and then, as a Tracker process does."""
    asyncio.run(_append(factory, writer, count, start))


async def _append(factory: Factory, writer: int, count: int, start: Any) -> None:
    events = writer_events(writer, count, seed=writer)
    rng = random.Random(1000 + writer)
    store = factory()
    try:
        await store.open()
    except BaseException:
        start.abort()  # release the others and the test instead of leaving them waiting
        raise
    projector = await runner_for(store)
    start.wait()
    try:
        i = 0
        previous: list[NewEvent] = []
        appends = 0
        while i < len(events):
            batch = events[i : i + rng.randint(1, 250)]
            i += len(batch)
            resend = previous if rng.random() < 0.1 else []
            stored = await store.append(resend + batch)
            assert [r.event_id for r in stored] == [e.event_id for e in batch]
            previous = batch
            appends += 1
            if appends % 5 == 0:
                await projector.catch_up()
        await projector.catch_up()
    finally:
        await store.aclose()


def open_worker(factory: Factory, start: Any) -> int:
    """Open a store on a fresh database as soon as every worker is ready; the schema version."""
    return asyncio.run(_open(factory, start))


async def _open(factory: Factory, start: Any) -> int:
    store = factory()
    start.wait()
    await store.open()
    try:
        return await store.schema_version()
    finally:
        await store.aclose()


def race_worker(factory: Factory, kind: str, arg: str, value: str, start: Any, out: Any) -> None:
    """One contender of a race between processes: wait at the barrier, then make one write
    through the command layer and report what happened."""
    from tracker import AlreadyExistsError, ParamConflictError, Tracker

    async def go() -> None:
        async with Tracker(store=factory(), max_batch_age=0.001) as tk:
            start.wait()  # every contender is open and ready: now, together
            try:
                if kind == "param":
                    await tk.log_param(arg, "lr", value)
                    out.put(("ok", value))
                else:
                    out.put(("ok", await tk.create_experiment(arg)))
            except (ParamConflictError, AlreadyExistsError) as exc:
                out.put(("refused", type(exc).__name__))

    asyncio.run(go())
