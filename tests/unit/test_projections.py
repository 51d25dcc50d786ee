"""Projections and the other folds of the log (a run's state for time travel, the facts
decisions read) handle or deliberately ignore every event type; anything else is an error."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tracker.commands import EVOLVE_IGNORES, Facts, evolve
from tracker.events import (
    EVENT_TYPES,
    ArtifactLogged,
    DatasetInput,
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
    MetricSeries,
    MetricsLogged,
    ParamsLogged,
    RecordedEvent,
    RunCreated,
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStatusChanged,
    TagDeleted,
    TagsSet,
    UnreadableEvent,
)
from tracker.projections import default_projections, state
from tracker.projections.base import Context, UnhandledEventError
from tracker.projections.state import RunState
from tracker.stores.sqlite import SQLiteEventStore

EXP = "1"
RUN = "a" * 32
# One event of every type, in an order where each one a fold handles changes what it folds into.
TIMELINE: tuple[DomainEvent, ...] = (
    ExperimentCreated(EXP, "exp", "file:///tmp/exp", 1, {"team": "a"}),
    ExperimentNameClaimed("exp", EXP),
    ExperimentTagSet(EXP, "k", "v"),
    ExperimentTagDeleted(EXP, "k"),
    ExperimentRenamed(EXP, "exp-2"),
    ExperimentNameReleased("exp", EXP),
    RunCreated(RUN, EXP, "run", 2, "user", "file:///tmp/exp/run", {"t": "1"}, None),
    ParamsLogged(RUN, {"lr": "0.1"}),
    TagsSet(RUN, {"b": "2"}),
    TagDeleted(RUN, "b"),
    RunRenamed(RUN, "run-2"),
    MetricsLogged(RUN, (MetricSeries("loss", [0], [3], [0.5]),)),
    DatasetInputsLogged(RUN, (DatasetInput("data", "d1", "local", "/data"),)),
    ArtifactLogged(RUN, "a.txt", 1, "0" * 64, "text/plain"),
    RunStatusChanged(RUN, "FINISHED", 4),
    RunDeleted(RUN, 5),
    RunRestored(RUN),
    ExperimentDeleted(EXP),
    ExperimentRestored(EXP),
)


def _run_state(target: Any, e: DomainEvent, position: int) -> None:
    target.apply(e)


def _comparable(target: Any) -> Any:
    out = copy.deepcopy(target)
    if isinstance(out, RunState):
        out.events_applied = 0  # counts every event, handled or ignored
    return out


FOLDS: dict[str, tuple[Callable[[], Any], Callable[[Any, DomainEvent, int], None], Any]] = {
    "RunState.apply": (RunState, _run_state, state.IGNORES),
    "commands.evolve": (Facts, evolve, EVOLVE_IGNORES),
}


@pytest.mark.parametrize("projection", default_projections(), ids=lambda p: p.name)
def test_every_event_type_is_handled_or_ignored(projection: object) -> None:
    """Handled and ignored together are exactly the event types (and never overlap)."""
    handled = set(projection.handlers)  # type: ignore[attr-defined]
    ignored = set(projection.ignores)  # type: ignore[attr-defined]
    assert handled | ignored == set(EVENT_TYPES.values())
    assert not handled & ignored


@dataclass(frozen=True, slots=True)
class _Novel(DomainEvent):
    @property
    def stream_id(self) -> str:
        return "novel-1"


async def test_an_event_type_nobody_listed_is_refused() -> None:
    """A type no projection handles nor ignores raises UnhandledEventError naming it."""
    rec = RecordedEvent(1, b"\x00" * 16, "novel-1", 1, 0, 1, _Novel())
    database = SQLiteEventStore(":memory:")
    for projection in default_projections():
        with pytest.raises(UnhandledEventError, match="_Novel"):
            await projection.apply(Context(None, database), [rec])  # type: ignore[arg-type]


def test_the_timeline_has_every_event_type() -> None:
    """The sample timeline below covers every event type (a new type needs an example)."""
    assert {type(e) for e in TIMELINE} == set(EVENT_TYPES.values())
    assert len(TIMELINE) == len(EVENT_TYPES)


@pytest.mark.parametrize("fold", sorted(FOLDS))
def test_folds_handle_or_ignore_every_event_type(fold: str) -> None:
    """Folding one event of every type: each type the fold lists as ignored leaves its state
    exactly as it was, every other type changes it, and none raises; the ignored list names
    only event types (UnreadableEvent aside, a documented skip of RunState)."""
    new, apply, ignored = FOLDS[fold]
    assert set(ignored) - {UnreadableEvent} <= set(EVENT_TYPES.values())
    target = new()
    for position, e in enumerate(TIMELINE, start=1):
        before = _comparable(target)
        apply(target, e, position)
        changed = _comparable(target) != before
        assert changed is (type(e) not in ignored), (type(e).__name__, changed)


@pytest.mark.parametrize("fold", sorted(FOLDS))
def test_folds_refuse_an_event_type_nobody_listed(fold: str) -> None:
    """A type a fold neither handles nor ignores raises UnhandledEventError naming it."""
    new, apply, _ = FOLDS[fold]
    with pytest.raises(UnhandledEventError, match="_Novel"):
        apply(new(), _Novel(), 1)


def test_run_state_skips_an_unreadable_event() -> None:
    """An event this code cannot decode is skipped by time travel, as the views skip it."""
    run = RunState()
    run.apply(TIMELINE[6])
    before = _comparable(run)
    run.apply(UnreadableEvent("EventFromTheFuture", 1, "unknown event type"))
    assert _comparable(run) == before
