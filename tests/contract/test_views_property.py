"""For any sequence of commands, on every backend, views built incrementally equal views rebuilt
from the log, and both equal the in-memory fold of each run."""

from __future__ import annotations

import asyncio
import math
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backends import BACKENDS
from tests.helpers import dump_views, runner_for
from tracker import Tracker, TrackerError

KEYS = st.sampled_from(["a", "b", "c/d"])
VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=3
)
COMMANDS = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.integers(0, 2)),
        st.tuples(
            st.just("metric"), st.integers(0, 9), KEYS, VALUES, st.integers(-3, 3),
            st.integers(0, 3),
        ),
        st.tuples(st.just("param"), st.integers(0, 9), KEYS, st.integers(0, 2)),
        st.tuples(st.just("tag"), st.integers(0, 9), KEYS, TEXT),
        st.tuples(st.just("untag"), st.integers(0, 9), KEYS),
        st.tuples(
            st.just("end"), st.integers(0, 9), st.sampled_from(["FINISHED", "FAILED", "KILLED"])
        ),
        st.tuples(st.just("delete_run"), st.integers(0, 9)),
        st.tuples(st.just("restore_run"), st.integers(0, 9)),
        st.tuples(
            st.just("experiment"),
            st.sampled_from(["delete", "restore", "rename", "tag"]),
            st.integers(0, 2),
        ),
        st.tuples(st.just("flush")),
    ),
    min_size=5,
    max_size=40,
)  # fmt: skip


async def _play(backend: str, commands: list[tuple], seen: Counter[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        async with BACKENDS[backend](Path(d)) as factory:
            store = factory()
            async with Tracker(store=store, max_batch_age=0.001) as tk:
                exps = [await tk.create_experiment(f"e{i}") for i in range(3)]
                runs = []
                # Every example starts a run first, so each one has a run to compare at the end
                # (hypothesis may draw a list without "start"; the floor below relies on this).
                for cmd in [("start", 0), *commands]:
                    kind, *args = cmd
                    pick = (
                        runs[args[0] % len(runs)]
                        if runs and kind not in ("start", "experiment", "flush")
                        else None
                    )
                    if pick is None and kind not in ("start", "experiment", "flush"):
                        continue
                    try:
                        await _apply(tk, exps, runs, pick, kind, args)
                        # Writes queued without waiting are decided by the writer: flush to
                        # learn whether this one was refused.
                        await tk.flush()
                        seen["accepted"] += 1
                    except TrackerError:
                        seen["refused"] += 1  # refused commands change nothing
                await tk.flush()
                incremental = await dump_views(store)
                await (await runner_for(store)).rebuild()
                assert await dump_views(store) == incremental
                for run in runs:  # and the in-memory fold agrees with the views
                    view = await tk.get_run(run.run_id)
                    folded = await tk.run_state_at(run.run_id, tk.statistics().position)
                    assert folded.data.params == view.data.params
                    assert folded.data.tags == view.data.tags
                    assert folded.info == view.info
                    assert set(folded.data.metrics) == set(view.data.metrics)
                    for k, v in view.data.metrics.items():
                        assert (
                            math.isnan(v) and math.isnan(folded.data.metrics[k])
                        ) or v == folded.data.metrics[k]
                    seen["runs compared"] += 1


async def _apply(
    tk: Tracker, exps: list[str], runs: list, pick: object, kind: str, args: list
) -> None:
    if kind == "start":
        runs.append(await tk.start_run(experiment_id=exps[args[0]]))
    elif kind == "flush":
        await tk.flush()
    elif kind == "experiment":
        op, i = args
        if op == "delete":
            await tk.delete_experiment(exps[i])
        elif op == "restore":
            await tk.restore_experiment(exps[i])
        elif op == "rename":
            await tk.rename_experiment(exps[i], f"renamed-{i}")
        else:
            await tk.set_experiment_tag(exps[i], "k", str(i))
    elif kind == "metric":
        _, key, value, step, ts = args
        pick.log_metric(key, value, step=step, timestamp=ts)  # type: ignore[attr-defined]
    elif kind == "param":
        pick.log_param(args[1], args[2])  # type: ignore[attr-defined]
    elif kind == "tag":
        pick.set_tag(args[1], args[2])  # type: ignore[attr-defined]
    elif kind == "untag":
        pick.delete_tag(args[1])  # type: ignore[attr-defined]
    elif kind == "end":
        await pick.end(args[1])  # type: ignore[attr-defined]
    elif kind == "delete_run":
        await tk.delete_run(pick.run_id)  # type: ignore[attr-defined]
    elif kind == "restore_run":
        await tk.restore_run(pick.run_id)  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_incremental_views_equal_rebuilt_views(backend: str) -> None:
    """Views after any command sequence, flushed after each command, equal a full rebuild and
    the in-memory fold, on every backend (column types are enforced on PostgreSQL and
    MariaDB). Most commands must have done real work: a test where everything is refused
    proves nothing."""
    seen: Counter[str] = Counter()
    examples = 15 if backend == "sqlite" else 5

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(COMMANDS)
    def play(commands: list[tuple]) -> None:
        asyncio.run(_play(backend, commands, seen))

    play()
    assert seen["accepted"] >= 3 * examples, seen
    assert seen["accepted"] > seen["refused"], seen
    assert seen["runs compared"] >= examples, seen
