"""Values are bound, never pasted into SQL nor rewritten: text holding `?` and other
placeholder look-alikes round-trips on every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from tracker import Tracker
from tracker.stores.base import SqlEventStore

# `?` is SQLite's placeholder and PostgreSQL's JSON operator (also `?|`, `?&`); the others are
# the placeholders of the other drivers.
ODD: Final = ("a?b ? c", "?", "??", "'?'", "x ?| y ?& z", "%s", "%(v)s", ":v0", "$1", "{}")


async def test_values_holding_question_marks_round_trip(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """Experiment names and tag values, run names, param and tag values holding `?` and
    placeholder look-alikes are stored and read back unchanged, and looked up by name (keys
    cannot hold `?`: MLflow's key rule refuses it)."""
    async with Tracker(store=store_factory(), max_batch_age=0.001) as tk:
        exp = await tk.create_experiment("exp a?b ? c", tags={"q": "a?b ? c"})
        values = {f"k{i}": v for i, v in enumerate(ODD)}
        run = await tk.start_run(experiment_id=exp, name="run ? %s", params=values, tags=values)
        run.log_param("later", "a?b ? c")
        run.set_tag("later", "?? $1")
        await run.end()

        got = await tk.get_run(run.run_id)
        assert got.info.run_name == "run ? %s"
        assert got.data.params == {**values, "later": "a?b ? c"}
        assert {k: got.data.tags[k] for k in [*values, "later"]} == {
            **values, "later": "?? $1"
        }  # fmt: skip
        found = await tk.get_experiment_by_name("exp a?b ? c")
        assert found is not None and found.experiment_id == exp
        assert found.tags == {"q": "a?b ? c"}
