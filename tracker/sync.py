"""SyncTracker: the same API for plain synchronous training loops; the writer runs on a
background thread's event loop, and log_* stay plain appends on the caller's thread."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import signal
import threading
from collections.abc import Awaitable, Coroutine, Mapping
from types import FrameType, TracebackType
from typing import Any, Self, TypeVar

from tracker.client import Run, Tracker, exit_status
from tracker.entities import Experiment, Metric, Page, RunView
from tracker.writer import WriterStatistics

T = TypeVar("T")


class SyncRun:
    """A run for synchronous code: log_* are the async Run's own (thread-safe) appends."""

    def __init__(self, owner: SyncTracker, run: Run) -> None:
        self._owner = owner
        self._run = run
        self.run_id = run.run_id
        self.experiment_id = run.experiment_id
        self.log_metric = run.log_metric
        self.log_metrics = run.log_metrics
        self.log_param = run.log_param
        self.log_params = run.log_params
        self.set_tag = run.set_tag
        self.set_tags = run.set_tags
        self.delete_tag = run.delete_tag
        self.log_batch = run.log_batch

    def end(self, status: str = "FINISHED") -> None:
        self._owner._call(self._run.end(status))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._run._ended:
            self.end(exit_status(et))


class SyncTracker:
    """`with SyncTracker(uri) as tk:` — like Tracker, without asyncio in user code.

    Defaults to on_full="block": when the queue is full the logging thread waits for the
    writer. A normal exit, an exception, or SIGTERM (turned into SystemExit when no other
    handler is installed) drains the queue before the process ends.
    """

    def __init__(self, uri: str | None = None, *, on_full: str = "block", **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tracker-loop", daemon=True
        )
        self._tracker = Tracker(uri, on_full=on_full, _threaded=True, **options)
        self._closed = True

    def _call(self, coro: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    def open(self) -> None:
        if not self._closed:
            return
        self._thread.start()
        self._call(self._tracker.open())
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
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._call(self._tracker.aclose(end_status))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exit_status(et))

    def start_run(self, experiment: str | None = None, **kwargs: Any) -> SyncRun:
        return SyncRun(self, self._call(self._tracker.start_run(experiment, **kwargs)))

    def flush(self, timeout: float | None = None) -> int:
        return self._call(self._tracker.flush(timeout))

    def statistics(self) -> WriterStatistics:
        return self._tracker.statistics()

    def create_experiment(self, name: str, artifact_location: str | None = None,
                          tags: Mapping[str, Any] | None = None) -> str:  # fmt: skip
        return self._call(self._tracker.create_experiment(name, artifact_location, tags))

    def get_experiment(self, experiment_id: str) -> Experiment:
        return self._call(self._tracker.get_experiment(experiment_id))

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        return self._call(self._tracker.get_experiment_by_name(name))

    def get_run(self, run_id: str) -> RunView:
        return self._call(self._tracker.get_run(run_id))

    def search_runs(self, experiment_ids: Any = None, **kwargs: Any) -> Page[RunView]:
        return self._call(self._tracker.search_runs(experiment_ids, **kwargs))

    def get_metric_history(self, run_id: str, key: str, **kwargs: Any) -> Page[Metric]:
        return self._call(self._tracker.get_metric_history(run_id, key, **kwargs))


def _sigterm_to_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
