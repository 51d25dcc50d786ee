"""Tracker and Run: log_* only validate and enqueue; everything that waits is async."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import time
import uuid
import weakref
from array import array
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from tracker.artifacts.base import ArtifactEntry, ArtifactInfo
from tracker.artifacts.paths import parse_artifact_uri
from tracker.artifacts.runs import RunArtifacts, encode_dict
from tracker.entities import Experiment, Metric, Page, RunView
from tracker.errors import (
    AlreadyExistsError,
    ConcurrencyError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    ParamConflictError,
)
from tracker.events import (
    ACTIVE,
    DEFAULT_EXPERIMENT_ID,
    DEFAULT_EXPERIMENT_NAME,
    DELETED,
    ArtifactLogged,
    DatasetInput,
    DatasetInputsLogged,
    DomainEvent,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    NewEvent,
    ParamsLogged,
    RecordedEvent,
    RunCreated,
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStatusChanged,
    TagDeleted,
    TagsSet,
    experiment_stream,
    new_run_id,
    run_stream,
)
from tracker.names import random_run_name
from tracker.projections.queries import DEFAULT_HISTORY_PAGE, Queries
from tracker.projections.state import RunState
from tracker.projections.views import RUN_NAME_TAG, Projector
from tracker.stores import resolve_uri, store_from_uri
from tracker.stores.base import EventStore
from tracker.validation import (
    _VALID_KEYS,
    INT64_MAX,
    INT64_MIN,
    MAX_EXPERIMENT_TAG_VALUE_LENGTH,
    validate_batch_limits,
    validate_experiment_id,
    validate_experiment_name,
    validate_int64,
    validate_key,
    validate_metric_value,
    validate_param,
    validate_run_id,
    validate_status,
    validate_tag,
    validate_timestamp,
)
from tracker.writer import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BATCH_AGE,
    DEFAULT_MAX_QUEUE,
    Columns,
    EventQueue,
    Op,
    RunPoints,
    Writer,
    WriterStatistics,
)

_DEFAULT_EXPERIMENT_EVENT: Final = uuid.uuid5(
    uuid.NAMESPACE_URL, "tracker:default-experiment"
).bytes
_time_ns = time.time_ns


def _now_ms() -> int:
    return _time_ns() // 1_000_000


class Run:
    """A handle on one run. log_* methods are plain: they validate, then enqueue; they never
    wait on I/O. Use `await run.end()` (or `async with run:`) to finish it."""

    __slots__ = (
        "__weakref__",
        "_ended",
        "_params",
        "_points",
        "_q",
        "_tracker",
        "artifact_uri",
        "experiment_id",
        "run_id",
    )

    def __init__(
        self,
        tracker: Tracker,
        run_id: str,
        experiment_id: str,
        params: dict[str, str],
        artifact_uri: str,
    ) -> None:
        self._tracker = tracker
        self.artifact_uri = artifact_uri
        self._q = tracker._queue
        self._points: RunPoints | None = None
        self.run_id = run_id
        self.experiment_id = experiment_id
        # One params dict per run id in this tracker, shared by every handle on the run.
        self._params = tracker._run_params.setdefault(run_id, {})
        self._params.update(params)
        self._ended = False

    def __repr__(self) -> str:
        return f"<Run {self.run_id} experiment={self.experiment_id}>"

    def _enqueue(self, event: DomainEvent) -> None:
        if self._ended:
            raise InvalidStateError(
                f"run {self.run_id} has ended; start or resume a run to log more"
            )
        self._q.put(Op(event))

    def _check(self, key: str, value: Any, step: Any, timestamp: Any) -> tuple[float, int, int]:
        """Validate one point; returns (value, step, timestamp)."""
        if self._ended:
            raise InvalidStateError(
                f"run {self.run_id} has ended; start or resume a run to log more"
            )
        if key not in _VALID_KEYS:
            validate_key(key, "metric key")
        if value.__class__ is not float:
            value = validate_metric_value(key, value)
        if timestamp is None:
            timestamp = _time_ns() // 1_000_000
        elif timestamp.__class__ is not int or timestamp < 0 or timestamp > INT64_MAX:
            timestamp = validate_timestamp(timestamp)
        if step is None:
            step = 0
        elif step.__class__ is not int or not INT64_MIN <= step <= INT64_MAX:
            step = validate_int64("step", step)
        return value, step, timestamp

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Queue one point. `step` defaults to 0 and `timestamp` to now (ms), as in MLflow."""
        # The hot path: _check inlined, then three appends to this run's column segment.
        # The key is validated when it first appears in a segment (see _new_column).
        if self._ended:
            raise InvalidStateError(
                f"run {self.run_id} has ended; start or resume a run to log more"
            )
        if value.__class__ is not float:
            value = validate_metric_value(key, value)
        if timestamp is None:
            timestamp = _time_ns() // 1_000_000
        elif timestamp.__class__ is not int or timestamp < 0 or timestamp > INT64_MAX:
            timestamp = validate_timestamp(timestamp)
        if step is None:
            step = 0
        elif step.__class__ is not int or not INT64_MIN <= step <= INT64_MAX:
            step = validate_int64("step", step)
        points = self._points
        cols = None if points is None else points.cols.get(key)
        if cols is None or len(cols[2]) >= self._q.chunk:
            cols = self._new_column(key)
        cols[0].append(step)
        cols[1].append(timestamp)
        cols[2].append(value)
        if self._q.parked:
            self._q.wake()

    def _new_column(self, key: str) -> Columns:
        """The slow path of log_metric: no open segment, a key new to it, or a full column."""
        validate_key(key, "metric key")
        points = self._points
        if points is None or key in points.cols:
            points = self._q.open_points(self.run_id, self)
        cols: Columns = (array("q"), array("q"), array("d"))
        points.cols[key] = cols
        return cols

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Queue one point per key, all at the same step and timestamp. All are validated
        before any is queued."""
        if timestamp is None:
            timestamp = _now_ms()
        checked = [
            (k, v if v.__class__ is float else validate_metric_value(k, v))
            for k, v in metrics.items()
        ]
        for k, _ in checked:
            if k not in _VALID_KEYS:
                validate_key(k, "metric key")
        for k, v in checked:
            self.log_metric(k, v, step, timestamp)

    def log_param(self, key: str, value: Any) -> None:
        """Params are write-once: the same value again is accepted, a different one raises
        ParamConflictError and is not stored."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """All-or-nothing: if any param is invalid or conflicts, none is queued."""
        fresh: dict[str, str] = {}
        for key, value in params.items():
            k, v = validate_param(key, value)
            old = self._params.get(k, fresh.get(k))
            if old is not None and old != v:
                raise ParamConflictError(self.run_id, k, old, v)
            if old is None:
                fresh[k] = v
        if fresh:
            self._enqueue(ParamsLogged(self.run_id, fresh))
            self._params.update(fresh)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        checked = dict(validate_tag(k, v) for k, v in tags.items())
        if checked:
            self._enqueue(TagsSet(self.run_id, checked))

    def delete_tag(self, key: str) -> None:
        self._enqueue(TagDeleted(self.run_id, validate_key(key, "tag key")))

    def log_batch(
        self,
        metrics: Sequence[tuple[str, float, int, int]] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """MLflow's log_batch: (key, value, step, timestamp) points, params and tags, within
        MLflow's batch limits; validated as a whole before anything is queued."""
        validate_batch_limits(len(metrics), len(params or {}), len(tags or {}))
        for key, value, step, ts in metrics:
            validate_key(key, "metric key")
            validate_metric_value(key, value)
            validate_int64("step", step)
            validate_timestamp(ts)
        for k, v in (params or {}).items():
            validate_param(k, v)
        for k, v in (tags or {}).items():
            validate_tag(k, v)
        if params:
            self.log_params(params)
        if tags:
            self.set_tags(tags)
        for key, value, step, ts in metrics:
            self.log_metric(key, value, step, ts)

    def log_inputs(self, datasets: Sequence[DatasetInput]) -> None:
        if datasets:
            self._enqueue(DatasetInputsLogged(self.run_id, tuple(datasets)))

    def _artifact_logged(self, info: ArtifactInfo) -> None:
        # Called only after the bytes are stored, so the log never points at a missing file.
        self._enqueue(
            ArtifactLogged(self.run_id, info.path, info.size, info.sha256, info.content_type)
        )

    async def log_artifact(
        self, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> ArtifactInfo:
        """Upload a file to `<artifact_path>/<file name>` under the run's artifact URI."""
        return await self._tracker._artifacts.log_file(
            self.artifact_uri, local_path, artifact_path, self._artifact_logged
        )

    async def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactInfo]:
        """Upload a directory's files concurrently, keeping their relative paths. A symlink
        leading outside the directory is refused before anything is uploaded."""
        return await self._tracker._artifacts.log_dir(
            self.artifact_uri, local_dir, artifact_path, self._artifact_logged
        )

    async def log_text(self, text: str, artifact_file: str) -> ArtifactInfo:
        """Store `text` (UTF-8) as the artifact file `artifact_file`."""
        return await self._tracker._artifacts.log_bytes(
            self.artifact_uri, text.encode(), artifact_file, self._artifact_logged
        )

    async def log_dict(self, obj: Any, artifact_file: str) -> ArtifactInfo:
        """Store `obj` as JSON (.json) or YAML (.yaml, .yml), by `artifact_file`'s extension."""
        return await self._tracker._artifacts.log_bytes(
            self.artifact_uri, encode_dict(obj, artifact_file), artifact_file, self._artifact_logged
        )

    async def end(self, status: str = "FINISHED", end_time: int | None = None) -> None:
        """Set a terminal status and wait until everything this run logged is durable."""
        validate_status(status)
        fut = self._tracker._op(RunStatusChanged(self.run_id, status, end_time or _now_ms()))
        if self._ended:
            raise InvalidStateError(f"run {self.run_id} has already ended")
        self._ended = True
        self._q.put(fut[0])
        await self._tracker._await_op(fut[1])

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._ended:
            await self.end(exit_status(et))


