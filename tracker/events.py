"""Immutable, past-tense domain events for experiments and runs, and their envelopes."""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass, field
from typing import ClassVar, Final

import numpy as np

from tracker import series
from tracker.series import ColumnLike, Floats, Ints, columns

RUN_STATUSES: Final = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
TERMINAL_STATUSES: Final = frozenset({"FINISHED", "FAILED", "KILLED"})
ACTIVE: Final = "active"
DELETED: Final = "deleted"
DEFAULT_EXPERIMENT_ID: Final = "0"
DEFAULT_EXPERIMENT_NAME: Final = "Default"
# MLflow's reserved tags that the views and decisions keep in step with run fields.
RUN_NAME_TAG: Final = "mlflow.runName"
USER_TAG: Final = "mlflow.user"
PARENT_TAG: Final = "mlflow.parentRunId"


def experiment_stream(experiment_id: str) -> str:
    """The stream an experiment's events belong to."""
    return f"experiment-{experiment_id}"


def run_stream(run_id: str) -> str:
    """The stream a run's events belong to."""
    return f"run-{run_id}"


def experiment_name_stream(name: str) -> str:
    """The stream that serialises claims on one experiment name: every create or rename that
    takes a name appends there with an expected sequence number, so two processes cannot both
    take it."""
    return f"experiment-name-{hashlib.sha256(name.encode()).hexdigest()[:40]}"


def new_run_id() -> str:
    """A run id as MLflow makes them: 32 lowercase hex characters."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """Base of every domain event. Subclasses are facts, named in the past tense."""

    SCHEMA_VERSION: ClassVar[int] = 1

    @property
    def stream_id(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ExperimentEvent(DomainEvent):
    experiment_id: str

    @property
    def stream_id(self) -> str:
        return experiment_stream(self.experiment_id)


@dataclass(frozen=True, slots=True)
class ExperimentCreated(ExperimentEvent):
    name: str
    artifact_location: str
    creation_time: int
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExperimentRenamed(ExperimentEvent):
    new_name: str


@dataclass(frozen=True, slots=True)
class ExperimentDeleted(ExperimentEvent):
    pass


@dataclass(frozen=True, slots=True)
class ExperimentRestored(ExperimentEvent):
    pass


@dataclass(frozen=True, slots=True)
class ExperimentTagSet(ExperimentEvent):
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class ExperimentTagDeleted(ExperimentEvent):
    key: str


@dataclass(frozen=True, slots=True)
class ExperimentNameClaimed(DomainEvent):
    """`name` now belongs to the experiment (on create or rename); its stream is the name's."""

    name: str
    experiment_id: str

    @property
    def stream_id(self) -> str:
        return experiment_name_stream(self.name)


@dataclass(frozen=True, slots=True)
class ExperimentNameReleased(DomainEvent):
    """The experiment was renamed away from `name`, which is free again."""

    name: str
    experiment_id: str

    @property
    def stream_id(self) -> str:
        return experiment_name_stream(self.name)


@dataclass(frozen=True, slots=True)
class RunEvent(DomainEvent):
    run_id: str

    @property
    def stream_id(self) -> str:
        return run_stream(self.run_id)


@dataclass(frozen=True, slots=True)
class RunCreated(RunEvent):
    """Version 2: v1 called the name `name` and had no parent_run_id (see serialization)."""

    SCHEMA_VERSION: ClassVar[int] = 2
    experiment_id: str
    run_name: str
    start_time: int
    user_id: str
    artifact_uri: str
    tags: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunStatusChanged(RunEvent):
    status: str
    end_time: int | None = None


@dataclass(frozen=True, slots=True)
class RunRenamed(RunEvent):
    run_name: str


@dataclass(frozen=True, slots=True)
class RunDeleted(RunEvent):
    deleted_time: int


@dataclass(frozen=True, slots=True)
class RunRestored(RunEvent):
    pass


@dataclass(frozen=True, slots=True)
class ParamsLogged(RunEvent):
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class TagsSet(RunEvent):
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class TagDeleted(RunEvent):
    key: str


