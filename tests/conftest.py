"""Shared fixtures: real stores for every backend the machine has."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

# Each backend: a factory that makes a fresh, isolated, unopened store. Backends that need a
# server are added by tests/backends.py when their server answers (and fail the run in CI).
from tests.backends import BACKENDS
from tracker.stores.base import EventLog, SqlEventStore
from tracker.stores.memory import InMemoryEventLog
from tracker.stores.sqlite import SQLiteEventStore


@pytest.fixture(params=sorted(BACKENDS))
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], SqlEventStore]]:
    """A factory of stores that all point at one fresh database of the backend."""
    async with BACKENDS[request.param](tmp_path) as factory:
        yield factory


@pytest.fixture
async def store(store_factory: Callable[[], SqlEventStore]) -> AsyncIterator[SqlEventStore]:
    s = store_factory()
    await s.open()
    yield s
    await s.aclose()


@pytest.fixture(params=[*sorted(BACKENDS), "memory"])
async def event_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventLog]:
    """An open event log of every kind: each SQL backend, and the in-memory log of
    tracker.testing (the log contract holds for all of them)."""
    if request.param == "memory":
        log: EventLog = InMemoryEventLog()
        await log.open()
        yield log
        await log.aclose()
        return
    async with BACKENDS[request.param](tmp_path) as factory:
        store = factory()
        await store.open()
        yield store
        await store.aclose()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteEventStore]:
    s = SQLiteEventStore(tmp_path / "tracker.db")
    await s.open()
    yield s
    await s.aclose()
