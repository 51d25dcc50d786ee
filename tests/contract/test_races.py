"""Write rules hold across processes: several real processes racing on one store, every backend."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable

from tests.contract.workers import race_worker
from tracker import Tracker
from tracker.events import ExperimentCreated, ParamsLogged
from tracker.stores.base import SqlEventStore

CONTENDERS = 4


async def _race(factory: Callable[[], SqlEventStore], kind: str, arg: str) -> list[tuple[str, str]]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(CONTENDERS)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=race_worker, args=(factory, kind, arg, f"v{i}", start, out))
        for i in range(CONTENDERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        await asyncio.to_thread(p.join, 120)
    assert [p.exitcode for p in procs] == [0] * CONTENDERS
    return sorted(out.get(timeout=5) for _ in range(CONTENDERS))


async def test_different_values_of_a_param_from_several_processes(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """Four processes log four values of one param of one run at once: one is stored, the
    others get ParamConflictError, and the log holds no conflicting event."""
    async with Tracker(store=store_factory()) as tk:
        run = await tk.create_run(run_name="contended")
        run_id = run.info.run_id
    results = await _race(store_factory, "param", run_id)
    won = [r for r in results if r[0] == "ok"]
    assert len(won) == 1, results
    assert [r for r in results if r[0] == "refused"] == [("refused", "ParamConflictError")] * 3
    async with Tracker(store=store_factory()) as tk:
        assert (await tk.get_run(run_id)).data.params == {"lr": won[0][1]}
        logged = [r.event async for r in tk.replay(run_id) if isinstance(r.event, ParamsLogged)]
        assert [e.params for e in logged] == [{"lr": won[0][1]}]


async def test_the_same_experiment_name_from_several_processes(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """Four processes create an experiment of one name at once: exactly one gets an id, the
    others AlreadyExistsError, and the log holds one experiment of that name."""
    results = await _race(store_factory, "experiment", "contended")
    assert len([r for r in results if r[0] == "ok"]) == 1, results
    assert [r for r in results if r[0] == "refused"] == [("refused", "AlreadyExistsError")] * 3
    store = store_factory()
    await store.open()
    try:
        created = [r.event for r in await store.read(limit=10_000)]
        named = [e for e in created if isinstance(e, ExperimentCreated) and e.name == "contended"]
        assert len(named) == 1
    finally:
        await store.aclose()