@dataclass(frozen=True, slots=True, init=False, eq=False)
class MetricSeries:
    """Points of one metric key, in the order they were logged: three numpy columns of equal
    length, 1-D, C-contiguous and read-only (steps and timestamps int64, values float64).

    The constructor takes array('q')/array('d'), sequences of numbers or ndarrays and converts
    them (tracker.series.int_column and float_column); arrays and ndarrays of the right type
    are shared, not copied, so the caller must not change them afterwards (an array.array can
    no longer be resized). Wrong shapes, types or lengths raise InvalidInputError."""

    key: str
    steps: Ints
    timestamps: Ints
    values: Floats
    packed: bytes | None = field(default=None, repr=False)
    """The compressed column blob, once made (see serialization.pack_series)."""

    def __init__(
        self,
        key: str,
        steps: ColumnLike,
        timestamps: ColumnLike,
        values: ColumnLike,
        packed: bytes | None = None,
    ) -> None:
        cols = columns(steps, timestamps, values, what=f"metric {key!r}")
        for name, col in zip(("steps", "timestamps", "values"), cols, strict=True):
            view = col.view()  # read-only without freezing an ndarray the caller still holds
            view.flags.writeable = False
            object.__setattr__(self, name, view)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "packed", packed)

    def __reduce__(self) -> tuple[type[MetricSeries], tuple[object, ...]]:
        # Through __init__, so that a copy's columns are read-only too.
        return MetricSeries, (self.key, self.steps, self.timestamps, self.values, self.packed)

    def __len__(self) -> int:
        return len(self.values)

    def points(self) -> list[tuple[int, int, float]]:
        """(step, timestamp, value) triples in logged order, as Python ints and floats."""
        return list(
            zip(self.steps.tolist(), self.timestamps.tolist(), self.values.tolist(), strict=True)
        )

    def latest(self) -> tuple[int, int, float]:
        """The point MLflow calls latest: largest (step, timestamp, value), NaN above numbers
        (see point_rank), as Python numbers. Raises ValueError on an empty series."""
        i = series.latest(self.steps, self.timestamps, self.values)
        return int(self.steps[i]), int(self.timestamps[i]), float(self.values[i])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MetricSeries):
            return NotImplemented
        # NaN != NaN, so compare values bit for bit.
        return (
            self.key == other.key
            and np.array_equal(self.steps, other.steps)
            and np.array_equal(self.timestamps, other.timestamps)
            and np.array_equal(self.values.view(np.uint64), other.values.view(np.uint64))
        )

    __hash__ = None  # type: ignore[assignment]


def point_rank(point: tuple[int, int, float]) -> tuple[int, int, int, float]:
    """Sort key for (step, timestamp, value): NaN ranks above every number."""
    step, ts, value = point
    if math.isnan(value):
        return (step, ts, 1, 0.0)
    return (step, ts, 0, value)


@dataclass(frozen=True, slots=True, eq=True)
class MetricsLogged(RunEvent):
    series: tuple[MetricSeries, ...]

    @property
    def point_count(self) -> int:
        return sum(len(s) for s in self.series)


@dataclass(frozen=True, slots=True)
class DatasetInput:
    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None = None
    profile: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DatasetInputsLogged(RunEvent):
    datasets: tuple[DatasetInput, ...]


@dataclass(frozen=True, slots=True)
class ArtifactLogged(RunEvent):
    """Appended only after the artifact's bytes are stored."""

    path: str
    size: int
    sha256: str
    content_type: str


EVENT_TYPES: Final[dict[str, type[DomainEvent]]] = {
    cls.__name__: cls
    for cls in (
        ExperimentCreated,
        ExperimentRenamed,
        ExperimentDeleted,
        ExperimentRestored,
        ExperimentTagSet,
        ExperimentTagDeleted,
        ExperimentNameClaimed,
        ExperimentNameReleased,
        RunCreated,
        RunStatusChanged,
        RunRenamed,
        RunDeleted,
        RunRestored,
        ParamsLogged,
        TagsSet,
        TagDeleted,
        MetricsLogged,
        DatasetInputsLogged,
        ArtifactLogged,
    )
}


@dataclass(frozen=True, slots=True)
class UnreadableEvent(DomainEvent):
    """Stands in for a stored event this code cannot decode (a newer type or schema version, a
    corrupt payload): readers skip it explicitly and say why, instead of stopping. It is never
    stored."""

    type_name: str
    version: int
    error: str

    @property
    def stream_id(self) -> str:
        raise TypeError("an UnreadableEvent has no stream: it was never decoded")


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event on its way into the log: positions are given by the store."""

    event_id: bytes
    stream_id: str
    sequence: int
    recorded_at: int
    """Wall-clock time in milliseconds since the epoch."""
    event: DomainEvent

    @staticmethod
    def new_id() -> bytes:
        return uuid.uuid4().bytes


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as read back from the log, with its global position."""

    position: int
    event_id: bytes
    stream_id: str
    sequence: int
    recorded_at: int
    schema_version: int
    event: DomainEvent
    payload: bytes | None = field(default=None, compare=False, repr=False)
    """The stored bytes, when at hand (the metric views index packed points inside them)."""
