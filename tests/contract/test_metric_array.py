"""run.log_metric_array: points from arrays a loop already holds, on every backend; validated
and queued whole, in order with the run's other points."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tracker import InvalidInputError, QueueFullError, SyncTracker, Tracker
from tracker.client.handle import ARRAY_PIECE
from tracker.stores.base import SqlEventStore


@pytest.fixture
async def tk(store_factory: Callable[[], SqlEventStore]) -> Any:
    async with Tracker(store=store_factory(), max_batch_age=0.001) as tracker:
        yield tracker


async def test_arrays_are_stored_as_given_in_order_with_other_points(tk: Tracker) -> None:
    """More points than one piece, with NaN and ±Inf, between two log_metric calls: the series
    reads back exactly, in logged order."""
    run = await tk.start_run()
    n = 2 * ARRAY_PIECE + 123
    rng = np.random.default_rng(7)
    values = rng.standard_normal(n)
    values[[5, 77, n - 1]] = [np.nan, np.inf, -np.inf]
    steps = np.arange(1, n + 1, dtype=np.int64) * 3
    stamps = np.arange(n, dtype=np.int64) + 1_700_000_000_000
    run.log_metric("loss", 0.5, step=0, timestamp=1)
    assert run.log_metric_array("loss", values, steps=steps, timestamps=stamps) == n
    run.log_metric("loss", 0.25, step=steps[-1] + 1, timestamp=2)
    await tk.flush()
    got = await tk.get_metric_series(run.run_id, "loss")
    assert got.steps.tolist() == [0, *steps.tolist(), int(steps[-1]) + 1]
    assert got.timestamps.tolist() == [1, *stamps.tolist(), 2]
    np.testing.assert_array_equal(got.values, np.concatenate([[0.5], values, [0.25]]))


async def test_default_steps_count_from_zero_and_plain_lists_work(tk: Tracker) -> None:
    run = await tk.start_run()
    assert run.log_metric_array("acc", [0.1, 0.2, True, np.float32(0.5)]) == 4
    await tk.flush()
    got = await tk.get_metric_series(run.run_id, "acc")
    assert got.steps.tolist() == [0, 1, 2, 3]
    assert got.values.tolist() == [0.1, 0.2, 1.0, 0.5]
    assert len(set(got.timestamps.tolist())) == 1 and got.timestamps[0] > 0


BAD: dict[str, dict[str, Any]] = {
    "2-D values": {"values": np.ones((2, 2))},
    "text values": {"values": np.array(["a", "b"])},
    "objects": {"values": [1.0, "x"]},
    "lengths differ": {"values": np.ones(3), "steps": np.arange(2)},
    "float steps": {"values": np.ones(2), "steps": np.array([0.5, 1.5])},
    "negative timestamps": {"values": np.ones(2), "timestamps": np.array([1, -1])},
    "steps past int64": {"values": np.ones(1), "steps": np.array([1 << 63], dtype=np.uint64)},
    "bad key": {"key": "a\x00b", "values": np.ones(2)},
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_columns_refuse_the_whole_call(tk: Tracker, case: str) -> None:
    run = await tk.start_run()
    args = {"key": "m", **BAD[case]}
    with pytest.raises(InvalidInputError):
        run.log_metric_array(**args)
    run.log_metric("m", 9.0, step=9)
    await tk.flush()
    got = await tk.get_metric_series(run.run_id, "m")
    assert got.steps.tolist() == [9] and got.values.tolist() == [9.0]


async def test_a_full_queue_under_raise_refuses_the_whole_call(tmp_path: Path) -> None:
    async with Tracker(str(tmp_path), max_queue=2, on_full="raise") as tk:
        run = await tk.start_run()
        with pytest.raises(QueueFullError):
            run.log_metric_array("m", np.ones(3 * ARRAY_PIECE))
        await tk.flush()
        assert len((await tk.get_metric_series(run.run_id, "m")).values) == 0
        run.log_metric_array("m", np.ones(10))
        await tk.flush()
        assert len((await tk.get_metric_series(run.run_id, "m")).values) == 10


def test_the_sync_facade_has_it(tmp_path: Path) -> None:
    with SyncTracker(str(tmp_path)) as tk, tk.start_run("sync") as run:
        run.log_metric_array("m", np.linspace(0, 1, 1000))
        tk.flush()
        assert (
            tk.get_metric_series(run.run_id, "m").values.tolist()
            == np.linspace(0, 1, 1000).tolist()
        )
