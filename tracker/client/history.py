"""A run's history: its events replayed in order, and the run as it was at any moment."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from tracker.client.core import Core
from tracker.entities import RunView
from tracker.errors import InvalidInputError, NotFoundError
from tracker.events import (
    ExperimentDeleted,
    ExperimentRestored,
    RecordedEvent,
    experiment_stream,
    run_stream,
)
from tracker.projections.state import RunState


class History(Core):
    async def replay(
        self, run_id: str, until: int | datetime | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """A run's events in order, each with its global position. `until` is inclusive: an
        int is a log position, a datetime a wall-clock time."""
        self._check_open()
        await self._sync()
        until_position, until_time = _until(until)
        async for rec in self.log.iter_stream(
            run_stream(run_id), until_position=until_position, until_time=until_time
        ):
            yield rec

    async def run_state_at(self, run_id: str, at: int | datetime) -> RunView:
        """The run exactly as it was at a log position (int) or a moment (datetime)."""
        own = [rec async for rec in self.replay(run_id, until=at)]
        if not own:
            raise NotFoundError(f"Run with id={run_id} did not exist at {at}")
        state = RunState()
        state.apply(own[0].event)
        # Deleting or restoring the experiment cascades to its runs: fold those in too.
        until_position, until_time = _until(at)
        cascade = [
            rec
            async for rec in self.log.iter_stream(
                experiment_stream(state.experiment_id),
                until_position=until_position,
                until_time=until_time,
            )
            if isinstance(rec.event, ExperimentDeleted | ExperimentRestored)
            and rec.position > own[0].position
        ]
        for rec in sorted(own[1:] + cascade, key=lambda r: r.position):
            state.apply(rec.event)
        return state.to_run()


def _until(until: int | datetime | None) -> tuple[int | None, int | None]:
    if until is None:
        return None, None
    if isinstance(until, datetime):
        return None, int(until.timestamp() * 1000)
    if isinstance(until, bool) or not isinstance(until, int) or until < 0:
        raise InvalidInputError(
            f"until must be a log position (int >= 0) or a datetime, got {until!r}"
        )
    return until, None
