"""The GIL hand-off to SQLite connection threads: one timer per event loop, counting the calls
in flight on every connection, and gone once none is left."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tracker.stores.sqlite import HANDOFF_EVERY, _Connection, _Handoff


async def test_one_handoff_per_loop_counts_calls_and_stops(tmp_path: Path) -> None:
    conns = [_Connection(tmp_path / f"{i}.db") for i in range(2)]
    for i, conn in enumerate(conns):
        await conn.connect(str(tmp_path / f"{i}.db"), [])
    gate = threading.Event()
    try:
        # Four calls on each connection: one runs on each thread, three wait in its queue.
        calls = [
            asyncio.create_task(conn.call(lambda c: gate.wait(10)))
            for conn in conns
            for _ in range(4)
        ]
        await asyncio.sleep(HANDOFF_EVERY * 4)
        handoff = _Handoff.of(asyncio.get_running_loop())
        assert handoff.calls == 8
        assert handoff.timer is not None  # one timer, however many calls
        gate.set()
        assert await asyncio.gather(*calls) == [True] * 8
        assert handoff.calls == 0
        await asyncio.sleep(HANDOFF_EVERY * 4)
        assert handoff.timer is None  # stopped at its next turn: an idle loop is left alone
    finally:
        gate.set()
        for conn in conns:
            await conn.close()
