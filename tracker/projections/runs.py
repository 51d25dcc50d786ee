"""The runs projection: runs, params, tags, dataset inputs and artifacts, as MLflow shows them."""

from __future__ import annotations

from typing import Final

import orjson
import sqlalchemy as sa

from tracker.events import (
    ACTIVE,
    DELETED,
    EVENT_TYPES,
    PARENT_TAG,
    RUN_NAME_TAG,
    USER_TAG,
    ArtifactLogged,
    DatasetInputsLogged,
    ExperimentDeleted,
    ExperimentRestored,
    ParamsLogged,
    RecordedEvent,
    RunCreated,
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStatusChanged,
    TagDeleted,
    TagsSet,
)
from tracker.projections.base import Context, Projection, handles
from tracker.stores.schema import run_artifacts, run_inputs, run_params, run_tags, runs

R: Final = runs
_RUN_ID: Final = R.c.run_id == sa.bindparam("rid")
_STATUS: Final = sa.update(R).where(_RUN_ID).values(status=sa.bindparam("status"))
_STATUS_END: Final = (
    sa.update(R).where(_RUN_ID).values(status=sa.bindparam("status"), end_time=sa.bindparam("end"))
)
_NAME: Final = sa.update(R).where(_RUN_ID).values(run_name=sa.bindparam("name"))
_DELETED: Final = (
    sa.update(R).where(_RUN_ID).values(lifecycle_stage=DELETED, deleted_time=sa.bindparam("t"))
)
_RESTORED: Final = sa.update(R).where(_RUN_ID).values(lifecycle_stage=ACTIVE, deleted_time=None)
_CASCADE_DELETE: Final = (
    sa.update(R)
    .where(R.c.experiment_id == sa.bindparam("eid"), R.c.lifecycle_stage == ACTIVE)
    .values(lifecycle_stage=DELETED, deleted_time=sa.bindparam("t"))
)
_CASCADE_RESTORE: Final = (
    sa.update(R)
    .where(R.c.experiment_id == sa.bindparam("eid"), R.c.lifecycle_stage == DELETED)
    .values(lifecycle_stage=ACTIVE, deleted_time=None)
)
_DELETE_TAG: Final = sa.delete(run_tags).where(
    run_tags.c.run_id == sa.bindparam("rid"), run_tags.c.tag_key == sa.bindparam("key")
)
_MINE: Final = (
    RunCreated, RunStatusChanged, RunRenamed, RunDeleted, RunRestored, ParamsLogged, TagsSet,
    TagDeleted, DatasetInputsLogged, ArtifactLogged, ExperimentDeleted, ExperimentRestored,
)  # fmt: skip


class RunsProjection(Projection):
    name = "runs"
    # 2: value indexes on run_params and run_tags for searches (tracker/stores/schema.py).
    version = 2
    tables = (runs, run_params, run_tags, run_inputs, run_artifacts)
    ignores = frozenset(t for t in EVENT_TYPES.values() if t not in _MINE)

    @handles(RunCreated)
    def _created(self, ctx: Context, rec: RecordedEvent, e: RunCreated) -> None:
        ctx.write(
            ctx.upsert(R),
            {"run_id": e.run_id, "experiment_id": e.experiment_id, "run_name": e.run_name,
             "user_id": e.user_id, "status": "RUNNING", "start_time": e.start_time,
             "end_time": None, "deleted_time": None, "lifecycle_stage": ACTIVE,
             "artifact_uri": e.artifact_uri, "parent_run_id": e.parent_run_id},
        )  # fmt: skip
        tags = dict(e.tags)
        tags[RUN_NAME_TAG] = e.run_name
        if e.user_id:
            tags.setdefault(USER_TAG, e.user_id)
        if e.parent_run_id:
            tags[PARENT_TAG] = e.parent_run_id
        for k, v in tags.items():
            self._tag(ctx, e.run_id, k, v)

    @handles(RunStatusChanged)
    def _status(self, ctx: Context, rec: RecordedEvent, e: RunStatusChanged) -> None:
        if e.end_time is None:
            ctx.write(_STATUS, {"rid": e.run_id, "status": e.status})
        else:
            ctx.write(_STATUS_END, {"rid": e.run_id, "status": e.status, "end": e.end_time})

    @handles(RunRenamed)
    def _renamed(self, ctx: Context, rec: RecordedEvent, e: RunRenamed) -> None:
        self._tag(ctx, e.run_id, RUN_NAME_TAG, e.run_name)

    @handles(RunDeleted)
    def _deleted(self, ctx: Context, rec: RecordedEvent, e: RunDeleted) -> None:
        ctx.write(_DELETED, {"rid": e.run_id, "t": e.deleted_time})

    @handles(RunRestored)
    def _restored(self, ctx: Context, rec: RecordedEvent, e: RunRestored) -> None:
        ctx.write(_RESTORED, {"rid": e.run_id})

    @handles(ParamsLogged)
    def _params(self, ctx: Context, rec: RecordedEvent, e: ParamsLogged) -> None:
        statement = ctx.insert_ignore(run_params)  # write-once: the first value stands
        for k, v in e.params.items():
            ctx.write(statement, {"run_id": e.run_id, "param_key": k, "param_value": v})

    @handles(TagsSet)
    def _tags(self, ctx: Context, rec: RecordedEvent, e: TagsSet) -> None:
        for k, v in e.tags.items():
            self._tag(ctx, e.run_id, k, v)

    @handles(TagDeleted)
    def _tag_deleted(self, ctx: Context, rec: RecordedEvent, e: TagDeleted) -> None:
        ctx.write(_DELETE_TAG, {"rid": e.run_id, "key": e.key})

    @handles(DatasetInputsLogged)
    def _inputs(self, ctx: Context, rec: RecordedEvent, e: DatasetInputsLogged) -> None:
        for ds in e.datasets:
            data = orjson.dumps(
                {"source_type": ds.source_type, "source": ds.source, "schema": ds.schema,
                 "profile": ds.profile, "tags": ds.tags}
            ).decode()  # fmt: skip
            ctx.write(
                ctx.upsert(run_inputs),
                {"run_id": e.run_id, "dataset_name": ds.name, "dataset_digest": ds.digest,
                 "data": data},
            )  # fmt: skip

    @handles(ArtifactLogged)
    def _artifact(self, ctx: Context, rec: RecordedEvent, e: ArtifactLogged) -> None:
        ctx.write(
            ctx.upsert(run_artifacts),
            {"run_id": e.run_id, "path": e.path, "size": e.size, "sha256": e.sha256,
             "content_type": e.content_type, "position": rec.position},
        )  # fmt: skip

    @handles(ExperimentDeleted)
    def _experiment_deleted(self, ctx: Context, rec: RecordedEvent, e: ExperimentDeleted) -> None:
        ctx.write(_CASCADE_DELETE, {"eid": e.experiment_id, "t": rec.recorded_at})

    @handles(ExperimentRestored)
    def _experiment_restored(self, ctx: Context, rec: RecordedEvent, e: ExperimentRestored) -> None:
        ctx.write(_CASCADE_RESTORE, {"eid": e.experiment_id})

    def _tag(self, ctx: Context, run_id: str, key: str, value: str) -> None:
        ctx.write(ctx.upsert(run_tags), {"run_id": run_id, "tag_key": key, "tag_value": value})
        if key == RUN_NAME_TAG:
            ctx.write(_NAME, {"rid": run_id, "name": value})
