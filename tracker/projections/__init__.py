"""Projections: folds of the event log into the views that answer reads."""

from __future__ import annotations

from tracker.projections.base import Projection
from tracker.projections.experiments import ExperimentsProjection
from tracker.projections.metrics import MetricsProjection
from tracker.projections.runs import RunsProjection


def default_projections() -> list[Projection]:
    """The views a tracker keeps: experiments, runs, metrics."""
    return [ExperimentsProjection(), RunsProjection(), MetricsProjection()]


__all__ = [
    "ExperimentsProjection",
    "MetricsProjection",
    "Projection",
    "RunsProjection",
    "default_projections",
]
