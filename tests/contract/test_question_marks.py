"""Values are bound, never pasted into SQL nor rewritten: text holding `?` and other
placeholder look-alikes round-trips on every backend, as does the NULL ordering helper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import sqlalchemy as sa

from tracker import Tracker
from tracker.stores.base import SqlEventStore
from tracker.stores.sql import insert, nulls_last

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


_PROBE: Final = sa.Table(
    "nulls_probe",
    sa.MetaData(),
    sa.Column("k", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("v", sa.Float, nullable=True),
)
_DESC: Final = sa.select(_PROBE.c.k).order_by(nulls_last(_PROBE.c.v, descending=True), _PROBE.c.k)
_ASC: Final = sa.select(_PROBE.c.k).order_by(nulls_last(_PROBE.c.v), _PROBE.c.k)


async def test_nulls_last_orders_nulls_last_on_every_backend(store: SqlEventStore) -> None:
    """nulls_last() puts rows whose column is NULL after every value, in both directions,
    whichever form the backend's SQL needs."""
    async with store.transaction() as s:
        await store.create_tables(s, [_PROBE])
        await s.executemany(
            insert(_PROBE),
            [{"k": 1, "v": 5.0}, {"k": 2, "v": None}, {"k": 3, "v": 7.0}, {"k": 4, "v": None}],
        )
    async with store.snapshot() as s:
        assert [r[0] for r in await s.fetchall(_DESC)] == [3, 1, 2, 4]
        assert [r[0] for r in await s.fetchall(_ASC)] == [1, 3, 2, 4]
