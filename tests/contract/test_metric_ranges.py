"""Steps and timestamps are 64-bit: the extremes are stored on every backend, and one past them
is refused at the call with InvalidInputError, queuing nothing, so later points keep their steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tracker import InvalidInputError, Tracker
from tracker.client.handle import Run
from tracker.stores.base import SqlEventStore
from tracker.validation import INT64_MAX, INT64_MIN


@pytest.fixture
async def tk(store_factory: Callable[[], SqlEventStore]) -> Any:
    async with Tracker(store=store_factory(), max_batch_age=0.001) as tracker:
        yield tracker


async def _points(tk: Tracker, run_id: str, key: str) -> list[tuple[int, int, float]]:
    page = await tk.get_metric_history(run_id, key, max_results=100)
    return [(m.step, m.timestamp, m.value) for m in page]


OUT_OF_RANGE: dict[str, Callable[[Run], None]] = {
    "log_metrics step 2**63": lambda r: r.log_metrics({"a": 1.0, "b": 2.0}, step=1 << 63),
    "log_metrics step below int64": lambda r: r.log_metrics({"a": 1.0}, step=INT64_MIN - 1),
    "log_metrics timestamp 2**63": lambda r: r.log_metrics(
        {"a": 1.0, "b": 2.0}, step=3, timestamp=1 << 63
    ),
    "log_metric step 2**63": lambda r: r.log_metric("a", 1.0, step=1 << 63),
    "log_metric timestamp 2**63": lambda r: r.log_metric("a", 1.0, step=3, timestamp=1 << 63),
}


@pytest.mark.parametrize("call", sorted(OUT_OF_RANGE))
async def test_a_step_or_timestamp_past_int64_is_refused_and_queues_nothing(
    tk: Tracker, call: str
) -> None:
    """The refused call raises InvalidInputError naming the 64-bit range and leaves no partial
    point behind: the next points of the run are stored with their own step and timestamp."""
    run = await tk.start_run("ranges")
    run.log_metrics({"a": 0.5, "b": 0.25}, step=1, timestamp=1000)
    with pytest.raises(InvalidInputError, match="64-bit integer range"):
        OUT_OF_RANGE[call](run)
    run.log_metric("a", 5.0, step=7, timestamp=2000)
    run.log_metrics({"a": 6.0, "b": 7.0}, step=8, timestamp=3000)
    await tk.flush()
    assert await _points(tk, run.run_id, "a") == [(1, 1000, 0.5), (7, 2000, 5.0), (8, 3000, 6.0)]
    assert await _points(tk, run.run_id, "b") == [(1, 1000, 0.25), (8, 3000, 7.0)]
    await run.end()


async def test_the_extremes_of_int64_are_stored_on_every_backend(tk: Tracker) -> None:
    """The smallest and largest step and the largest timestamp are accepted by log_metric and
    log_metrics and read back unchanged."""
    run = await tk.start_run("ranges")
    run.log_metric("a", 1.0, step=INT64_MIN, timestamp=0)
    run.log_metrics({"a": 2.0}, step=INT64_MAX, timestamp=INT64_MAX)
    await tk.flush()
    assert await _points(tk, run.run_id, "a") == [(INT64_MIN, 0, 1.0), (INT64_MAX, INT64_MAX, 2.0)]
    await run.end()
