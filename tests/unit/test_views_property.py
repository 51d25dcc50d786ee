"""For any sequence of commands, views built incrementally equal views rebuilt from the log."""

from __future__ import annotations

import asyncio
import math
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import dump_views
from tracker import Tracker, TrackerError
from tracker.projections.views import Projector

KEYS = st.sampled_from(["a", "b", "c/d"])
VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))
COMMANDS = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.integers(0, 2)),
        st.tuples(
            st.just("metric"),
            st.integers(0, 9),
            KEYS,
            VALUES,
            st.integers(-3, 3),
            st.integers(0, 3),
        ),
        st.tuples(st.just("param"), st.integers(0, 9), KEYS, st.integers(0, 2)),
        st.tuples(st.just("tag"), st.integers(0, 9), KEYS, st.text(max_size=3)),
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
        st.tuples(
            st.just("flush"),
        ),
    ),
    max_size=40,
)


async def _play(commands: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as d:
        async with Tracker(d, max_batch_age=0.001) as tk:
            exps = [await tk.create_experiment(f"e{i}") for i in range(3)]
            runs = []
            for cmd in commands:
                kind, *args = cmd
                pick = (
                    runs[args[0] % len(runs)]
                    if runs and kind not in ("start", "experiment", "flush")
                    else None
                )
                try:
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
                    elif pick is None:
                        continue
                    elif kind == "metric":
                        _, key, value, step, ts = args
                        pick.log_metric(key, value, step=step, timestamp=ts)
                    elif kind == "param":
                        pick.log_param(args[1], args[2])
                    elif kind == "tag":
                        pick.set_tag(args[1], args[2])
                    elif kind == "untag":
                        pick.delete_tag(args[1])
                    elif kind == "end":
                        await pick.end(args[1])
                    elif kind == "delete_run":
                        await tk.delete_run(pick.run_id)
                    elif kind == "restore_run":
                        await tk.restore_run(pick.run_id)
                except TrackerError:
                    pass  # refused commands (conflicting params, ended runs, ...) change nothing
            await tk.flush()
            incremental = await dump_views(tk.store)
            await Projector(tk.store).rebuild()
            assert await dump_views(tk.store) == incremental
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


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(COMMANDS)
def test_incremental_views_equal_rebuilt_views(commands: list[tuple]) -> None:
    """Views after any command sequence, flushed at arbitrary points, equal a full rebuild."""
    asyncio.run(_play(commands))
