"""tracker.testing: a real tracker on an in-memory log and in-memory views."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracker import ParamConflictError
from tracker.testing import memory_tracker


async def test_a_memory_tracker_keeps_every_rule_and_nothing_on_disk(tmp_path: Path) -> None:
    """Runs, metrics, params' write-once rule and histories work; nothing is written to disk
    but the artifacts it was told to put in tmp_path."""
    async with memory_tracker(default_artifact_root=str(tmp_path / "art")) as tk:
        run = await tk.start_run("unit")
        for i in range(1000):
            run.log_metric("loss", 1 / (i + 1), step=i)
        run.log_param("lr", 0.1)
        await run.log_text("hi", "notes.txt")
        await tk.flush()
        with pytest.raises(ParamConflictError):
            await tk.log_param(run.run_id, "lr", 0.2)
        assert (await tk.get_run(run.run_id)).data.params == {"lr": "0.1"}
        history = await tk.get_metric_history(run.run_id, "loss", max_results=10)
        assert [p.step for p in history] == list(range(10))
        assert len(await tk.get_metric_series(run.run_id, "loss")) == 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # noqa: ASYNC240
