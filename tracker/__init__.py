"""tracker: an async, event-sourced experiment tracker in the MLflow family."""

from tracker.client import Run, Tracker
from tracker.entities import Experiment, Metric, Page, RunData, RunInfo, RunView
from tracker.errors import (
    AlreadyExistsError,
    ConcurrencyError,
    DeadlineExceededError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    ParamConflictError,
    QueueFullError,
    RunNotActiveError,
    StoreError,
    TrackerError,
    WriterError,
)
from tracker.events import DatasetInput
from tracker.projections.downsampling import MetricBuckets
from tracker.sync import SyncRun, SyncTracker
from tracker.writer import WriterStatistics

__all__ = [
    "AlreadyExistsError",
    "ConcurrencyError",
    "DatasetInput",
    "DeadlineExceededError",
    "Experiment",
    "InvalidInputError",
    "InvalidStateError",
    "Metric",
    "MetricBuckets",
    "NotFoundError",
    "Page",
    "ParamConflictError",
    "QueueFullError",
    "Run",
    "RunData",
    "RunInfo",
    "RunNotActiveError",
    "RunView",
    "StoreError",
    "SyncRun",
    "SyncTracker",
    "Tracker",
    "TrackerError",
    "WriterError",
    "WriterStatistics",
]
