"""Run: a handle on one run whose log_* methods validate and enqueue, never waiting on I/O."""

from __future__ import annotations

import asyncio
import os
import time
from array import array
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import numpy as np

from tracker.artifacts.base import ArtifactInfo
from tracker.artifacts.runs import encode_dict
from tracker.commands import LogBatch, LogInputs, RecordArtifact, UpdateRun
from tracker.errors import InvalidInputError, InvalidStateError, ParamConflictError, QueueFullError
from tracker.events import DatasetInput, MetricSeries
from tracker.validation import (
    _VALID_KEYS,
    INT64_MAX,
    INT64_MIN,
    validate_batch_limits,
    validate_int64,
    validate_key,
    validate_metric_value,
    validate_params,
    validate_status,
    validate_tags,
    validate_timestamp,
)
from tracker.writer import Columns, Op, Rows, RunPoints

if TYPE_CHECKING:
    from tracker.client.core import Core

_time_ns = time.time_ns


ARRAY_PIECE: Final = 100_000
"""Points of one queued piece of log_metric_array: one event each, like a writer's batch."""


def _now_ms() -> int:
    return _time_ns() // 1_000_000


class Run:
    """A handle on one run. log_* methods are plain: they validate, then enqueue; they never
    wait on I/O. What the store's rules refuse later (a param another process logged with
    another value, a run deleted meanwhile) is raised by the next `flush()` or `end()`. Use
    `await run.end()` (or `async with run:`) to finish it."""

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
        tracker: Core,
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
        self._params = dict(params)
        """Params this handle has seen: an in-process conflict raises at once (the store's
        rules decide for every process, at write time)."""
        self._ended = False

    def __repr__(self) -> str:
        return f"<Run {self.run_id} experiment={self.experiment_id}>"

    def _check_live(self) -> None:
        if self._ended:
            raise InvalidStateError(
                f"run {self.run_id} has ended; start or resume a run to log more"
            )

    def _check(self, key: str, value: Any, step: Any, timestamp: Any) -> tuple[float, int, int]:
        """Validate one point; returns (value, step, timestamp)."""
        self._check_live()
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
            self._check_live()
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
        """The slow path of log_metric: no open segment, a key new to it (or held in a key
        set's rows), or a full column."""
        validate_key(key, "metric key")
        points = self._points
        if points is not None and points.rows:
            points.explode((key,))
            cols = points.cols.get(key)
            if cols is not None and len(cols[2]) < self._q.chunk:
                return cols
        if points is None or key in points.cols:
            points = self._q.open_points(self.run_id, self)
        cols = (array("q"), array("q"), array("d"))
        points.cols[key] = cols
        return cols

    def _columns(self, keys: Sequence[str]) -> list[Columns]:
        """A column for each key, all in one segment with room for a point each: opening a
        new segment (which applies the full-queue policy, and may raise) happens before any
        point is appended, so a call is queued whole or not at all."""
        points = self._points
        if points is not None:
            if points.rows:
                points.explode(keys)
            found = [points.cols.get(k) for k in keys]
            if all(c is not None and len(c[2]) < self._q.chunk for c in found):
                return found  # type: ignore[return-value]
            if any(c is not None and len(c[2]) >= self._q.chunk for c in found):
                points = None
        if points is None:
            points = self._q.open_points(self.run_id, self)
        out = []
        for k in keys:
            cols = points.cols.get(k)
            if cols is None:
                cols = points.cols[k] = (array("q"), array("q"), array("d"))
            out.append(cols)
        return out

    def log_metrics(
        self, metrics: Mapping[str, Any], step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Queue one point per key, all at the same step and timestamp; validated whole and
        queued whole (or, when the queue refuses, not at all).

        Columnar: a call appends its step and timestamp once, and its values as one row of
        its key set (the keys, in the mapping's order); keys are validated when the key set
        first appears in a segment."""
        if self._ended:
            self._check_live()
        # Every check comes before the first append: an array refuses an out-of-range int
        # only once some columns of the call have taken their point.
        if timestamp is None:
            timestamp = _time_ns() // 1_000_000
        elif timestamp.__class__ is not int or timestamp < 0 or timestamp > INT64_MAX:
            timestamp = validate_timestamp(timestamp)
        if step is None:
            step = 0
        elif step.__class__ is not int or not INT64_MIN <= step <= INT64_MAX:
            step = validate_int64("step", step)
        values: Iterable[float] = metrics.values()
        for v in values:
            if v.__class__ is not float:
                values = [
                    v if v.__class__ is float else validate_metric_value(k, v)
                    for k, v in metrics.items()
                ]
                break
        key_set = tuple(metrics)
        if key_set:
            self._append_row(key_set, values, step, timestamp)

    def _append_row(self, key_set: tuple[str, ...], values: Iterable[float], step: int,
                    ts: int) -> None:  # fmt: skip
        points = self._points
        rows = None if points is None else points.rows.get(key_set)
        if rows is None or len(rows[0]) >= self._q.chunk:
            rows = self._new_rows(key_set)
        if rows is not None:
            rows[0].append(step)
            rows[1].append(ts)
            rows[2].extend(values)
        else:  # some of its keys are logged apart in this segment: a column each
            for cols, value in zip(self._columns(key_set), values, strict=True):
                cols[0].append(step)
                cols[1].append(ts)
                cols[2].append(value)
        if self._q.parked:
            self._q.wake()

    def _new_rows(self, key_set: tuple[str, ...]) -> Rows | None:
        """The slow path of log_metrics: rows for a key set new to the segment (or full),
        its keys validated; None when some of them are already held apart (in columns or in
        another key set's rows): that call goes to columns, one a key."""
        for k in key_set:
            if k not in _VALID_KEYS:
                validate_key(k, "metric key")
        points = self._points
        if points is not None and key_set not in points.rows:
            held = points.cols.keys() | {k for ks in points.rows for k in ks}
            if not held.isdisjoint(key_set):
                return None
        if points is None or key_set in points.rows:  # none yet, or full
            points = self._q.open_points(self.run_id, self)
        rows: Rows = (array("q"), array("q"), array("d"))
        points.rows[key_set] = rows
        return rows

    def log_metric_array(
        self,
        key: str,
        values: Any,
        steps: Any = None,
        timestamps: Any = None,
    ) -> int:
        """Queue many points of one metric from arrays a loop already holds (numpy arrays or
        any sequences of numbers): `values` (real numbers; NaN and ±Inf kept), `steps`
        (int64; default 0, 1, ..., n-1) and `timestamps` (ms since the epoch; default now for
        every point), all of one length. Validated and queued whole: a bad column, or a queue
        too full under on_full="raise", refuses the whole call. Returns the points queued.

        The points travel in pieces of at most ARRAY_PIECE points, each one queued item: with
        on_full="spill" they are queued past max_queue (they are the caller's arrays, already
        in memory), and with on_full="block" the call waits for room piece by piece."""
        self._check_live()
        validate_key(key, "metric key")
        vals = np.asarray(values)
        if vals.ndim != 1:
            raise InvalidInputError(
                f"metric {key!r}: values must be a 1-D array, got shape {vals.shape}"
            )
        n = len(vals)
        if vals.dtype.kind not in "biuf":
            raise InvalidInputError(
                f"metric {key!r}: values must be real numbers, got an array of {vals.dtype}"
            )
        steps_col = np.arange(n, dtype=np.int64) if steps is None else steps
        ts_col = np.full(n, _now_ms(), dtype=np.int64) if timestamps is None else timestamps
        series = MetricSeries(key, steps_col, ts_col, vals.astype(np.float64, copy=False))
        if n and int(series.timestamps.min()) < 0:
            raise InvalidInputError(f"metric {key!r}: timestamps must be non-negative (ms)")
        if n == 0:
            return 0
        ops = [
            Op(
                LogBatch(
                    run_id=self.run_id,
                    series=(
                        MetricSeries(
                            key,
                            series.steps[i : i + ARRAY_PIECE],
                            series.timestamps[i : i + ARRAY_PIECE],
                            series.values[i : i + ARRAY_PIECE],
                        ),
                    ),
                )
            )
            for i in range(0, n, ARRAY_PIECE)
        ]
        q = self._q
        if q.on_full == "block":
            for op in ops:
                q.put(op)
            return n
        if q.on_full == "raise" and len(q) + len(ops) > q.max_queue:
            raise QueueFullError(
                f"the tracker queue holds {len(q):,} items and has no room for {len(ops)} "
                'more; await tk.flush() first, raise max_queue, or use on_full="spill"'
            )
        for op in ops:
            q.put(op, bypass_policy=True)
        return n

    def _enqueue(self, command: LogBatch | LogInputs | RecordArtifact) -> None:
        self._check_live()
        self._q.put(Op(command))

    def log_param(self, key: str, value: Any) -> None:
        """Params are write-once: the same value again is accepted, a different one raises
        ParamConflictError and is not stored."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """All-or-nothing: if any param is invalid or conflicts, none is queued."""
        checked = validate_params(params)
        fresh = {}
        for k, v in checked.items():
            old = self._params.get(k)
            if old is not None and old != v:
                raise ParamConflictError(self.run_id, k, old, v)
            if old is None:
                fresh[k] = v
        if fresh:
            self._enqueue(LogBatch(run_id=self.run_id, params=fresh))
            self._params.update(fresh)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        checked = validate_tags(tags)
        if checked:
            self._enqueue(LogBatch(run_id=self.run_id, tags=checked))

    def delete_tag(self, key: str) -> None:
        """Queue the deletion of a tag; one the run does not have is refused by the next
        flush() (NotFoundError, as MLflow answers)."""
        from tracker.commands import DeleteTag

        self._check_live()
        self._q.put(Op(DeleteTag(run_id=self.run_id, key=key)))

    def log_batch(
        self,
        metrics: Sequence[tuple[str, Any, Any, Any]] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """MLflow's log_batch: (key, value, step, timestamp) points, params and tags, within
        MLflow's batch limits; validated as a whole, stored all or nothing."""
        self._check_live()
        validate_batch_limits(len(metrics), len(params or {}), len(tags or {}))
        batch = LogBatch(
            run_id=self.run_id, series=series_of(metrics), params=params or {}, tags=tags or {}
        )
        for k, v in batch.params.items():
            old = self._params.get(k)
            if old is not None and old != v:
                raise ParamConflictError(self.run_id, k, old, v)
        self._q.put(Op(batch))
        self._params.update(batch.params)

    def log_inputs(self, datasets: Sequence[DatasetInput]) -> None:
        if datasets:
            self._enqueue(LogInputs(run_id=self.run_id, datasets=tuple(datasets)))

    # -- artifacts ---------------------------------------------------------------------------

    def _artifact_logged(self, info: ArtifactInfo) -> None:
        # Called only after the bytes are stored, so the log never points at a missing file;
        # recorded even after end(), which waits for uploads in flight. Past the full-queue
        # policy, as flush barriers are: raising (or blocking the event loop) here would leave
        # the bytes stored and unrecorded, and the queue outgrows max_queue by one record only.
        self._q.put(
            Op(
                RecordArtifact(
                    run_id=self.run_id, path=info.path, size=info.size, sha256=info.sha256,
                    content_type=info.content_type,
                )
            ),
            bypass_policy=True,
        )  # fmt: skip

    async def log_artifact(
        self, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> ArtifactInfo:
        """Upload a file to `<artifact_path>/<file name>` under the run's artifact URI."""
        self._check_live()
        return await self._tracker._artifacts.log_file(
            self.artifact_uri, local_path, artifact_path, self._artifact_logged
        )

    async def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactInfo]:
        """Upload a directory's files concurrently, keeping their relative paths. A symlink
        leading outside the directory is refused before anything is uploaded."""
        self._check_live()
        return await self._tracker._artifacts.log_dir(
            self.artifact_uri, local_dir, artifact_path, self._artifact_logged
        )

    async def log_text(self, text: str, artifact_file: str) -> ArtifactInfo:
        """Store `text` (UTF-8) as the artifact file `artifact_file`."""
        self._check_live()
        return await self._tracker._artifacts.log_bytes(
            self.artifact_uri, text.encode(), artifact_file, self._artifact_logged
        )

    async def log_dict(self, obj: Any, artifact_file: str) -> ArtifactInfo:
        """Store `obj` as JSON (.json) or YAML (.yaml, .yml), by `artifact_file`'s extension."""
        self._check_live()
        return await self._tracker._artifacts.log_bytes(
            self.artifact_uri, encode_dict(obj, artifact_file), artifact_file, self._artifact_logged
        )

    # -- ending ------------------------------------------------------------------------------

    async def end(
        self, status: str = "FINISHED", end_time: int | None = None, *, cancel_uploads: bool = False
    ) -> None:
        """Wait for the run's uploads in flight (or cancel them, with `cancel_uploads`), set a
        terminal status, and wait until everything this run logged is durable; raises what the
        store refused of it."""
        validate_status(status)
        if self._ended:
            raise InvalidStateError(f"run {self.run_id} has already ended")
        self._ended = True
        # Uploads in flight are stored and recorded (or cancelled) before the run ends.
        await self._tracker._artifacts.drain(self.artifact_uri, cancel=cancel_uploads)
        await self._tracker._submit(
            UpdateRun(run_id=self.run_id, status=status, end_time=end_time or _now_ms())
        )
        await self._tracker.flush()

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

    def _append_row(self, key_set: tuple[str, ...], values: Iterable[float], step: int,
                    ts: int) -> None:  # fmt: skip
        assert self._q.lock is not None
        with self._q.lock:
            super()._append_row(key_set, values, step, ts)


def series_of(metrics: Sequence[tuple[str, Any, Any, Any]]) -> tuple[MetricSeries, ...]:
    """(key, value, step, timestamp) points, validated, as one series per key in order."""
    cols: dict[str, Columns] = {}
    for key, value, step, ts in metrics:
        k = validate_key(key, "metric key")
        c = cols.get(k)
        if c is None:
            c = cols[k] = (array("q"), array("q"), array("d"))
        c[0].append(0 if step is None else validate_int64("step", step))
        c[1].append(_now_ms() if ts is None else validate_timestamp(ts))
        c[2].append(validate_metric_value(k, value))
    return tuple(MetricSeries(k, s, t, v) for k, (s, t, v) in cols.items())


def exit_status(et: type[BaseException] | None) -> str:
    """The status of a run left by an exception: MLflow's FAILED, or KILLED when the process
    is being stopped (SIGTERM arrives as SystemExit, Ctrl-C as KeyboardInterrupt)."""
    if et is None:
        return "FINISHED"
    if issubclass(et, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
        return "KILLED"
    return "FAILED"
