"""Opening a store: what is refused, what is never created, and that a failed open cleans up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import tracker
from tracker.errors import NotFoundError, StoreError
from tracker.stores.base import SqlEventStore
from tracker.stores.sqlite import SQLiteEventStore

REPO = Path(__file__).resolve().parents[2]


async def test_create_false_on_an_empty_database_raises_not_found(
    store_factory: Callable[[], SqlEventStore],
) -> None:
    """A read-only open of a database without tracker's schema says so and creates nothing."""
    store = store_factory()
    with pytest.raises(NotFoundError, match="no tracker store"):
        await store.open(create=False)
    store = store_factory()
    await store.open()  # still empty: the refused open made no table
    assert await store.schema_version() >= 1
    await store.aclose()


async def test_an_mlflow_database_is_recognised(store_factory: Callable[[], SqlEventStore]) -> None:
    """A database holding MLflow's tables is refused with a message naming MLflow."""
    store = store_factory()
    await store.open()
    async with store.transaction() as s:
        await s.execute_raw("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        await s.execute_raw("DROP TABLE tracker_schema")
    await store.aclose()
    other = store_factory()
    with pytest.raises(StoreError, match="MLflow tracking database"):
        await other.open()


async def test_create_false_never_makes_a_directory(tmp_path: Path) -> None:
    """A read of a missing embedded store raises NotFoundError and leaves no trace."""
    where = tmp_path / "nowhere"
    with pytest.raises(NotFoundError, match="no tracker store"):
        async with tracker.Tracker(str(where), create=False):
            pass
    assert not where.exists()


@pytest.mark.parametrize("content", [b"not a database at all" * 1000, b""])
def test_a_failed_open_exits_promptly(tmp_path: Path, content: bytes) -> None:
    """After a store fails to open, the process exits by itself: no worker thread is left."""
    (tmp_path / "store").mkdir()
    if content:
        (tmp_path / "store" / "tracker.db").write_bytes(content)
    else:
        (tmp_path / "store" / "tracker.db").mkdir()  # a directory where the file should be
    script = textwrap.dedent(
        """
        import asyncio, sys, tracker
        async def main():
            async with tracker.Tracker(sys.argv[1]):
                pass
        try:
            asyncio.run(main())
        except tracker.TrackerError as exc:
            print(type(exc).__name__, exc)
            sys.exit(3)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "store")],
        capture_output=True, text=True, timeout=30, env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "StoreError" in done.stdout and "tracker.db" in done.stdout


async def test_a_corrupt_file_is_a_store_error_not_an_outage(tmp_path: Path) -> None:
    """Random bytes are reported as an unusable file (not retried as if the store were down)."""
    path = tmp_path / "tracker.db"
    path.write_bytes(b"\x00garbage" * 4096)
    store = SQLiteEventStore(path)
    with pytest.raises(StoreError, match="not a usable SQLite file") as info:
        await store.open()
    assert type(info.value) is StoreError
