"""The command handler's retry after a conflict: every decision is made again on fresh facts."""

from __future__ import annotations

import uuid

from tracker.commands import CreateExperiment, CreateRun, LogBatch
from tracker.errors import NotFoundError, ParamConflictError
from tracker.handler import Accepted, CommandHandler
from tracker.stores.memory import InMemoryEventLog


async def test_decisions_of_a_conflicted_attempt_are_made_again() -> None:
    """A handler whose cached facts are stale decides a batch, loses the append to a writer
    that came first, and decides the whole batch again: a refusal it made on its own unstored
    plan is not kept. Here another process stored lr=v1; the batch (lr=v0, lr=v1) first
    decides v0 accepted and v1 refused (conflicting with v0), then, on the facts as stored,
    v0 refused (conflicting with v1) and v1 a no-op."""
    log = InMemoryEventLog()
    await log.open()
    first = CommandHandler(log)
    run_id = uuid.uuid4().hex
    setup = await first.handle(
        [
            CreateExperiment(name="e", experiment_id="1", artifact_location="/tmp/a"),
            CreateRun(run_id=run_id, experiment_id="1", run_name="r", start_time=1),
        ]
    )
    assert all(isinstance(o, Accepted) for o in setup), setup
    other = CommandHandler(log)  # another process, on the same log
    [stored] = await other.handle([LogBatch(run_id=run_id, params={"lr": "v1"})])
    assert isinstance(stored, Accepted) and stored.events

    v0, v1 = await first.handle(
        [LogBatch(run_id=run_id, params={"lr": "v0"}), LogBatch(run_id=run_id, params={"lr": "v1"})]
    )
    assert first.conflicts == 1  # the stale attempt was made, and lost
    assert isinstance(v1, Accepted) and not v1.events
    assert isinstance(v0, ParamConflictError) and "v1" in str(v0), v0
    params = [r.event for r in await log.read() if type(r.event).__name__ == "ParamsLogged"]
    assert len(params) == 1  # only the first writer's lr, and no conflicting event


async def test_a_refusal_for_something_missing_is_never_decided_on_a_stale_cache() -> None:
    """A handler that found experiment 5 missing is told the truth once another process has
    created it, at once (not after a cache's time to live): what does not exist is re-read."""
    log = InMemoryEventLog()
    await log.open()
    first, other = CommandHandler(log), CommandHandler(log)
    run = CreateRun(run_id=uuid.uuid4().hex, experiment_id="5", run_name="r", start_time=1)
    [refused] = await first.handle([run])
    assert isinstance(refused, NotFoundError)
    [made] = await other.handle(
        [CreateExperiment(name="five", experiment_id="5", artifact_location="/tmp/a")]
    )
    assert isinstance(made, Accepted)
    [created] = await first.handle(
        [CreateRun(run_id=run.run_id, experiment_id="5", run_name="r", start_time=1)]
    )
    assert isinstance(created, Accepted) and created.events, created
