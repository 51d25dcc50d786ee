"""The public surface, pinned, and the sync facade in a plain loop."""

from __future__ import annotations

from pathlib import Path

import pytest

import tracker


def test_public_api_is_pinned() -> None:
    """Changing what `import tracker` offers is a deliberate act: update this list with it."""
    assert sorted(tracker.__all__) == [
        "AlreadyExistsError", "ConcurrencyError", "DatasetInput", "DeadlineExceededError", "Experiment", "InvalidInputError",
        "InvalidStateError", "Metric", "MetricBuckets", "NotFoundError", "Page", "ParamConflictError", "QueueFullError",
        "Run", "RunData", "RunInfo", "RunNotActiveError", "RunView", "StoreError", "SyncRun", "SyncTracker", "Tracker", "TrackerError",
        "WriterError", "WriterStatistics",
    ]  # fmt: skip
    for name in tracker.__all__:
        assert getattr(tracker, name) is not None


def test_sync_facade_logs_from_plain_code(tmp_path: Path) -> None:
    """SyncTracker gives the same API without asyncio; block policy waits instead of dropping."""
    with tracker.SyncTracker(str(tmp_path), max_queue=50) as tk:
        with tk.start_run("sync", params={"a": 1}) as run:
            for i in range(3000):
                run.log_metric("m", i, step=i)
            with pytest.raises(tracker.ParamConflictError):
                run.log_param("a", 2)
            tk.flush()
            assert tk.statistics().points_written == 3000
        got = tk.get_run(run.run_id)
        assert got.info.status == "FINISHED" and got.data.metrics == {"m": 2999.0}
        assert len(tk.get_metric_history(run.run_id, "m", max_results=10_000)) == 3000


def test_uris(tmp_path: Path) -> None:
    """Directories, file: URIs and sqlite: URIs map to SQLite files; others are clear errors."""
    from tracker.stores import store_from_uri

    assert store_from_uri(str(tmp_path)).path == tmp_path / "tracker.db"  # type: ignore[attr-defined]
    assert store_from_uri(f"file:{tmp_path}").path == tmp_path / "tracker.db"  # type: ignore[attr-defined]
    assert str(store_from_uri("sqlite:///rel/x.db").path) == "rel/x.db"  # type: ignore[attr-defined]
    assert str(store_from_uri("sqlite:////abs/x.db").path) == "/abs/x.db"  # type: ignore[attr-defined]
    with pytest.raises(tracker.InvalidInputError, match="unsupported"):
        store_from_uri("gopher://x")