class LockedRun(Run):
    """A Run whose points are appended under the queue lock: the sync facade's writer takes
    segments from another thread, and three column appends are not atomic."""

    __slots__ = ()

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        value, step, timestamp = self._check(key, value, step, timestamp)
        q = self._q
        assert q.lock is not None
        with q.lock:
            points = self._points
            cols = None if points is None else points.cols.get(key)
            if cols is None or len(cols[2]) >= q.chunk:
                cols = self._new_column(key)
            cols[0].append(step)
            cols[1].append(timestamp)
            cols[2].append(value)
        if q.parked:
            q.wake()


def exit_status(et: type[BaseException] | None) -> str:
    """The status of a run left by an exception: MLflow's FAILED, or KILLED when the process
    is being stopped (SIGTERM arrives as SystemExit, Ctrl-C as KeyboardInterrupt)."""
    if et is None:
        return "FINISHED"
    if issubclass(et, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
        return "KILLED"
    return "FAILED"


class Tracker:
    """The async client. `async with Tracker(uri) as tk:` opens the store, starts the writer,
    and on exit drains everything queued into the log.

    uri: None for $TRACKER_TRACKING_URI or the embedded default ./mlruns; see
    tracker.stores.store_from_uri. on_full: what log_* does when `max_queue` items wait
    (see tracker.writer). max_batch / max_batch_age: when the writer commits a batch.
    default_artifact_root: where new experiments keep artifacts (default: the store's own,
    ./mlruns for the embedded store). create=False: never create a store; opening one that does
    not exist raises NotFoundError (what read-only tools want).
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        on_full: str = "spill",
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_age: float = DEFAULT_MAX_BATCH_AGE,
        store: EventStore | None = None,
        artifact_options: Mapping[str, Any] | None = None,
        default_artifact_root: str | None = None,
        create: bool = True,
        _threaded: bool = False,
    ) -> None:
        self.uri = resolve_uri(uri)
        self._create = create
        self._default_artifact_root = default_artifact_root
        self.store = store if store is not None else store_from_uri(self.uri)
        path = getattr(self.store, "path", None)
        spill_dir = str(path.parent) if path is not None else None
        self._queue = EventQueue(max_queue, on_full, _threaded, spill_dir)
        self.projector = Projector(self.store)
        self.queries = Queries(self.store.dialect)
        self._writer = Writer(
            self.store,
            self.projector,
            self._queue,
            max_batch=max_batch,
            max_batch_age=max_batch_age,
        )
        self._open = False
        self._runs: weakref.WeakSet[Run] = weakref.WeakSet()
        self._run_class: type[Run] = LockedRun if _threaded else Run
        self._run_params: dict[str, dict[str, str]] = {}
        self._artifacts = RunArtifacts(**(artifact_options or {}))

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store (creating it unless `create=False`), catch the views up and start
        the writer. If anything fails, what was opened is closed again before the error
        propagates, so a failed open never leaves a thread keeping the process alive."""
        if self._open:
            return
        await self.store.open(create=self._create)
        try:
            await self.projector.catch_up()
            self._writer.start()
            self._open = True
            await self._ensure_default_experiment()
        except BaseException:
            self._open = False
            try:
                await self._writer.stop()
            except Exception:  # the open's error is the one to report
                pass
            finally:
                await self.store.aclose()
            raise

    async def aclose(self, end_status: str = "FINISHED") -> None:
        """End the runs this tracker started and did not end (with `end_status`), drain the
        queue into the log, stop the writer and close the store."""
        if not self._open:
            return
        self._open = False
        for run in self._runs:
            if not run._ended:
                run._ended = True
                self._queue.put(Op(RunStatusChanged(run.run_id, end_status, _now_ms())))
        try:
            await self._writer.stop()
        finally:
            await self._artifacts.aclose()
            await self.store.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose(exit_status(et))

    async def flush(self, timeout: float | None = None) -> int:
        """Return once everything queued before this call is durable in the log and applied to
        the views; returns the log position reached."""
        return await self._writer.flush(timeout)

    def statistics(self) -> WriterStatistics:
        return self._writer.statistics()

    async def wait_until(self, position: int, timeout: float = 10.0) -> None:
        """Wait until the views reflect the log up to `position` (read-your-writes)."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while self.projector.position < position:
            await self.projector.catch_up()
            if self.projector.position >= position:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"views are at {self.projector.position}, not yet at {position}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def _sync(self) -> None:
        """Before a read: our own writes flushed, and others' appends projected."""
        if len(self._queue) or self._writer.statistics().position > self.projector.position:
            await self.flush()
        if await self.store.head() > self.projector.position:
            await self.projector.catch_up()

    def _op(self, event: DomainEvent, new_stream: bool = False) -> tuple[Op, asyncio.Future[int]]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        return Op(event, fut, new_stream), fut

    async def _await_op(self, fut: asyncio.Future[int]) -> int:
        self._writer._hurry.set()
        return await fut

    async def _append(self, event: DomainEvent, new_stream: bool = False) -> int:
        if not self._open:
            raise InvalidStateError("the tracker is not open: use `async with Tracker(...) as tk:`")
        op, fut = self._op(event, new_stream)
        self._queue.put(op)
        return await self._await_op(fut)

    # -- experiments -----------------------------------------------------------------------

    def _artifact_root(self) -> str:
        root = (
            self._default_artifact_root
            or getattr(self.store, "default_artifact_root", None)
            or str(resolve_uri(None))
        )
        return root if "://" in root else f"file://{root}"

    async def _ensure_default_experiment(self) -> None:
        async with self.store.snapshot() as s:
            found = await self.queries.get_experiment(s, DEFAULT_EXPERIMENT_ID)
        if found is not None:
            return
        now = _now_ms()
        event = ExperimentCreated(
            DEFAULT_EXPERIMENT_ID, DEFAULT_EXPERIMENT_NAME, f"{self._artifact_root()}/0", now
        )
        # A fixed event id: processes racing to create it append one event between them.
        recorded = await self.store.append(
            [NewEvent(_DEFAULT_EXPERIMENT_EVENT, event.stream_id, 1, now, event)]
        )
        await self.projector.apply(recorded)
        await self.projector.catch_up()

    async def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> str:
        """Create an experiment; returns its id (a decimal string). A name already used, by an
        active or a deleted experiment, raises AlreadyExistsError."""
        validate_experiment_name(name)
        checked = dict(
            validate_tag(k, v, MAX_EXPERIMENT_TAG_VALUE_LENGTH) for k, v in (tags or {}).items()
        )
        if artifact_location is not None:
            parse_artifact_uri(artifact_location)  # refuses what opened holes in MLflow
        for _ in range(20):
            await self._sync()
            async with self.store.snapshot() as s:
                if await self.queries.get_experiment_by_name(s, name) is not None:
                    raise AlreadyExistsError(f"Experiment {name!r} already exists.")
                experiment_id = str(await self.queries.next_experiment_id(s))
            location = artifact_location or f"{self._artifact_root()}/{experiment_id}"
            event = ExperimentCreated(experiment_id, name, location, _now_ms(), checked)
            try:
                await self._append(event, new_stream=True)
                return experiment_id
            except ConcurrencyError:
                continue  # another process took this id; pick the next
        raise ConcurrencyError("could not allocate an experiment id after 20 attempts")

    async def get_experiment(self, experiment_id: str) -> Experiment:
        experiment_id = validate_experiment_id(str(experiment_id))
        await self._sync()
        async with self.store.snapshot() as s:
            found = await self.queries.get_experiment(s, experiment_id)
        if found is None:
            raise NotFoundError(f"No Experiment with id={experiment_id} exists")
        return found

    async def get_experiment_by_name(self, name: str) -> Experiment | None:
        await self._sync()
        async with self.store.snapshot() as s:
            return await self.queries.get_experiment_by_name(s, name)

    async def search_experiments(
        self, view_type: str = "ACTIVE_ONLY", max_results: int = 1000, page_token: str | None = None
    ) -> Page[Experiment]:
        await self._sync()
        async with self.store.snapshot() as s:
            return await self.queries.search_experiments(s, view_type, max_results, page_token)

    async def _active_experiment(self, experiment_id: str) -> Experiment:
        exp = await self.get_experiment(experiment_id)
        if exp.lifecycle_stage != ACTIVE:
            raise InvalidStateError(f"experiment {experiment_id} is deleted; restore it first")
        return exp

    async def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        validate_experiment_name(new_name)
        await self._active_experiment(experiment_id)
        other = await self.get_experiment_by_name(new_name)
        if other is not None and other.experiment_id != experiment_id:
            raise AlreadyExistsError(f"Experiment {new_name!r} already exists.")
        await self._append(ExperimentRenamed(experiment_id, new_name))

    async def delete_experiment(self, experiment_id: str) -> None:
        """Soft-delete an experiment and its runs."""
        await self._active_experiment(experiment_id)
        if experiment_id == DEFAULT_EXPERIMENT_ID:
            raise InvalidInputError("the Default experiment (id 0) cannot be deleted")
        await self._append(ExperimentDeleted(experiment_id))

    async def restore_experiment(self, experiment_id: str) -> None:
        exp = await self.get_experiment(experiment_id)
        if exp.lifecycle_stage != DELETED:
            raise InvalidStateError(f"experiment {experiment_id} is not deleted")
        await self._append(ExperimentRestored(experiment_id))

    async def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        k, v = validate_tag(key, value, MAX_EXPERIMENT_TAG_VALUE_LENGTH)
        await self._active_experiment(experiment_id)
        await self._append(ExperimentTagSet(experiment_id, k, v))

    async def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        exp = await self._active_experiment(experiment_id)
        if key not in exp.tags:
            raise NotFoundError(f"No tag with name: {key} in experiment with id {experiment_id}")
        await self._append(ExperimentTagDeleted(experiment_id, key))

    # -- runs ------------------------------------------------------------------------------

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
        checked_tags = dict(validate_tag(k, v) for k, v in (tags or {}).items())
        checked_params = dict(validate_param(k, v) for k, v in (params or {}).items())
        if run_id is not None:
            return await self._resume(validate_run_id(run_id), checked_params, checked_tags)
        if experiment_id is not None:
            exp = await self._active_experiment(str(experiment_id))
        elif experiment is not None:
            found = await self.get_experiment_by_name(validate_experiment_name(experiment))
            if found is None:
                with contextlib.suppress(AlreadyExistsError):  # created concurrently: fine
                    await self.create_experiment(experiment)
                found = await self.get_experiment_by_name(experiment)
            assert found is not None
            if found.lifecycle_stage != ACTIVE:
                raise InvalidStateError(
                    f"experiment {experiment!r} is deleted; restore it or pick another name"
                )
            exp = found
        else:
            exp = await self._active_experiment(DEFAULT_EXPERIMENT_ID)
        if parent_run_id is not None:
            await self.get_run(validate_run_id(parent_run_id))
        tag_name = checked_tags.pop(RUN_NAME_TAG, None)
        if name is not None and tag_name is not None and name != tag_name:
            raise InvalidInputError(
                f"run name {name!r} and tag {RUN_NAME_TAG}={tag_name!r} differ; give one or make them equal"
            )
        run_name = name or tag_name or random_run_name()
        rid = new_run_id()
        created = RunCreated(
            rid, exp.experiment_id, run_name, start_time if start_time is not None else _now_ms(),
            user or _user(), f"{exp.artifact_location}/{rid}/artifacts", checked_tags, parent_run_id,
        )  # fmt: skip
        run = self._run_class(self, rid, exp.experiment_id, {}, created.artifact_uri)
        await self._append(created, new_stream=True)
        self._runs.add(run)
        if checked_params:
            run.log_params(checked_params)
        return run

    async def _resume(self, run_id: str, params: dict[str, str], tags: dict[str, str]) -> Run:
        current = await self.get_run(run_id)
        if current.info.lifecycle_stage != ACTIVE:
            raise InvalidStateError(f"run {run_id} is deleted; restore it before resuming")
        info = current.info
        run = self._run_class(
            self, run_id, info.experiment_id, dict(current.data.params), info.artifact_uri
        )
        run.log_params(params)
        if tags:
            run.set_tags(tags)
        await self._append(RunStatusChanged(run_id, "RUNNING"))
        self._runs.add(run)
        return run

    async def get_run(self, run_id: str) -> RunView:
        await self._sync()
        async with self.store.snapshot() as s:
            found = await self.queries.get_run(s, run_id)
        if found is None:
            raise NotFoundError(f"Run with id={run_id} not found")
        return found

    async def search_runs(
        self,
        experiment_ids: Sequence[str] | str | None = None,
        *,
        status: str | None = None,
        view_type: str = "ACTIVE_ONLY",
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page[RunView]:
        """Runs of the given experiments (default: Default), newest first."""
        if experiment_ids is None:
            experiment_ids = [DEFAULT_EXPERIMENT_ID]
        elif isinstance(experiment_ids, str):
            experiment_ids = [experiment_ids]
        if status is not None:
            validate_status(status)
        await self._sync()
        async with self.store.snapshot() as s:
            return await self.queries.search_runs(
                s, [str(e) for e in experiment_ids], status=status, view_type=view_type,
                max_results=max_results, page_token=page_token,
            )  # fmt: skip

    async def get_metric_history(
        self,
        run_id: str,
        key: str,
        *,
        max_results: int = DEFAULT_HISTORY_PAGE,
        page_token: str | None = None,
    ) -> Page[Metric]:
        """One page of a metric's points ordered by step (then timestamp, value)."""
        await self._sync()
        async with self.store.snapshot() as s:
            return await self.queries.get_metric_history(
                s, run_id, key, max_results=max_results, page_token=page_token
            )

    async def _active_run(self, run_id: str) -> RunView:
        run = await self.get_run(run_id)
        if run.info.lifecycle_stage != ACTIVE:
            raise InvalidStateError(f"The run {run_id} must be in the 'active' state.")
        return run

    async def update_run(self, run_id: str, *, status: str | None = None, end_time: int | None = None,
                         run_name: str | None = None) -> None:  # fmt: skip
        await self._active_run(run_id)
        if status is not None:
            await self._append(RunStatusChanged(run_id, validate_status(status), end_time))
        if run_name is not None:
            await self._append(RunRenamed(run_id, run_name))

    async def delete_run(self, run_id: str) -> None:
        await self.get_run(run_id)
        await self._append(RunDeleted(run_id, _now_ms()))

    # -- MlflowClient-style writes by run id: each returns once its change is durable --------
    # The server maps MLflow's REST calls onto these; a user with run ids, not handles, can too.

    async def create_run(
        self,
        experiment_id: str = DEFAULT_EXPERIMENT_ID,
        *,
        run_name: str | None = None,
        start_time: int | None = None,
        tags: Mapping[str, Any] | None = None,
        user_id: str | None = None,
    ) -> RunView:
        """MlflowClient.create_run: a RUNNING run in the experiment, returned as stored."""
        run = await self.start_run(
            experiment_id=experiment_id, name=run_name, tags=tags, start_time=start_time,
            user=user_id,
        )  # fmt: skip
        self._runs.discard(run)  # not ended by aclose(): its owner ends it, as in MLflow
        return await self.get_run(run.run_id)

    async def _run_handle(self, run_id: str) -> Run:
        view = await self._active_run(validate_run_id(run_id))
        info = view.info
        return self._run_class(
            self, run_id, info.experiment_id, dict(view.data.params), info.artifact_uri
        )

    async def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """MlflowClient.log_batch: validated whole, then stored; returns once durable."""
        run = await self._run_handle(run_id)
        run.log_batch([(m.key, m.value, m.step, m.timestamp) for m in metrics], params, tags)
        await self.flush()

    async def log_metric(
        self,
        run_id: str,
        key: str,
        value: float,
        timestamp: int | None = None,
        step: int | None = None,
    ) -> None:
        run = await self._run_handle(run_id)
        run.log_metric(key, value, step, timestamp)
        await self.flush()

    async def log_param(self, run_id: str, key: str, value: Any) -> None:
        await self.log_batch(run_id, params={key: value})

    async def set_tag(self, run_id: str, key: str, value: Any) -> None:
        await self.log_batch(run_id, tags={key: value})

    async def delete_tag(self, run_id: str, key: str) -> None:
        """Raises NotFoundError when the run has no such tag, as MLflow does."""
        view = await self._active_run(validate_run_id(run_id))
        if key not in view.data.tags:
            raise NotFoundError(f"No tag with name: {key} in run with id {run_id}")
        await self._append(TagDeleted(run_id, key))

    async def log_inputs(self, run_id: str, datasets: Sequence[DatasetInput]) -> None:
        run = await self._run_handle(run_id)
        run.log_inputs(datasets)
        await self.flush()

    async def set_terminated(
        self, run_id: str, status: str = "FINISHED", end_time: int | None = None
    ) -> None:
        """MlflowClient.set_terminated: a terminal status and an end time (default now)."""
        await self.update_run(run_id, status=status, end_time=end_time or _now_ms())

    async def restore_run(self, run_id: str) -> None:
        await self.get_run(run_id)
        await self._append(RunRestored(run_id))

    # -- artifacts -------------------------------------------------------------------------

    async def list_artifacts(self, run_id: str, path: str | None = None) -> list[ArtifactEntry]:
        """One level of a run's artifacts under `path` (path, is_dir, size)."""
        run = await self.get_run(run_id)
        return await self._artifacts.list(run.info.artifact_uri, path)

    async def download_artifacts(self, run_id: str, path: str, dst: str | os.PathLike[str]) -> Path:
        """Download a run's artifact file or directory into the local directory `dst`."""
        run = await self.get_run(run_id)
        return await self._artifacts.download(run.info.artifact_uri, path, dst)

    # -- history ---------------------------------------------------------------------------

    async def replay(
        self, run_id: str, until: int | datetime | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """A run's events in order, each with its global position. `until` is inclusive: an
        int is a log position, a datetime a wall-clock time."""
        await self._sync()
        until_position, until_time = _until(until)
        async for rec in self.store.iter_stream(
            run_stream(run_id), until_position=until_position, until_time=until_time
        ):
            yield rec

    async def run_state_at(self, run_id: str, at: int | datetime) -> RunView:
        """The run exactly as it was at a log position (int) or a moment (datetime)."""
        own = [rec async for rec in self.replay(run_id, until=at)]
        if not own:
            raise NotFoundError(f"Run with id={run_id} did not exist at {at}")
        state = RunState()
        state.apply(own[0].event)
        # Deleting or restoring the experiment cascades to its runs: fold those in too.
        until_position, until_time = _until(at)
        cascade = [
            rec
            async for rec in self.store.iter_stream(
                experiment_stream(state.experiment_id),
                until_position=until_position,
                until_time=until_time,
            )
            if isinstance(rec.event, (ExperimentDeleted, ExperimentRestored))
            and rec.position > own[0].position
        ]
        for rec in sorted(own[1:] + cascade, key=lambda r: r.position):
            state.apply(rec.event)
        return state.to_run()


def _until(until: int | datetime | None) -> tuple[int | None, int | None]:
    if until is None:
        return None, None
    if isinstance(until, datetime):
        return None, int(until.timestamp() * 1000)
    if isinstance(until, bool) or not isinstance(until, int) or until < 0:
        raise InvalidInputError(
            f"until must be a log position (int >= 0) or a datetime, got {until!r}"
        )
    return until, None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
