"""Tracker: the async client, composed of its parts (each module of this package is one)."""

from __future__ import annotations

from tracker.client.artifacts import Artifacts
from tracker.client.history import History
from tracker.client.metrics import Metrics


class Tracker(Artifacts, Metrics, History):
    """The async client. `async with Tracker(uri) as tk:` opens the store, starts the writer,
    and on exit drains everything queued into the log.

    The parts, by module of tracker/client/: core (what it is made of, open/close, flush,
    statistics, waiting for views), experiments, runs (start/resume/end, reads, MLflow-style
    writes by run id), handle (the Run handle and its log_* hot path), metrics (histories),
    artifacts (list/download), history (replay, time travel). See `Core` for the options.
    """
