"""Projections handle or deliberately ignore every event type; anything else is an error."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tracker.events import EVENT_TYPES, DomainEvent, RecordedEvent
from tracker.projections import default_projections
from tracker.projections.base import Context, UnhandledEventError
from tracker.stores.sqlite import SQLiteEventStore


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
