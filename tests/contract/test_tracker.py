"""Tracker behaviour over the views, replay and time travel, on every real backend."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import pytest

from tests.helpers import dump_views, runner_for
from tracker import (
    AlreadyExistsError,
    DeadlineExceededError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    ParamConflictError,
    Tracker,
)
from tracker.events import MetricsLogged, ParamsLogged, RunCreated
from tracker.stores.base import SqlEventStore


@pytest.fixture
async def tk(store_factory: Callable[[], SqlEventStore]) -> AsyncIterator[Tracker]:
    async with Tracker(store=store_factory()) as t:
        yield t


async def test_default_experiment_exists_with_id_zero(tk: Tracker) -> None:
    """Experiment "0" named "Default" exists in a fresh store."""
    exp = await tk.get_experiment("0")
    assert (exp.name, exp.lifecycle_stage) == ("Default", "active")
    assert (await tk.get_experiment_by_name("Default")) == exp


async def test_run_shape_params_tags_and_latest_metrics(tk: Tracker) -> None:
    """get_run returns MLflow's shape, with the latest metric by (step, timestamp, value)."""
    run = await tk.start_run("exp-a", name="first", params={"lr": 0.1}, tags={"team": "x"})
    run.log_metric("loss", 3.0, step=1, timestamp=10)
    run.log_metric("loss", 1.0, step=5, timestamp=5)
    run.log_metric("loss", 2.0, step=5, timestamp=5)  # same step and time: larger value wins
    run.log_metric("loss", 9.0, step=4, timestamp=99)  # earlier step: not latest
    run.log_metric("nan", math.nan)
    run.log_metric("inf", math.inf)
    run.log_metric("ninf", -math.inf)
    run.set_tag("note", "")
    await run.end()
    got = await tk.get_run(run.run_id)
    assert len(got.info.run_id) == 32 and got.info.run_id == got.info.run_id.lower()
    assert got.info.run_name == "first" and got.info.status == "FINISHED"
    assert got.info.end_time is not None and got.info.lifecycle_stage == "active"
    assert got.info.artifact_uri.endswith(f"/{got.info.experiment_id}/{run.run_id}/artifacts")
    assert got.data.params == {"lr": "0.1"}
    assert got.data.tags["team"] == "x" and got.data.tags["note"] == ""
    assert got.data.tags["mlflow.runName"] == "first"
    assert got.data.metrics["loss"] == 2.0
    assert math.isnan(got.data.metrics["nan"])
    assert got.data.metrics["inf"] == math.inf and got.data.metrics["ninf"] == -math.inf
    exp = await tk.get_experiment_by_name("exp-a")
    assert exp is not None and exp.experiment_id == got.info.experiment_id != "0"


async def test_param_conflict_raises_at_call_site_and_is_never_stored(tk: Tracker) -> None:
    """A different value for a logged param raises and is not stored; the same value is fine."""
    run = await tk.start_run(params={"a": 1})
    run.log_param("a", 1)
    with pytest.raises(ParamConflictError, match=r"key='a'.*value='1'.*'2'"):
        run.log_param("a", 2)
    with pytest.raises(ParamConflictError):
        run.log_params({"b": "ok", "a": "3"})
    await tk.flush()
    assert (await tk.get_run(run.run_id)).data.params == {"a": "1"}


async def test_resumed_run_keeps_params_write_once(tk: Tracker) -> None:
    """Resuming a run by id loads its params, so a conflicting value still raises."""
    run = await tk.start_run(params={"seed": 7})
    await run.end()
    again = await tk.start_run(run_id=run.run_id)
    assert (await tk.get_run(run.run_id)).info.status == "RUNNING"
    with pytest.raises(ParamConflictError):
        again.log_param("seed", 8)
    again.log_param("seed", 7)


async def test_metric_history_is_ordered_deduplicated_and_paged(tk: Tracker) -> None:
    """History comes ordered by step, exact duplicates dropped, across pages that cover it all."""
    run = await tk.start_run()
    expected = []
    for step in reversed(range(250)):
        run.log_metric("m", step * 0.5, step=step, timestamp=1000 + step)
        expected.append((step, 1000 + step, step * 0.5))
    run.log_metric("m", 0.0, step=0, timestamp=1000)  # an exact duplicate
    await tk.flush()
    seen, token, pages = [], None, 0
    while True:
        page = await tk.get_metric_history(run.run_id, "m", max_results=64, page_token=token)
        seen += [(p.step, p.timestamp, p.value) for p in page]
        pages += 1
        token = page.next_page_token
        if token is None:
            break
    assert seen == sorted(expected)
    assert pages == 4
    assert (await tk.get_metric_history(run.run_id, "absent")).items == []


