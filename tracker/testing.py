"""Test doubles on the real interfaces, for users' own tests: a tracker that keeps nothing."""

from __future__ import annotations

from typing import Any

from tracker.client import Tracker
from tracker.stores.memory import InMemoryEventLog
from tracker.stores.sqlite import SQLiteEventStore

__all__ = ["InMemoryEventLog", "memory_tracker"]


def memory_tracker(**options: Any) -> Tracker:
    """A Tracker whose log is an InMemoryEventLog and whose views live in an in-memory SQLite
    database: every rule and read of a real one, nothing on disk, nothing kept after close.
    Artifacts still go to `default_artifact_root` (give one: a temporary directory)."""
    options.setdefault("default_artifact_root", "memory-artifacts")
    return Tracker(log=InMemoryEventLog(), database=SQLiteEventStore(":memory:"), **options)
