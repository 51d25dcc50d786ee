"""The run API's less travelled calls, on every backend: inputs, batches, updates, parents,
YAML artifacts, and the rules each of them keeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import yaml  # type: ignore[import-untyped]

from tracker import (
    DatasetInput,
    InvalidInputError,
    NotFoundError,
    ParamConflictError,
    RunNotActiveError,
    Tracker,
)
from tracker.entities import Metric
from tracker.errors import DeadlineExceededError, TrackerError
from tracker.stores.base import SqlEventStore


@pytest.fixture
async def tk(store_factory: Callable[[], SqlEventStore]) -> AsyncIterator[Tracker]:
    async with Tracker(store=store_factory(), max_batch_age=0.001) as tracker:
        yield tracker


async def test_log_inputs_round_trip(tk: Tracker) -> None:
    """Datasets logged by handle and by run id read back with every field, sorted by name;
    logging the same dataset again replaces it rather than adding one."""
    run = await tk.start_run("inputs")
    train = DatasetInput(
        "train",
        "d1",
        "local",
        "/data/train",
        schema='{"a": 1}',
        tags={"mlflow.data.context": "training"},
    )
    run.log_inputs([train])
    await tk.log_inputs(run.run_id, [DatasetInput("eval", "d2", "s3", "s3://b/eval", profile="p")])
    run.log_inputs([train])
    await tk.flush()
    inputs = (await tk.get_run(run.run_id)).inputs
    assert [(d.name, d.digest, d.source_type, d.source) for d in inputs] == [
        ("eval", "d2", "s3", "s3://b/eval"), ("train", "d1", "local", "/data/train"),
    ]  # fmt: skip
    assert inputs[1].schema == '{"a": 1}' and inputs[1].tags == {"mlflow.data.context": "training"}
    assert inputs[0].profile == "p" and inputs[0].schema is None


async def test_log_batch_is_all_or_nothing(tk: Tracker) -> None:
    """log_batch stores metrics, params and tags together; one conflicting param refuses the
    whole batch, metrics and tags included; MLflow's limits are checked before anything."""
    run = await tk.start_run("batch")
    await tk.log_batch(
        run.run_id, [Metric("m", 1.0, 5, 0), Metric("m", 2.0, 6, 1)], {"lr": "0.1"}, {"t": "x"}
    )
    with pytest.raises(ParamConflictError):
        await tk.log_batch(run.run_id, [Metric("m", 9.0, 7, 2)], {"lr": "0.2"}, {"t": "y"})
    got = await tk.get_run(run.run_id)
    assert got.data.params == {"lr": "0.1"} and got.data.tags["t"] == "x"
    assert (await tk.get_metric_series(run.run_id, "m")).values.tolist() == [1.0, 2.0]
    with pytest.raises(InvalidInputError, match="limit is 100"):
        await tk.log_batch(run.run_id, params={f"p{i}": i for i in range(101)})
    run.log_batch([("h", 3.0, 0, 10)], params={"bs": 32}, tags={"u": "v"})
    await tk.flush()
    got = await tk.get_run(run.run_id)
    assert got.data.metrics["h"] == 3.0 and got.data.params["bs"] == "32"


async def test_update_run_sets_status_end_time_and_name(tk: Tracker) -> None:
    """update_run changes what it is given (the name follows into mlflow.runName); a deleted
    run refuses it with MLflow's message."""
    run = await tk.start_run("update", name="before")
    await tk.update_run(run.run_id, status="KILLED", end_time=1234, run_name="after")
    got = await tk.get_run(run.run_id)
    assert (got.info.status, got.info.end_time, got.info.run_name) == ("KILLED", 1234, "after")
    assert got.data.tags["mlflow.runName"] == "after"
    await tk.update_run(run.run_id, status="FINISHED")
    assert (await tk.get_run(run.run_id)).info.end_time == 1234  # kept when not given
    await tk.delete_run(run.run_id)
    with pytest.raises(RunNotActiveError, match="must be in the 'active' state"):
        await tk.update_run(run.run_id, status="RUNNING")
    await tk.restore_run(run.run_id)
    await tk.update_run(run.run_id, run_name="restored")
    assert (await tk.get_run(run.run_id)).info.run_name == "restored"


async def test_child_runs_name_their_parent(tk: Tracker) -> None:
    """A run started with parent_run_id carries MLflow's mlflow.parentRunId tag; a parent that
    does not exist is refused before anything is stored."""
    parent = await tk.start_run("nested")
    child = await tk.start_run("nested", parent_run_id=parent.run_id)
    assert (await tk.get_run(child.run_id)).data.tags["mlflow.parentRunId"] == parent.run_id
    position = await tk.flush()
    with pytest.raises(NotFoundError, match="not found"):
        await tk.start_run("nested", parent_run_id="f" * 32)
    assert await tk.flush() == position


async def test_log_dict_writes_yaml_and_json(
    tk: Tracker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """log_dict picks YAML or JSON by extension; both read back as the same dict."""
    run = await tk.start_run("dicts")
    config = {"lr": 3e-4, "layers": [64, 32], "name": "naïve"}
    await run.log_dict(config, "config.yaml")
    await run.log_dict(config, "config.json")
    out = tmp_path_factory.mktemp("out")
    got = await tk.download_artifacts(run.run_id, "config.yaml", out)
    assert yaml.safe_load(got.read_text()) == config
    got = await tk.download_artifacts(run.run_id, "config.json", out)
    assert yaml.safe_load(got.read_text()) == config  # JSON is YAML too
    with pytest.raises(InvalidInputError, match=r"\.json, \.yaml or \.yml"):
        await run.log_dict(config, "config.toml")


async def test_deleting_a_tag_the_run_lacks_is_not_found(tk: Tracker) -> None:
    """As in MLflow: deleting a missing tag is NotFoundError, by run id at once, and by handle
    at the next flush; an existing tag is deleted."""
    run = await tk.start_run("tags")
    run.set_tag("a", "1")
    await tk.delete_tag(run.run_id, "a")
    with pytest.raises(NotFoundError, match="No tag with name: a"):
        await tk.delete_tag(run.run_id, "a")
    run.delete_tag("b")
    with pytest.raises(NotFoundError, match="No tag with name: b"):
        await tk.flush()
    assert "a" not in (await tk.get_run(run.run_id)).data.tags


async def test_wait_until_sees_a_later_append_and_keeps_its_deadline(
    store_factory: Callable[[], SqlEventStore], tk: Tracker
) -> None:
    """wait_until polls until another tracker's append reaches the views; a position that
    never comes raises DeadlineExceededError (a TrackerError and a builtin TimeoutError) close
    to its deadline, saying where the views are."""
    async with Tracker(store=store_factory()) as other:
        run = await tk.start_run("follow")
        target = await tk.flush() + 1
        waiting = asyncio.create_task(other.wait_until(target, timeout=30))
        await asyncio.sleep(0.05)  # the waiter is polling before the append
        assert not waiting.done()
        run.log_metric("m", 1.0)
        assert await tk.flush() >= target
        await asyncio.wait_for(waiting, 30)
        assert other.runner.position >= target

        start = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=f"not yet at {target + 1000}") as caught:
            await other.wait_until(target + 1000, timeout=0.3)
        assert 0.3 <= time.monotonic() - start < 5
        assert isinstance(caught.value, TrackerError) and isinstance(caught.value, TimeoutError)