async def test_search_runs_by_status_and_lifecycle(tk: Tracker) -> None:
    """search_runs filters by experiment, status and lifecycle, newest first, paged."""
    exp = await tk.create_experiment("search-me")
    runs = [await tk.start_run(experiment_id=exp, start_time=1000 + i) for i in range(5)]
    await runs[0].end("FAILED")
    await tk.delete_run(runs[1].run_id)
    active = await tk.search_runs([exp])
    assert [r.info.run_id for r in active] == [r.run_id for r in reversed(runs) if r is not runs[1]]
    failed = await tk.search_runs([exp], status="FAILED")
    assert [r.info.run_id for r in failed] == [runs[0].run_id]
    deleted = await tk.search_runs([exp], view_type="DELETED_ONLY")
    assert [r.info.run_id for r in deleted] == [runs[1].run_id]
    first = await tk.search_runs([exp], view_type="ALL", max_results=2)
    second = await tk.search_runs(
        [exp], view_type="ALL", max_results=10, page_token=first.next_page_token
    )
    assert len(first) == 2 and len(second) == 3 and second.next_page_token is None
    await tk.restore_run(runs[1].run_id)
    assert len(await tk.search_runs([exp])) == 5


async def test_experiment_lifecycle_cascades_to_runs(tk: Tracker) -> None:
    """Deleting an experiment soft-deletes its runs; restoring brings both back; names stay unique."""
    exp = await tk.create_experiment("life", tags={"k": "v"})
    with pytest.raises(AlreadyExistsError):
        await tk.create_experiment("life")
    run = await tk.start_run(experiment_id=exp)
    await tk.delete_experiment(exp)
    assert (await tk.get_experiment(exp)).lifecycle_stage == "deleted"
    assert (await tk.get_run(run.run_id)).info.lifecycle_stage == "deleted"
    with pytest.raises(AlreadyExistsError):
        await tk.create_experiment("life")  # a deleted experiment still holds its name
    with pytest.raises(InvalidStateError):
        await tk.start_run(experiment_id=exp)
    await tk.restore_experiment(exp)
    assert (await tk.get_run(run.run_id)).info.lifecycle_stage == "active"
    await tk.rename_experiment(exp, "life-2")
    await tk.set_experiment_tag(exp, "k2", "v2")
    await tk.delete_experiment_tag(exp, "k")
    got = await tk.get_experiment(exp)
    assert got.name == "life-2" and got.tags == {"k2": "v2"}
    with pytest.raises(NotFoundError):
        await tk.delete_experiment_tag(exp, "k")
    with pytest.raises(NotFoundError):
        await tk.get_experiment("12345")


async def test_replay_and_time_travel(tk: Tracker) -> None:
    """replay yields a run's events with positions; run_state_at shows the run as it was."""
    run = await tk.start_run(name="tt", params={"p": 1})
    run.log_metric("x", 1.0, step=0)
    await tk.flush()
    mid = tk.statistics().position
    run.log_metric("x", 2.0, step=1)
    run.set_tag("phase", "late")
    await run.end()
    events = [r async for r in tk.replay(run.run_id)]
    assert isinstance(events[0].event, RunCreated)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.position for e in events] == sorted(e.position for e in events)
    past = await tk.run_state_at(run.run_id, mid)
    assert past.info.status == "RUNNING" and past.data.metrics == {"x": 1.0}
    assert "phase" not in past.data.tags
    now = await tk.run_state_at(run.run_id, events[-1].position)
    current = await tk.get_run(run.run_id)
    assert (now.info, now.data) == (current.info, current.data)
    until = [r async for r in tk.replay(run.run_id, until=mid)]
    assert all(r.position <= mid for r in until) and any(
        isinstance(r.event, MetricsLogged) for r in until
    )
    assert [r async for r in tk.replay(run.run_id, until=datetime.now() - timedelta(days=1))] == []
    with pytest.raises(NotFoundError):
        await tk.run_state_at(run.run_id, datetime.now() - timedelta(days=1))


async def test_rebuild_reproduces_the_views(tk: Tracker) -> None:
    """Dropping the views and projecting the log again gives identical views."""
    exp = await tk.create_experiment("rb")
    for i in range(3):
        run = await tk.start_run(experiment_id=exp, params={"i": i}, tags={"t": str(i)})
        for s in range(100):
            run.log_metrics({"a": s * i, "b": math.nan if s == 50 else -s}, step=s)
        run.delete_tag("t")
        await run.end("FINISHED" if i else "KILLED")
    await tk.delete_experiment(exp)
    await tk.flush()
    before = await dump_views(tk.store)
    position = await (await runner_for(tk.store)).rebuild()
    assert position == tk.statistics().position
    assert await dump_views(tk.store) == before


async def test_read_your_writes_across_trackers(store_factory: Callable[[], SqlEventStore]) -> None:
    """What one tracker flushed, another tracker on the same database reads at once."""
    async with Tracker(store=store_factory()) as a, Tracker(store=store_factory()) as b:
        run = await a.start_run("shared")
        run.log_metric("m", 1.5, step=3)
        await a.flush()
        assert (await b.get_run(run.run_id)).data.metrics == {"m": 1.5}


