"""Runs: start, resume and end them, read and search them, and MLflow-style writes by run id."""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from typing import Any

from tracker.client.core import now_ms
from tracker.client.experiments import Experiments
from tracker.client.handle import LockedRun, Run, series_of
from tracker.commands import (
    CreateRun,
    DeleteRun,
    DeleteTag,
    LogBatch,
    LogInputs,
    RestoreRun,
    ResumeRun,
    UpdateRun,
)
from tracker.entities import Metric, Page, RunView
from tracker.errors import AlreadyExistsError, InvalidStateError, NotFoundError
from tracker.events import ACTIVE, DEFAULT_EXPERIMENT_ID, RUN_NAME_TAG, DatasetInput, new_run_id
from tracker.names import random_run_name
from tracker.validation import (
    validate_batch_limits,
    validate_experiment_name,
    validate_run_id,
    validate_status,
)


class Runs(Experiments):
    _run_class: type[Run] = Run

    async def start_run(
        self,
        experiment: str | None = None,
        *,
        experiment_id: str | None = None,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        start_time: int | None = None,
        user: str | None = None,
    ) -> Run:
        """Start a run in `experiment` (a name; created if missing, as mlflow.set_experiment
        does) or `experiment_id`, else the Default experiment. With `run_id`, resume that run
        instead: its status goes back to RUNNING and its params stay write-once."""
        if run_id is not None:
            return await self._resume(validate_run_id(run_id), params or {}, tags or {})
        if experiment_id is None and experiment is not None:
            experiment_id = await self._experiment_named(experiment)
        tags = dict(tags or {})
        run_name = name or tags.get(RUN_NAME_TAG) or random_run_name()
        command = CreateRun(
            run_id=new_run_id(), experiment_id=str(experiment_id or DEFAULT_EXPERIMENT_ID),
            run_name=run_name, start_time=start_time if start_time is not None else now_ms(),
            user_id=user if user is not None else _user(), tags=tags, params=params or {},
            parent_run_id=parent_run_id,
        )  # fmt: skip
        accepted = await self._submit(command)
        uri = next(
            (r.event.artifact_uri for r in accepted.events if hasattr(r.event, "artifact_uri")),
            "",
        )
        run = self._handle(command.run_id, command.experiment_id, dict(command.params), uri)
        self._runs.add(run)
        return run

    def _handle(self, run_id: str, experiment_id: str, params: dict[str, str], uri: str) -> Run:
        cls = LockedRun if self._queue.threaded else self._run_class
        return cls(self, run_id, experiment_id, params, uri)

    async def _experiment_named(self, name: str) -> str:
        """The id of the active experiment called `name`, created if there is none."""
        found = await self.get_experiment_by_name(validate_experiment_name(name))
        if found is None:
            try:
                return str(await self.create_experiment(name))
            except AlreadyExistsError:  # created concurrently: fine
                found = await self.get_experiment_by_name(name)
        if found is None or found.lifecycle_stage != ACTIVE:
            raise InvalidStateError(
                f"experiment {name!r} is deleted; restore it or pick another name"
            )
        return str(found.experiment_id)

    async def _resume(self, run_id: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> Run:
        await self._submit(ResumeRun(run_id=run_id, params=params, tags=tags))
        current = await self.get_run(run_id)
        info = current.info
        run = self._handle(run_id, info.experiment_id, dict(current.data.params), info.artifact_uri)
        self._runs.add(run)
        return run

    async def create_run(
        self,
        experiment_id: str = DEFAULT_EXPERIMENT_ID,
        *,
        run_name: str | None = None,
        start_time: int | None = None,
        tags: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        run_id: str | None = None,
    ) -> RunView:
        """MlflowClient.create_run: a RUNNING run in the experiment, returned as stored. The
        caller ends it (this tracker's close does not)."""
        tags = dict(tags or {})
        command = CreateRun(
            run_id=run_id or new_run_id(), experiment_id=str(experiment_id),
            run_name=run_name or tags.get(RUN_NAME_TAG) or random_run_name(),
            start_time=start_time if start_time is not None else now_ms(),
            user_id=user_id if user_id is not None else _user(), tags=tags,
        )  # fmt: skip
        await self._submit(command)
        return await self.get_run(command.run_id)

    async def get_run(self, run_id: str) -> RunView:
        found = await self._read(lambda s: self.queries.get_run(s, run_id))
        if found is None:
            raise NotFoundError(f"Run with id={run_id} not found")
        return found

    async def search_runs(
        self,
        experiment_ids: Sequence[str] | str | None = None,
        filter_string: str | None = None,
        *,
        status: str | None = None,
        view_type: str = "ACTIVE_ONLY",
        run_view_type: str | None = None,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page[RunView]:
        """Runs of the given experiments (default: Default) matching `filter_string` (MLflow's
        search grammar: `metrics.acc > 0.9 AND params.lr = '0.1' AND tags.team LIKE 'ml%'`),
        ordered by `order_by` (e.g. `["metrics.acc DESC"]`, then start_time DESC and run_id),
        filtered and sorted in the database. `run_view_type` is MLflow's name for `view_type`
        (ACTIVE_ONLY, DELETED_ONLY or ALL). A malformed filter or order_by is an
        InvalidInputError naming the column and token where it broke."""
        if experiment_ids is None:
            experiment_ids = [DEFAULT_EXPERIMENT_ID]
        elif isinstance(experiment_ids, str):
            experiment_ids = [experiment_ids]
        if status is not None:
            validate_status(status)
        if run_view_type is not None:
            view_type = run_view_type
        ids = [str(e) for e in experiment_ids]
        return await self._read(
            lambda s: self.queries.search_runs(
                s, ids, status=status, view_type=view_type, max_results=max_results,
                page_token=page_token, filter_string=filter_string, order_by=order_by,
            )
        )  # fmt: skip

    async def update_run(
        self, run_id: str, *, status: str | None = None, end_time: int | None = None,
        run_name: str | None = None,
    ) -> None:  # fmt: skip
        await self._submit(UpdateRun(run_id=run_id, status=status, end_time=end_time,
                                     run_name=run_name))  # fmt: skip

    async def delete_run(self, run_id: str) -> None:
        await self._submit(DeleteRun(run_id=run_id, deleted_time=now_ms()))

    async def restore_run(self, run_id: str) -> None:
        await self._submit(RestoreRun(run_id=run_id))

    # -- MlflowClient-style writes by run id: each returns once its change is durable --------
    # The server maps MLflow's REST calls onto these; a user with run ids, not handles, can too.

    async def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """MlflowClient.log_batch: validated whole, stored all or nothing; returns once durable."""
        validate_batch_limits(len(metrics), len(params or {}), len(tags or {}))
        points = [(m.key, m.value, m.step, m.timestamp) for m in metrics]
        await self._submit(
            LogBatch(run_id=run_id, series=series_of(points), params=params or {}, tags=tags or {})
        )

    async def log_metric(
        self, run_id: str, key: str, value: float, timestamp: int | None = None,
        step: int | None = None,
    ) -> None:  # fmt: skip
        await self._submit(
            LogBatch(run_id=run_id, series=series_of([(key, value, step, timestamp)]))
        )

    async def log_param(self, run_id: str, key: str, value: Any) -> None:
        await self._submit(LogBatch(run_id=run_id, params={key: value}))

    async def set_tag(self, run_id: str, key: str, value: Any) -> None:
        await self._submit(LogBatch(run_id=run_id, tags={key: value}))

    async def delete_tag(self, run_id: str, key: str) -> None:
        """Raises NotFoundError when the run has no such tag, as MLflow does."""
        await self._submit(DeleteTag(run_id=run_id, key=key))

    async def log_inputs(self, run_id: str, datasets: Sequence[DatasetInput]) -> None:
        await self._submit(LogInputs(run_id=run_id, datasets=tuple(datasets)))

    async def set_terminated(
        self, run_id: str, status: str = "FINISHED", end_time: int | None = None
    ) -> None:
        """MlflowClient.set_terminated: a terminal status and an end time (default now)."""
        await self.update_run(run_id, status=status, end_time=end_time or now_ms())


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
