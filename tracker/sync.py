"""SyncTracker and SyncRun: the Tracker API for plain synchronous code, the writer on a thread."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, Self, TypeVar

from tracker.artifacts.base import ArtifactEntry, ArtifactInfo
from tracker.client import Run, Tracker, exit_status
from tracker.commands import Command
from tracker.entities import Experiment, Metric, Page, RunView
from tracker.errors import InvalidStateError
from tracker.events import DEFAULT_EXPERIMENT_ID, DatasetInput, RecordedEvent
from tracker.handler import Outcome
from tracker.projections.downsampling import DEFAULT_BUCKETS, MetricBuckets
from tracker.projections.queries import DEFAULT_HISTORY_PAGE, Points
from tracker.stores.base import Database, EventLog, SqlEventStore
from tracker.writer import (
    DEFAULT_GRACE,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BATCH_AGE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_WRITE_TIMEOUT,
    WriterStatistics,
)

T = TypeVar("T")

_REPLAY_CHUNK: Final = 1000
"""Events fetched per hop to the loop thread by SyncTracker.replay."""


class SyncRun:
    """A run for synchronous code: log_* are the async Run's own (thread-safe) appends, and
    what the async Run awaits (artifact uploads, end) blocks here until it is done."""

    def __init__(self, owner: SyncTracker, run: Run) -> None:
        self._owner = owner
        self._run = run
        self.run_id = run.run_id
        self.experiment_id = run.experiment_id
        self.artifact_uri = run.artifact_uri
        # The very methods of the async Run, not wrappers: the hot path stays one call.
        self.log_metric = run.log_metric
        self.log_metrics = run.log_metrics
        self.log_metric_array = run.log_metric_array
        self.log_param = run.log_param
        self.log_params = run.log_params
        self.set_tag = run.set_tag
        self.set_tags = run.set_tags
        self.delete_tag = run.delete_tag
        self.log_batch = run.log_batch
        self.log_inputs = run.log_inputs

    def __repr__(self) -> str:
        return f"<SyncRun {self.run_id} experiment={self.experiment_id}>"

    def log_artifact(
        self, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> ArtifactInfo:
        """Upload a file to `<artifact_path>/<file name>`; returns once it is stored."""
        return self._owner._call(self._run.log_artifact(local_path, artifact_path))

    def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactInfo]:
        """Upload a directory's files (concurrently, on the loop thread); returns once all
        are stored."""
        return self._owner._call(self._run.log_artifacts(local_dir, artifact_path))

    def log_text(self, text: str, artifact_file: str) -> ArtifactInfo:
        return self._owner._call(self._run.log_text(text, artifact_file))

    def log_dict(self, obj: Any, artifact_file: str) -> ArtifactInfo:
        return self._owner._call(self._run.log_dict(obj, artifact_file))

    def end(
        self, status: str = "FINISHED", end_time: int | None = None, *, cancel_uploads: bool = False
    ) -> None:
        """Set a terminal status; returns once everything this run logged is durable."""
        self._owner._call(self._run.end(status, end_time, cancel_uploads=cancel_uploads))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._run._ended:
            self.end(exit_status(et))


class SyncTracker:
    """`with SyncTracker(uri) as tk:`: Tracker's methods, each blocking until its async twin
    is done on a background thread's event loop; options as for Tracker.

    Defaults to on_full="block": when the queue is full the logging thread waits for the
    writer. A normal exit, an exception, or SIGTERM (turned into SystemExit when no other
    handler is installed) drains the queue before the process ends.
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        on_full: str = "block",
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_age: float = DEFAULT_MAX_BATCH_AGE,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        grace: float = DEFAULT_GRACE,
        store: SqlEventStore | None = None,
        log: EventLog | None = None,
        database: Database | None = None,
        artifact_options: Mapping[str, Any] | None = None,
        default_artifact_root: str | None = None,
        create: bool = True,
        outbox_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._tracker = Tracker(
            uri, max_queue=max_queue, on_full=on_full, max_batch=max_batch,
            max_batch_age=max_batch_age, write_timeout=write_timeout, grace=grace, store=store,
            log=log, database=database, artifact_options=artifact_options,
            default_artifact_root=default_artifact_root, create=create, outbox_dir=outbox_dir,
            _threaded=True,
        )  # fmt: skip
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = True

    @property
    def uri(self) -> str:
        """The tracking URI in use (as resolved from the argument or the environment)."""
        return self._tracker.uri

    @property
    def display_uri(self) -> str:
        """Where runs are recorded, with any password masked: what to show people."""
        return self._tracker.display_uri

    def __repr__(self) -> str:
        return f"<SyncTracker {self._tracker.store!r}>"

    # -- the loop thread -------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop thread and wait for its result (its own deadlines apply)."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise InvalidStateError(
                "the tracker is not open: use `with SyncTracker(...) as tk:` or call tk.open()"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Open the store and start the writer on a new background loop. A failed open stops
        that loop again before the error propagates. Idempotent."""
        if not self._closed:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tracker-loop", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._tracker.open())
        except BaseException:
            self._stop_loop()
            raise
        self._closed = False
        atexit.register(self.close)
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):
                if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                    signal.signal(signal.SIGTERM, _sigterm_to_exit)

    def close(self, end_status: str = "FINISHED") -> None:
        """End runs left open (with `end_status`), drain the queue into the log and stop the
        background loop. Idempotent."""
        if self._closed:
            return
        atexit.unregister(self.close)
        try:
            self._call(self._tracker.aclose(end_status))
        finally:
            self._closed = True
            self._stop_loop()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exit_status(et))

    def flush(self, timeout: float | None = None, *, outbox_only: bool = False) -> int:
        """Return once everything queued before this call is durable and projected (for a
        tracking server: acknowledged by it, or with `outbox_only` in the local outbox);
        returns the log position reached."""
        return self._call(self._tracker.flush(timeout, outbox_only=outbox_only))

    def submit_commands(
        self, commands: Sequence[Command], *, check_stored: bool = True
    ) -> list[Outcome]:
        """Decide and store a batch of commands (see Tracker.submit_commands)."""
        return self._call(self._tracker.submit_commands(commands, check_stored=check_stored))

    def statistics(self) -> WriterStatistics:
        """The writer's statistics, read on the loop thread (the queue has no lock to read
        them from this one)."""

        async def read() -> WriterStatistics:
            return self._tracker.statistics()

        if self._loop is None:  # closed (or never opened): no writer runs to race with
            return self._tracker.statistics()
        return self._call(read())

    def wait_until(self, position: int, timeout: float = 10.0) -> None:
        """Wait until the views reflect the log up to `position` (read-your-writes)."""
        self._call(self._tracker.wait_until(position, timeout))

    # -- experiments -----------------------------------------------------------------------

    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> str:
        return self._call(self._tracker.create_experiment(name, artifact_location, tags))

    def get_experiment(self, experiment_id: str) -> Experiment:
        return self._call(self._tracker.get_experiment(experiment_id))

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        return self._call(self._tracker.get_experiment_by_name(name))

    def search_experiments(
        self,
        view_type: str = "ACTIVE_ONLY",
        max_results: int = 1000,
        page_token: str | None = None,
        *,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
    ) -> Page[Experiment]:
        return self._call(
            self._tracker.search_experiments(
                view_type, max_results, page_token, filter_string=filter_string, order_by=order_by
            )
        )

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        self._call(self._tracker.rename_experiment(experiment_id, new_name))

    def delete_experiment(self, experiment_id: str) -> None:
        self._call(self._tracker.delete_experiment(experiment_id))

    def restore_experiment(self, experiment_id: str) -> None:
        self._call(self._tracker.restore_experiment(experiment_id))

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        self._call(self._tracker.set_experiment_tag(experiment_id, key, value))

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        self._call(self._tracker.delete_experiment_tag(experiment_id, key))

    # -- runs ------------------------------------------------------------------------------

    def start_run(
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
    ) -> SyncRun:
        """As Tracker.start_run; `with tk.start_run(...) as run:` ends it on leaving."""
        started = self._tracker.start_run(
            experiment, experiment_id=experiment_id, name=name, params=params, tags=tags,
            run_id=run_id, parent_run_id=parent_run_id, start_time=start_time, user=user,
        )  # fmt: skip
        return SyncRun(self, self._call(started))

    def create_run(
        self,
        experiment_id: str = DEFAULT_EXPERIMENT_ID,
        *,
        run_name: str | None = None,
        start_time: int | None = None,
        tags: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        run_id: str | None = None,
    ) -> RunView:
        created = self._tracker.create_run(
            experiment_id, run_name=run_name, start_time=start_time, tags=tags, user_id=user_id,
            run_id=run_id,
        )  # fmt: skip
        return self._call(created)

    def get_run(self, run_id: str) -> RunView:
        return self._call(self._tracker.get_run(run_id))

    def search_runs(
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
        found = self._tracker.search_runs(
            experiment_ids, filter_string, status=status, view_type=view_type,
            run_view_type=run_view_type, max_results=max_results, order_by=order_by,
            page_token=page_token,
        )  # fmt: skip
        return self._call(found)

    def get_metric_history(
        self,
        run_id: str,
        key: str,
        *,
        max_results: int = DEFAULT_HISTORY_PAGE,
        page_token: str | None = None,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> Page[Metric]:
        return self._call(
            self._tracker.get_metric_history(
                run_id, key, max_results=max_results, page_token=page_token,
                start_step=start_step, end_step=end_step,
            )
        )  # fmt: skip

    def get_metric_series(
        self, run_id: str, key: str, *, start_step: int | None = None, end_step: int | None = None
    ) -> Points:
        """Every point of a metric as numpy arrays (see Tracker.get_metric_series)."""
        return self._call(
            self._tracker.get_metric_series(run_id, key, start_step=start_step, end_step=end_step)
        )

    def get_metric_buckets(
        self,
        run_ids: str | Sequence[str],
        key: str,
        *,
        start_step: int | None = None,
        end_step: int | None = None,
        buckets: int = DEFAULT_BUCKETS,
    ) -> list[MetricBuckets]:
        """A metric downsampled for a chart, per run (see Tracker.get_metric_buckets)."""
        return self._call(
            self._tracker.get_metric_buckets(
                run_ids, key, start_step=start_step, end_step=end_step, buckets=buckets
            )
        )

    def projection_errors(self) -> list[Any]:
        """Events a projection could not apply and skipped, with the reason."""
        return self._call(self._tracker.projection_errors())

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
    ) -> None:
        self._call(
            self._tracker.update_run(run_id, status=status, end_time=end_time, run_name=run_name)
        )

    def delete_run(self, run_id: str) -> None:
        self._call(self._tracker.delete_run(run_id))

    def restore_run(self, run_id: str) -> None:
        self._call(self._tracker.restore_run(run_id))

    # -- MlflowClient-style writes by run id -----------------------------------------------

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        self._call(self._tracker.log_batch(run_id, metrics, params, tags))

    def log_metric(
        self,
        run_id: str,
        key: str,
        value: float,
        timestamp: int | None = None,
        step: int | None = None,
    ) -> None:
        self._call(self._tracker.log_metric(run_id, key, value, timestamp, step))

    def log_param(self, run_id: str, key: str, value: Any) -> None:
        self._call(self._tracker.log_param(run_id, key, value))

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        self._call(self._tracker.set_tag(run_id, key, value))

    def delete_tag(self, run_id: str, key: str) -> None:
        self._call(self._tracker.delete_tag(run_id, key))

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetInput]) -> None:
        self._call(self._tracker.log_inputs(run_id, datasets))

    def set_terminated(
        self, run_id: str, status: str = "FINISHED", end_time: int | None = None
    ) -> None:
        self._call(self._tracker.set_terminated(run_id, status, end_time))

    # -- artifacts -------------------------------------------------------------------------

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[ArtifactEntry]:
        return self._call(self._tracker.list_artifacts(run_id, path))

    def download_artifacts(self, run_id: str, path: str, dst: str | os.PathLike[str]) -> Path:
        return self._call(self._tracker.download_artifacts(run_id, path, dst))

    # -- history ---------------------------------------------------------------------------

    def replay(self, run_id: str, until: int | datetime | None = None) -> Iterator[RecordedEvent]:
        """A run's events in order, as Tracker.replay: an iterator fetching them from the log a
        thousand at a time (`list(tk.replay(run_id))` for a list)."""
        events = self._tracker.replay(run_id, until)
        done = False
        try:
            while not done:
                chunk, done = self._call(_take(events, _REPLAY_CHUNK))
                yield from chunk
        finally:
            if not done and self._loop is not None and isinstance(events, AsyncGenerator):
                self._call(events.aclose())

    def run_state_at(self, run_id: str, at: int | datetime) -> RunView:
        """The run exactly as it was at a log position (int) or a moment (datetime)."""
        return self._call(self._tracker.run_state_at(run_id, at))


async def _take(events: AsyncIterator[RecordedEvent], n: int) -> tuple[list[RecordedEvent], bool]:
    """Up to `n` more events, and whether the iterator is exhausted."""
    out: list[RecordedEvent] = []
    try:
        while len(out) < n:
            out.append(await anext(events))
    except StopAsyncIteration:
        return out, True
    return out, False


def _sigterm_to_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
