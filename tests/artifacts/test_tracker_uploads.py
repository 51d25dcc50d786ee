"""A run's uploads through the Tracker: end() waits for them, and stores under odd paths work."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from tracker import QueueFullError, Tracker
from tracker.artifacts.paths import parse_artifact_uri
from tracker.artifacts.runs import ArtifactUploadCancelledError
from tracker.events import ArtifactLogged, NewEvent, RecordedEvent
from tracker.stores.sqlite import SQLiteEventStore


async def _artifact_events(tk: Tracker, run_id: str) -> list[ArtifactLogged]:
    return [r.event async for r in tk.replay(run_id) if isinstance(r.event, ArtifactLogged)]


async def test_end_waits_for_an_upload_started_as_a_task(tmp_path: Path) -> None:
    """README's `asyncio.create_task(run.log_artifact(...))` then `await run.end()`: the file is
    stored, recorded before the run ends, and the task succeeds."""
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(8 << 20))
    async with Tracker(str(tmp_path / "store")) as tk:
        run = await tk.start_run("uploads")
        task = asyncio.create_task(run.log_artifact(big, "checkpoints"))
        await asyncio.sleep(0)  # the upload has started
        await run.end()
        info = await task
        assert info.size == 8 << 20
        recorded = await _artifact_events(tk, run.run_id)
        assert [e.path for e in recorded] == ["checkpoints/model.bin"]
        events = [r async for r in tk.replay(run.run_id)]
        kinds = [type(r.event).__name__ for r in events]
        assert kinds.index("ArtifactLogged") < kinds.index("RunStatusChanged")
        listed = await tk.list_artifacts(run.run_id, "checkpoints")
        assert [(e.path, e.size) for e in listed] == [("checkpoints/model.bin", 8 << 20)]


async def test_end_can_cancel_uploads_cleanly(tmp_path: Path) -> None:
    """With cancel_uploads, an upload in flight is cancelled: its task says so, nothing is
    stored under its name, and nothing is recorded."""
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(32 << 20))
    async with Tracker(str(tmp_path / "store")) as tk:
        run = await tk.start_run("uploads")
        task = asyncio.create_task(run.log_artifact(big))
        await asyncio.sleep(0)
        await run.end(cancel_uploads=True)
        with pytest.raises(ArtifactUploadCancelledError):
            await task
        assert await _artifact_events(tk, run.run_id) == []
        assert await tk.list_artifacts(run.run_id) == []
        with pytest.raises(Exception, match="has ended"):
            await run.log_text("late", "late.txt")


class HeldStore(SQLiteEventStore):
    """A real SQLite store whose appends wait while `gate` is clear, as a slow database
    would: the writer holds its batch, and the client queue stays as full as it was left."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def append(self, events: Sequence[NewEvent]) -> list[RecordedEvent]:
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        return await super().append(events)


async def test_an_upload_is_recorded_even_when_the_queue_is_full(tmp_path: Path) -> None:
    """With on_full="raise" and the queue full, an upload that finishes is still recorded
    (never stored and left unrecorded): the record bypasses the full-queue policy, as flush
    barriers do, and is in the log and the listing after flush."""
    store = HeldStore(tmp_path / "store" / "tracker.db")
    async with Tracker(
        store=store, max_queue=4, on_full="raise", default_artifact_root=str(tmp_path / "art")
    ) as tk:
        run = await tk.start_run("full")
        store.gate.clear()
        run.set_tag("first", "taken by the writer, which then waits")
        await asyncio.wait_for(store.waiting.wait(), 30)
        with pytest.raises(QueueFullError):
            for i in range(100):
                run.set_tag(f"t{i}", "v")
        info = await run.log_text("hello", "notes/a.txt")
        store.gate.set()
        await tk.flush()
        assert [e.path for e in await _artifact_events(tk, run.run_id)] == ["notes/a.txt"]
        listed = await tk.list_artifacts(run.run_id, "notes")
        assert [(e.path, e.size) for e in listed] == [("notes/a.txt", info.size)]
        assert (await tk.get_run(run.run_id)).data.tags["first"].startswith("taken")


@pytest.mark.parametrize("name", ["run #1", "100%25 done", "with space", "naïve ü", "q?x"])
async def test_stores_under_directories_with_odd_names(tmp_path: Path, name: str) -> None:
    """A store (and its artifacts) under a directory whose name holds '#', '%', spaces, '?'
    or non-ASCII letters works end to end, and files land exactly under that directory."""
    root = tmp_path / name
    async with Tracker(str(root)) as tk:
        run = await tk.start_run("odd")
        await run.log_text("hello", "notes/a.txt")
        got = await tk.download_artifacts(run.run_id, "notes/a.txt", tmp_path / "out")
        assert got.read_text() == "hello"
        where = Path(parse_artifact_uri(run.artifact_uri).path)
        assert where.is_relative_to(root.resolve())
        assert (where / "notes" / "a.txt").read_text() == "hello"
