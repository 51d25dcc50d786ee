"""Read models handed to callers, shaped like MLflow's entities (run.info, run.data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    creation_time: int
    last_update_time: int
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None
    lifecycle_stage: str
    artifact_uri: str

    @property
    def run_uuid(self) -> str:
        return self.run_id


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    value: float
    timestamp: int
    step: int


@dataclass(frozen=True, slots=True)
class RunData:
    metrics: dict[str, float] = field(default_factory=dict)
    """The latest value of each metric: largest (step, timestamp, value)."""
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    latest: dict[str, Metric] = field(default_factory=dict, compare=False)
    """The latest point of each metric, with its timestamp and step (MLflow's REST shape)."""


@dataclass(frozen=True, slots=True)
class DatasetInputInfo:
    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None
    profile: str | None
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class RunView:
    """A run as read from the views: MLflow's `run.info`, `run.data`, `run.inputs`."""

    info: RunInfo
    data: RunData
    inputs: tuple[DatasetInputInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of results; `next_page_token` is None on the last page."""

    items: list[T]
    next_page_token: str | None = None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
