"""Many processes appending to one log at once, on every real backend."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable

import pytest

from tests.contract.workers import RUNS_PER_WRITER, append_worker, event_id, run_id
from tests.helpers import dump_views, runner_for
from tracker.events import run_stream
from tracker.stores.base import SqlEventStore

WRITERS = 8
EVENTS_PER_WRITER = 10_000
TIMEOUT = 120.0


@pytest.mark.slow
async def test_many_processes_append_every_event_once_in_commit_order(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """8 processes x 10,000 events: each event is stored once, a follower reading by position
    meanwhile sees every position exactly once and in order (no late commit below what it has
    read), and the views the writers' projectors built equal a rebuild from the log."""
    total = WRITERS * EVENTS_PER_WRITER
    store = store_factory()
    await store.open()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WRITERS + 1)
    procs = [
        ctx.Process(target=append_worker, args=(store_factory, w, EVENTS_PER_WRITER, start))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    try:
        await asyncio.to_thread(start.wait, TIMEOUT)
        log: list[tuple[int, bytes, str, int]] = []  # position, id, stream, sequence
        deadline = time.monotonic() + TIMEOUT
        while len(log) < total:
            last = log[-1][0] if log else 0
            page = await store.read(after=last, limit=5000)
            log.extend((e.position, e.event_id, e.stream_id, e.sequence) for e in page)
            if not page:
                if not any(p.is_alive() for p in procs) and await store.head() <= last:
                    break  # the writers are done or dead: the checks below say which
                assert time.monotonic() < deadline, f"follower stuck at {last} of {total}"
                # Read by position as a follower does (EventLog.follow polls the same way),
                # here with a stop condition of its own.
                await asyncio.sleep(0.002)
        for p in procs:
            await asyncio.to_thread(p.join, TIMEOUT)
            assert p.exitcode == 0, f"writer process failed with exit code {p.exitcode}"

        assert [e[0] for e in log] == list(range(1, total + 1))
        assert await store.head() == total
        ids = [e[1] for e in log]
        assert len(set(ids)) == total
        assert set(ids) == {
            event_id(w, n) for w in range(WRITERS) for n in range(EVENTS_PER_WRITER)
        }
        sequences: dict[str, list[int]] = {}
        for _, _, stream, seq in log:
            sequences.setdefault(stream, []).append(seq)
        assert len(sequences) == WRITERS * RUNS_PER_WRITER
        for w in range(WRITERS):
            for r in range(RUNS_PER_WRITER):
                seqs = sequences[run_stream(run_id(w, r))]
                assert seqs == list(range(1, len(seqs) + 1))

        projector = await runner_for(store)
        assert await projector.catch_up() == total
        projected = await dump_views(store)
        assert await projector.rebuild() == total
        assert await dump_views(store) == projected
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        await store.aclose()
