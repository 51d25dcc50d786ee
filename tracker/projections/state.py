"""A run folded in memory from its own events: the basis of replay and time travel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from tracker.entities import DatasetInputInfo, Metric, RunData, RunInfo, RunView
from tracker.events import (
    ACTIVE,
    DELETED,
    PARENT_TAG,
    RUN_NAME_TAG,
    USER_TAG,
    ArtifactLogged,
    DatasetInputsLogged,
    DomainEvent,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentNameClaimed,
    ExperimentNameReleased,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    MetricsLogged,
    ParamsLogged,
    RunCreated,
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStatusChanged,
    TagDeleted,
    TagsSet,
    UnreadableEvent,
)
from tracker.projections.base import UnhandledEventError
from tracker.projections.metrics import Latest, latest_of

IGNORES: Final[frozenset[type[DomainEvent]]] = frozenset(
    {
        # A RunView has no artifact list, nor anything of its experiment but the stage.
        ArtifactLogged, ExperimentCreated, ExperimentRenamed, ExperimentTagSet,
        ExperimentTagDeleted, ExperimentNameClaimed, ExperimentNameReleased,
        # An event this code cannot decode: the views skip it too (recorded in
        # projection_errors), so the run as it was agrees with the run as the views show it.
        UnreadableEvent,
    }
)  # fmt: skip
"""Event types RunState.apply deliberately leaves out; it refuses any type it neither handles
nor lists here (tests/unit/test_projections.py checks that the two cover every type)."""


@dataclass(slots=True)
class RunState:
    """Mutable accumulator; `apply` events of one run in order, then `to_run()`."""

    run_id: str = ""
    experiment_id: str = ""
    run_name: str = ""
    user_id: str = ""
    status: str = "RUNNING"
    start_time: int = 0
    end_time: int | None = None
    lifecycle_stage: str = ACTIVE
    artifact_uri: str = ""
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    latest: dict[str, Latest] = field(default_factory=dict)
    inputs: dict[tuple[str, str], DatasetInputInfo] = field(default_factory=dict)
    events_applied: int = 0

    def apply(self, e: DomainEvent) -> None:
        """Fold one event. Every type is handled or listed in IGNORES; any other raises
        UnhandledEventError instead of being dropped."""
        if isinstance(e, MetricsLogged):
            for s in e.series:
                if len(s):
                    cand = latest_of(s)
                    cur = self.latest.get(s.key)
                    if cur is None or cand[0] > cur[0]:
                        self.latest[s.key] = cand
        elif isinstance(e, ParamsLogged):
            for k, v in e.params.items():
                self.params.setdefault(k, v)  # write-once: the first value stands, as in the views
        elif isinstance(e, TagsSet):
            for k, v in e.tags.items():
                self._set_tag(k, v)
        elif isinstance(e, TagDeleted):
            self.tags.pop(e.key, None)
        elif isinstance(e, RunStatusChanged):
            self.status = e.status
            if e.end_time is not None:
                self.end_time = e.end_time
        elif isinstance(e, RunCreated):
            self.run_id, self.experiment_id = e.run_id, e.experiment_id
            self.user_id, self.start_time, self.artifact_uri = (
                e.user_id,
                e.start_time,
                e.artifact_uri,
            )
            self.status, self.lifecycle_stage = "RUNNING", ACTIVE
            for k, v in e.tags.items():
                self._set_tag(k, v)
            self._set_tag(RUN_NAME_TAG, e.run_name)
            if e.user_id:
                self.tags.setdefault(USER_TAG, e.user_id)
            if e.parent_run_id:
                self.tags[PARENT_TAG] = e.parent_run_id
        elif isinstance(e, RunRenamed):
            self._set_tag(RUN_NAME_TAG, e.run_name)
        elif isinstance(e, RunDeleted):
            self.lifecycle_stage = DELETED
        elif isinstance(e, (RunRestored, ExperimentRestored)):
            self.lifecycle_stage = ACTIVE
        elif isinstance(e, ExperimentDeleted):
            self.lifecycle_stage = DELETED
        elif isinstance(e, DatasetInputsLogged):
            for d in e.datasets:
                self.inputs[(d.name, d.digest)] = DatasetInputInfo(
                    d.name, d.digest, d.source_type, d.source, d.schema, d.profile, dict(d.tags)
                )
        elif type(e) not in IGNORES:
            raise UnhandledEventError(
                f"RunState has no rule for {type(e).__name__}: handle it in RunState.apply "
                "or list it in tracker.projections.state.IGNORES"
            )
        self.events_applied += 1

    def _set_tag(self, key: str, value: str) -> None:
        self.tags[key] = value
        if key == RUN_NAME_TAG:
            self.run_name = value

    def to_run(self) -> RunView:
        info = RunInfo(
            self.run_id, self.experiment_id, self.run_name, self.user_id, self.status,
            self.start_time, self.end_time, self.lifecycle_stage, self.artifact_uri,
        )  # fmt: skip
        metrics = {k: v[1] for k, v in self.latest.items()}
        latest = {k: Metric(k, v[1], v[2], v[3]) for k, v in self.latest.items()}
        data = RunData(
            metrics=metrics, params=dict(self.params), tags=dict(self.tags), latest=latest
        )
        return RunView(info, data, tuple(self.inputs[k] for k in sorted(self.inputs)))
