"""The experiments projection: experiments and their tags, as MLflow shows them."""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

from tracker.events import (
    ACTIVE,
    DELETED,
    EVENT_TYPES,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    RecordedEvent,
)
from tracker.projections.base import Context, Projection, handles
from tracker.stores.schema import experiment_tags, experiments

X: Final = experiments
XT: Final = experiment_tags
_RENAME: Final = (
    sa.update(X)
    .where(X.c.experiment_id == sa.bindparam("eid"))
    .values(name=sa.bindparam("new_name"), last_update_time=sa.bindparam("t"))
)
_STAGE: Final = (
    sa.update(X)
    .where(X.c.experiment_id == sa.bindparam("eid"))
    .values(lifecycle_stage=sa.bindparam("stage"), last_update_time=sa.bindparam("t"))
)
_TOUCH: Final = (
    sa.update(X)
    .where(X.c.experiment_id == sa.bindparam("eid"))
    .values(last_update_time=sa.bindparam("t"))
)
_DELETE_TAG: Final = sa.delete(XT).where(
    XT.c.experiment_id == sa.bindparam("eid"), XT.c.tag_key == sa.bindparam("key")
)
_MINE: Final = (
    ExperimentCreated, ExperimentRenamed, ExperimentDeleted, ExperimentRestored, ExperimentTagSet,
    ExperimentTagDeleted,
)  # fmt: skip


class ExperimentsProjection(Projection):
    name = "experiments"
    version = 1
    tables = (experiments, experiment_tags)
    ignores = frozenset(t for t in EVENT_TYPES.values() if t not in _MINE)

    @handles(ExperimentCreated)
    def _created(self, ctx: Context, rec: RecordedEvent, e: ExperimentCreated) -> None:
        ctx.write(
            ctx.upsert(X),
            {"experiment_id": e.experiment_id, "name": e.name,
             "artifact_location": e.artifact_location, "lifecycle_stage": ACTIVE,
             "creation_time": e.creation_time, "last_update_time": e.creation_time},
        )  # fmt: skip
        for k, v in e.tags.items():
            self._tag(ctx, e.experiment_id, k, v)

    @handles(ExperimentRenamed)
    def _renamed(self, ctx: Context, rec: RecordedEvent, e: ExperimentRenamed) -> None:
        ctx.write(_RENAME, {"eid": e.experiment_id, "new_name": e.new_name, "t": rec.recorded_at})

    @handles(ExperimentDeleted)
    def _deleted(self, ctx: Context, rec: RecordedEvent, e: ExperimentDeleted) -> None:
        ctx.write(_STAGE, {"eid": e.experiment_id, "stage": DELETED, "t": rec.recorded_at})

    @handles(ExperimentRestored)
    def _restored(self, ctx: Context, rec: RecordedEvent, e: ExperimentRestored) -> None:
        ctx.write(_STAGE, {"eid": e.experiment_id, "stage": ACTIVE, "t": rec.recorded_at})

    @handles(ExperimentTagSet)
    def _tag_set(self, ctx: Context, rec: RecordedEvent, e: ExperimentTagSet) -> None:
        self._tag(ctx, e.experiment_id, e.key, e.value)
        ctx.write(_TOUCH, {"eid": e.experiment_id, "t": rec.recorded_at})

    @handles(ExperimentTagDeleted)
    def _tag_deleted(self, ctx: Context, rec: RecordedEvent, e: ExperimentTagDeleted) -> None:
        ctx.write(_DELETE_TAG, {"eid": e.experiment_id, "key": e.key})
        ctx.write(_TOUCH, {"eid": e.experiment_id, "t": rec.recorded_at})

    def _tag(self, ctx: Context, experiment_id: str, key: str, value: str) -> None:
        ctx.write(
            ctx.upsert(XT), {"experiment_id": experiment_id, "tag_key": key, "tag_value": value}
        )
