"""log_metrics' rows (a step and timestamp a call, shared by its key set) and log_metric's
columns, mixed in any order on the same keys: every point arrives, in the order logged, through
small segments, spills and the sync facade alike. The order is read from the log (replay):
histories are sorted by step, which would hide a reordering."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import logged_points
from tracker import SyncTracker, Tracker

KEYS = ["a", "b", "c", "d"]
ONE = st.tuples(st.just("one"), st.sampled_from(KEYS))
MANY = st.tuples(
    st.just("many"), st.lists(st.sampled_from(KEYS), unique=True, min_size=2, max_size=4)
)
CALLS = st.lists(
    st.one_of(ONE, MANY, ONE, MANY, MANY, st.tuples(st.just("yield"))),  # yields are rarer
    min_size=1,
    max_size=120,
)


def _expected(calls: list[tuple[Any, ...]], seen: Counter[str]) -> dict[str, list[int]]:
    """Each key's steps in the order logged; counts the examples that mix both paths."""
    out: dict[str, list[int]] = {}
    paths: dict[str, set[str]] = {}
    for step, (kind, *args) in enumerate(calls):
        keys = [args[0]] if kind == "one" else args[0] if kind == "many" else []
        for k in keys:
            out.setdefault(k, []).append(step)
            paths.setdefault(k, set()).add(kind)
    if any(len(p) == 2 for p in paths.values()):
        seen["mixed"] += 1
    if any(kind == "many" and len(args[0]) > 1 for kind, *args in calls):
        seen["rows"] += 1
    return out


def _values(step: int, key: str) -> float:
    return step + KEYS.index(key) / 10


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=CALLS)
def test_rows_and_columns_keep_every_key_in_order(calls: list[tuple[Any, ...]]) -> None:
    _async_seen["examples"] += 1
    expected = _expected(calls, _async_seen)

    async def play() -> dict[str, list[tuple[int, float]]]:
        with tempfile.TemporaryDirectory() as d:
            # max_queue 16: segments of 4 points a key; the spill task starts at 12.
            async with Tracker(str(Path(d)), max_queue=16, max_batch_age=0.001) as tk:
                run = await tk.start_run()
                for step, (kind, *args) in enumerate(calls):
                    if kind == "one":
                        run.log_metric(args[0], _values(step, args[0]), step=step)
                    elif kind == "many":
                        run.log_metrics({k: _values(step, k) for k in args[0]}, step=step)
                    else:
                        await asyncio.sleep(0)
                await tk.flush()
                assert tk.statistics().points_written == sum(map(len, expected.values()))
                if tk.statistics().spilled_points:
                    _async_seen["spilled"] += 1
                return logged_points([rec async for rec in tk.replay(run.run_id)])

    got = asyncio.run(play())
    for k in KEYS:
        assert got.get(k, []) == [(s, _values(s, k)) for s in expected.get(k, [])], k


_async_seen: Counter[str] = Counter()


def test_rows_and_columns_property_did_real_work() -> None:
    """Run after the property test (file order): most examples logged key sets, many mixed a
    key's rows and columns, and some spilled."""
    if not _async_seen["examples"]:
        test_rows_and_columns_keep_every_key_in_order()
    assert _async_seen["rows"] >= 30, _async_seen
    assert _async_seen["mixed"] >= 20, _async_seen
    assert _async_seen["spilled"] >= 5, _async_seen


def test_sync_facade_rows_and_columns(tmp_path: Path) -> None:
    """The sync facade's locked appends take the same paths: a key set, a key of it logged
    apart, the set in another order, and back; every point in order."""
    with SyncTracker(str(tmp_path), max_queue=40) as tk:
        run = tk.start_run()
        logged: dict[str, list[int]] = {k: [] for k in KEYS}
        for step in range(3000):
            if step % 7 == 3:
                run.log_metric("a", _values(step, "a"), step=step)
                logged["a"].append(step)
            else:
                keys = KEYS if step % 2 else list(reversed(KEYS[1:]))
                run.log_metrics({k: _values(step, k) for k in keys}, step=step)
                for k in keys:
                    logged[k].append(step)
            if step % 500 == 0:
                time.sleep(0.001)
        tk.flush()
        got = logged_points(tk.replay(run.run_id))
        for k in KEYS:
            assert got[k] == [(s, _values(s, k)) for s in logged[k]], k