async def test_ended_run_refuses_more_logging(tk: Tracker) -> None:
    """Logging to a run after end() is a clear error, not a silent drop."""
    run = await tk.start_run()
    await run.end()
    with pytest.raises(InvalidStateError, match="has ended"):
        run.log_metric("m", 1.0)
    with pytest.raises(InvalidInputError):
        await tk.start_run(name="a", tags={"mlflow.runName": "b"})


async def test_wait_until_follows_another_writer(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """wait_until(position) returns once the views reflect what another tracker appended."""
    async with Tracker(store=store_factory()) as a, Tracker(store=store_factory()) as b:
        run = await a.start_run("follow")
        run.log_metric("m", 7.0)
        position = await a.flush()
        await b.wait_until(position)
        assert b.runner.position >= position
        async with b.store.snapshot() as s:
            got = await b.queries.get_run(s, run.run_id)
        assert got is not None and got.data.metrics == {"m": 7.0}
        with pytest.raises(DeadlineExceededError):
            await b.wait_until(position + 1000, timeout=0.2)


async def test_search_experiments_pages_and_filters_by_lifecycle(tk: Tracker) -> None:
    """search_experiments lists newest first, pages, and honours view_type."""
    ids = [await tk.create_experiment(f"e{i}") for i in range(5)]
    await tk.delete_experiment(ids[0])
    active = await tk.search_experiments()
    assert {e.experiment_id for e in active} == {*ids[1:], "0"}
    first = await tk.search_experiments(view_type="ALL", max_results=4)
    rest = await tk.search_experiments(
        view_type="ALL", max_results=4, page_token=first.next_page_token
    )
    assert len(first) == 4 and len(rest) == 2 and rest.next_page_token is None
    assert [e.experiment_id for e in await tk.search_experiments(view_type="DELETED_ONLY")] == [
        ids[0]
    ]
    with pytest.raises(InvalidInputError):
        await tk.search_experiments(view_type="SOME")


async def test_history_pages_survive_duplicates_and_infinities(tk: Tracker) -> None:
    """Duplicates across flushes never shorten a page, and ±Inf/NaN at a page edge page on."""
    run = await tk.start_run()
    run.log_metric("m", 1.0, step=0, timestamp=1)
    await tk.flush()
    run.log_metric("m", 1.0, step=0, timestamp=1)  # the same point again, in another chunk
    await tk.flush()
    run.log_metric("m", math.inf, step=1, timestamp=1)
    run.log_metric("m", math.nan, step=2, timestamp=1)
    run.log_metric("m", -math.inf, step=3, timestamp=1)
    await tk.flush()
    run.log_metric("m", 5.0, step=5, timestamp=1)
    await tk.flush()
    seen, token = [], None
    while True:
        page = await tk.get_metric_history(run.run_id, "m", max_results=1, page_token=token)
        seen += [(p.step, p.value) for p in page]
        token = page.next_page_token
        if token is None:
            break
    assert [s for s, _ in seen] == [0, 1, 2, 3, 5]
    assert seen[1][1] == math.inf and math.isnan(seen[2][1]) and seen[3][1] == -math.inf
    with pytest.raises(InvalidInputError):
        await tk.get_metric_history(run.run_id, "m", page_token="not-a-token")


async def test_params_are_write_once_across_handles_on_one_run(tk: Tracker) -> None:
    """Two handles on the same run: the store decides, so the second value is refused (at the
    flush that writes it) and never stored."""
    first = await tk.start_run()
    second = await tk.start_run(run_id=first.run_id)
    first.log_param("lr", "0.1")
    second.log_param("lr", "0.2")
    with pytest.raises(ParamConflictError, match=r"Attempted logging new value '0\.2'"):
        await tk.flush()
    assert (await tk.get_run(first.run_id)).data.params == {"lr": "0.1"}
    logged = [r.event async for r in tk.replay(first.run_id) if isinstance(r.event, ParamsLogged)]
    assert [e.params for e in logged] == [{"lr": "0.1"}]


async def test_time_travel_sees_experiment_deletion(tk: Tracker) -> None:
    """run_state_at folds in the experiment's delete and restore, as the views do."""
    exp = await tk.create_experiment("tt-exp")
    run = await tk.start_run(experiment_id=exp)
    await tk.delete_experiment(exp)
    deleted_at = await tk.flush()
    await tk.restore_experiment(exp)
    restored_at = await tk.flush()
    assert (await tk.run_state_at(run.run_id, deleted_at)).info.lifecycle_stage == "deleted"
    assert (await tk.run_state_at(run.run_id, restored_at)).info.lifecycle_stage == "active"
