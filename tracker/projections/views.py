"""The projector: applies logged events to the SQL views, recording its position atomically."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import orjson

from tracker.events import (
    ACTIVE,
    DELETED,
    ArtifactLogged,
    DatasetInputsLogged,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    MetricSeries,
    MetricsLogged,
    ParamsLogged,
    RecordedEvent,
    RunCreated,
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStatusChanged,
    TagDeleted,
    TagsSet,
    point_rank,
)
from tracker.serialization import pack_series
from tracker.stores.base import Dialect, EventStore, SqlSession
from tracker.stores.schema import VIEWS

PROJECTION: Final = "views"
RUN_NAME_TAG: Final = "mlflow.runName"
USER_TAG: Final = "mlflow.user"
PARENT_TAG: Final = "mlflow.parentRunId"
_LATEST_CACHE_RUNS: Final = 10_000

# A latest-metric entry: (rank, value, timestamp, step); rank orders entries as MLflow does.
Latest = tuple[tuple[int, int, int, float], float, int, int]


def series_latest(s: MetricSeries) -> Latest:
    """The point with the largest (step, timestamp, value), found by tracker.series.latest."""
    step, ts, v = s.latest()
    return point_rank((step, ts, v)), v, ts, step


class _Ops:
    """Statements in order, consecutive runs of one statement merged into executemany."""

    def __init__(self, dialect: Dialect) -> None:
        self.d = dialect
        self.ops: list[tuple[str, list[Sequence[Any]]]] = []

    def add(self, sql: str, params: Sequence[Any]) -> None:
        sql = self.d.sql(sql)
        if self.ops and self.ops[-1][0] == sql:
            self.ops[-1][1].append(params)
        else:
            self.ops.append((sql, [params]))

    async def run(self, s: SqlSession) -> None:
        for sql, rows in self.ops:
            if len(rows) == 1:
                await s.execute(sql, rows[0])
            else:
                await s.executemany(sql, rows)


class Projector:
    """Keeps the views equal to a fold of the log. Apply events strictly in position order;
    each call is one transaction that also stores the new position, so the views never
    reflect a prefix of the log other than the one `position` names."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.d = store.dialect
        self.position = 0
        self._latest: dict[str, dict[str, Latest]] = {}
        self._lock = asyncio.Lock()
        self._sql_upsert_latest = store.dialect.upsert(
            "latest_metrics", ("run_id", "metric_key"),
            ("run_id", "metric_key", "metric_value", "is_nan", "ts", "step"),
        )  # fmt: skip

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[SqlSession]:
        """A store transaction holding the projection lock. If it does not commit (or we cannot
        tell), forget what was assumed inside it: the position and the cached latest metrics
        go back to what the database surely holds, and the next transaction re-reads them."""
        before = self.position
        try:
            async with self.store.transaction() as s:
                await self.store.lock_projection(s)
                yield s
        except BaseException:
            self.position = before
            self._latest.clear()
            raise

    async def _stored_position(self, s: SqlSession) -> int:
        rows = await s.fetchall(
            self.d.sql("SELECT position FROM projection_state WHERE name = ?"), (PROJECTION,)
        )
        return int(rows[0][0]) if rows else 0

    async def apply(self, events: Sequence[RecordedEvent]) -> int:
        """Apply events that directly follow the views' position; falls back to reading the
        log when they do not (another process appended or projected in between)."""
        if not events:
            return self.position
        async with self._lock, self._transaction() as s:
            pos = await self._stored_position(s)
            if pos != self.position:
                self._latest.clear()  # someone else projected: our cache may be stale
                self.position = pos
            todo = [e for e in events if e.position > pos]
            if todo and todo[0].position == pos + 1 and _contiguous(todo):
                await self._apply_in(s, todo)
                return self.position
        return await self.catch_up()

    async def catch_up(
        self, progress: Callable[[int], None] | None = None, page: int = 2000
    ) -> int:
        """Apply every event after the views' position, page by page; returns the position."""
        async with self._lock:
            while True:
                async with self._transaction() as s:
                    pos = await self._stored_position(s)
                    if pos != self.position:
                        self._latest.clear()
                        self.position = pos
                    events = await self.store.read(after=pos, limit=page)
                    if not events:
                        return pos
                    await self._apply_in(s, events)
                if progress is not None:
                    progress(len(events))

    async def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Drop the views, recreate them empty and project the whole log again."""
        async with self._lock, self._transaction() as s:
            for t in reversed(VIEWS):
                await s.execute(f"DROP TABLE IF EXISTS {t.name}")
            for stmt in self.store.ddl(VIEWS):
                await s.execute(stmt)
            self.position = 0
            self._latest.clear()
        return await self.catch_up(progress)

    async def _load_latest(self, s: SqlSession, run_id: str) -> dict[str, Latest]:
        cached = self._latest.get(run_id)
        if cached is not None:
            return cached
        if len(self._latest) >= _LATEST_CACHE_RUNS:
            self._latest.clear()
        rows = await s.fetchall(
            self.d.sql(
                "SELECT metric_key, metric_value, is_nan, ts, step FROM latest_metrics WHERE run_id = ?"
            ),
            (run_id,),
        )
        out: dict[str, Latest] = {}
        for key, value, nan, ts, step in rows:
            if nan:
                out[key] = ((step, ts, 1, 0.0), math.nan, ts, step)
            else:
                v = self.d.decode_float(float(value))
                out[key] = ((step, ts, 0, v), v, ts, step)
        self._latest[run_id] = out
        return out

    async def _apply_in(self, s: SqlSession, events: Sequence[RecordedEvent]) -> None:
        ops = _Ops(self.d)
        touched: dict[tuple[str, str], Latest] = {}
        upsert = self.d.upsert
        for rec in events:
            e = rec.event
            t = rec.recorded_at
            if isinstance(e, MetricsLogged):
                latest = await self._load_latest(s, e.run_id)
                for series in e.series:
                    if not len(series):
                        continue
                    ops.add(
                        "INSERT INTO metric_chunks (run_id, metric_key, position, min_step, max_step, n, data) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (e.run_id, series.key, rec.position, int(series.steps.min()), int(series.steps.max()),
                         len(series), pack_series(series)),
                    )  # fmt: skip
                    cand = series_latest(series)
                    cur = latest.get(series.key)
                    if cur is None or cand[0] > cur[0]:
                        latest[series.key] = cand
                        touched[(e.run_id, series.key)] = cand
            elif isinstance(e, ParamsLogged):
                for k, v in e.params.items():
                    ops.add(self.d.insert_ignore("run_params", ("run_id", "param_key", "param_value")),
                            (e.run_id, k, v))  # fmt: skip
            elif isinstance(e, TagsSet):
                for k, v in e.tags.items():
                    self._set_tag(ops, e.run_id, k, v)
            elif isinstance(e, TagDeleted):
                ops.add("DELETE FROM run_tags WHERE run_id = ? AND tag_key = ?", (e.run_id, e.key))
            elif isinstance(e, RunStatusChanged):
                if e.end_time is None:
                    ops.add("UPDATE runs SET status = ? WHERE run_id = ?", (e.status, e.run_id))
                else:
                    ops.add("UPDATE runs SET status = ?, end_time = ? WHERE run_id = ?",
                            (e.status, e.end_time, e.run_id))  # fmt: skip
            elif isinstance(e, RunCreated):
                ops.add(
                    upsert("runs", ("run_id",), ("run_id", "experiment_id", "run_name", "user_id", "status",
                           "start_time", "end_time", "deleted_time", "lifecycle_stage", "artifact_uri",
                           "parent_run_id")),
                    (e.run_id, e.experiment_id, e.run_name, e.user_id, "RUNNING", e.start_time, None, None,
                     ACTIVE, e.artifact_uri, e.parent_run_id),
                )  # fmt: skip
                tags = dict(e.tags)
                tags[RUN_NAME_TAG] = e.run_name
                if e.user_id:
                    tags.setdefault(USER_TAG, e.user_id)
                if e.parent_run_id:
                    tags[PARENT_TAG] = e.parent_run_id
                for k, v in tags.items():
                    self._set_tag(ops, e.run_id, k, v)
            elif isinstance(e, RunRenamed):
                self._set_tag(ops, e.run_id, RUN_NAME_TAG, e.run_name)
            elif isinstance(e, RunDeleted):
                ops.add("UPDATE runs SET lifecycle_stage = ?, deleted_time = ? WHERE run_id = ?",
                        (DELETED, e.deleted_time, e.run_id))  # fmt: skip
            elif isinstance(e, RunRestored):
                ops.add("UPDATE runs SET lifecycle_stage = ?, deleted_time = NULL WHERE run_id = ?",
                        (ACTIVE, e.run_id))  # fmt: skip
            elif isinstance(e, DatasetInputsLogged):
                for ds in e.datasets:
                    data = orjson.dumps(
                        {"source_type": ds.source_type, "source": ds.source, "schema": ds.schema,
                         "profile": ds.profile, "tags": ds.tags}
                    ).decode()  # fmt: skip
                    ops.add(upsert("run_inputs", ("run_id", "dataset_name", "dataset_digest"),
                                   ("run_id", "dataset_name", "dataset_digest", "data")),
                            (e.run_id, ds.name, ds.digest, data))  # fmt: skip
            elif isinstance(e, ArtifactLogged):
                ops.add(upsert("run_artifacts", ("run_id", "path"),
                               ("run_id", "path", "size", "sha256", "content_type", "position")),
                        (e.run_id, e.path, e.size, e.sha256, e.content_type, rec.position))  # fmt: skip
            elif isinstance(e, ExperimentCreated):
                ops.add(
                    upsert("experiments", ("experiment_id",), ("experiment_id", "name", "artifact_location",
                           "lifecycle_stage", "creation_time", "last_update_time")),
                    (e.experiment_id, e.name, e.artifact_location, ACTIVE, e.creation_time, e.creation_time),
                )  # fmt: skip
                for k, v in e.tags.items():
                    self._set_experiment_tag(ops, e.experiment_id, k, v)
            elif isinstance(e, ExperimentRenamed):
                ops.add("UPDATE experiments SET name = ?, last_update_time = ? WHERE experiment_id = ?",
                        (e.new_name, t, e.experiment_id))  # fmt: skip
            elif isinstance(e, ExperimentDeleted):
                self._experiment_stage(ops, e.experiment_id, DELETED, t)
                ops.add("UPDATE runs SET lifecycle_stage = ?, deleted_time = ? "
                        "WHERE experiment_id = ? AND lifecycle_stage = ?",
                        (DELETED, t, e.experiment_id, ACTIVE))  # fmt: skip
            elif isinstance(e, ExperimentRestored):
                self._experiment_stage(ops, e.experiment_id, ACTIVE, t)
                ops.add("UPDATE runs SET lifecycle_stage = ?, deleted_time = NULL "
                        "WHERE experiment_id = ? AND lifecycle_stage = ?",
                        (ACTIVE, e.experiment_id, DELETED))  # fmt: skip
            elif isinstance(e, ExperimentTagSet):
                self._set_experiment_tag(ops, e.experiment_id, e.key, e.value)
                ops.add("UPDATE experiments SET last_update_time = ? WHERE experiment_id = ?",
                        (t, e.experiment_id))  # fmt: skip
            elif isinstance(e, ExperimentTagDeleted):
                ops.add("DELETE FROM experiment_tags WHERE experiment_id = ? AND tag_key = ?",
                        (e.experiment_id, e.key))  # fmt: skip
                ops.add("UPDATE experiments SET last_update_time = ? WHERE experiment_id = ?",
                        (t, e.experiment_id))  # fmt: skip
        for (run_id, key), (rank, value, ts, step) in touched.items():
            nan = rank[2]
            ops.add(
                self._sql_upsert_latest,
                (run_id, key, None if nan else self.d.encode_float(value), nan, ts, step),
            )
        new_position = events[-1].position
        ops.add(
            upsert("projection_state", ("name",), ("name", "position")), (PROJECTION, new_position)
        )
        try:
            await ops.run(s)
        except BaseException:
            self._latest.clear()  # the transaction rolls back; so must our cache
            raise
        self.position = new_position

    def _set_tag(self, ops: _Ops, run_id: str, key: str, value: str) -> None:
        ops.add(self.d.upsert("run_tags", ("run_id", "tag_key"), ("run_id", "tag_key", "tag_value")),
                (run_id, key, value))  # fmt: skip
        if key == RUN_NAME_TAG:
            ops.add("UPDATE runs SET run_name = ? WHERE run_id = ?", (value, run_id))

    def _set_experiment_tag(self, ops: _Ops, experiment_id: str, key: str, value: str) -> None:
        ops.add(
            self.d.upsert("experiment_tags", ("experiment_id", "tag_key"),
                          ("experiment_id", "tag_key", "tag_value")),
            (experiment_id, key, value),
        )  # fmt: skip

    def _experiment_stage(self, ops: _Ops, experiment_id: str, stage: str, t: int) -> None:
        ops.add("UPDATE experiments SET lifecycle_stage = ?, last_update_time = ? WHERE experiment_id = ?",
                (stage, t, experiment_id))  # fmt: skip


def _contiguous(events: Sequence[RecordedEvent]) -> bool:
    first = events[0].position
    return all(e.position == first + i for i, e in enumerate(events))
