"""SyncTracker and SyncRun are Tracker and Run: every public member has a sync twin."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tracker import Run, SyncRun, SyncTracker, Tracker

# Async names whose sync twin is spelled differently, as in httpx's Client and AsyncClient.
RENAMED = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}
# Members with no sync twin on purpose, each with the reason.
ASYNC_ONLY = {
    "Tracker.store": "an asyncio object bound to the tracker's loop thread; not usable from sync code",
    "Tracker.log": "an asyncio object bound to the tracker's loop thread; not usable from sync code",
    "Tracker.database": "an asyncio object bound to the tracker's loop thread; not usable from sync code",
    "Tracker.handler": "an asyncio object bound to the tracker's loop thread; not usable from sync code",
    "Tracker.runner": "an asyncio object bound to the tracker's loop thread; not usable from sync code",
    "Tracker.queries": "builds SQL for a store session, which only exists on the loop thread",
}
# Constructor parameters that differ on purpose.
INIT_DIFFERENCES = {
    "_threaded": "private: the sync facade always runs the writer on its own thread",
    "on_full": 'defaults to "block": a synchronous loop can simply wait for the writer',
}


def _public(cls: type, instance: object) -> dict[str, Any]:
    """Public names of an instance (methods, properties, slots and plain attributes), plus
    the async dunders the sync side must mirror."""
    names = {n for n in dir(instance) if not n.startswith("_")}
    names |= {n for n in RENAMED if n.startswith("__") and hasattr(cls, n)}
    return {n: getattr(cls, n, None) for n in sorted(names)}


def _params(fn: Any, bound: bool) -> list[tuple[str, Any, Any, str]]:
    """(name, kind, default, annotation) of each parameter, `self` left out."""
    params = list(inspect.signature(fn).parameters.values())
    if not bound:
        params = params[1:]
    return [(p.name, p.kind, p.default, str(p.annotation)) for p in params]


def parity_problems(
    async_cls: type, async_obj: object, sync_cls: type, sync_obj: object
) -> list[str]:
    """What keeps `sync_obj` from being `async_obj`'s twin: members without a twin, twins
    that are coroutines, and parameters that differ (name, kind, default or annotation)."""
    problems: list[str] = []
    for name, member in _public(async_cls, async_obj).items():
        qualified = f"{async_cls.__name__}.{name}"
        if qualified in ASYNC_ONLY:
            continue
        twin_name = RENAMED.get(name, name)
        if not hasattr(sync_obj, twin_name):
            problems.append(f"{sync_cls.__name__} has no {twin_name} (twin of {qualified})")
            continue
        if member is None or not callable(member) or isinstance(member, property):
            continue  # a data attribute: present is enough
        twin = getattr(sync_obj, twin_name)
        if inspect.iscoroutinefunction(twin) or inspect.isasyncgenfunction(twin):
            problems.append(f"{sync_cls.__name__}.{twin_name} is async; the twin must block")
        expected = _params(member, bound=False)
        got = _params(twin, bound=True)
        if expected != got:
            problems.append(
                f"{sync_cls.__name__}.{twin_name} takes {got}, but {qualified} takes {expected}"
            )
    return problems


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[tuple[Tracker, SyncTracker, SyncRun]]:
    tk = Tracker(str(tmp_path / "async"))  # constructed, never opened: no I/O
    with SyncTracker(str(tmp_path / "sync")) as sync, sync.start_run("parity") as run:
        yield tk, sync, run


def test_every_tracker_method_has_a_sync_twin(
    opened: tuple[Tracker, SyncTracker, SyncRun],
) -> None:
    """Each public Tracker member has a blocking SyncTracker twin with the same parameters."""
    tk, sync, _ = opened
    assert parity_problems(Tracker, tk, SyncTracker, sync) == []


def test_every_run_method_has_a_sync_twin(opened: tuple[Tracker, SyncTracker, SyncRun]) -> None:
    """Each public Run member (log_*, artifacts, end, run_id...) has a SyncRun twin."""
    _, _, run = opened
    problems = parity_problems(Run, run._run, SyncRun, run)
    assert problems == []
    checked = [n for n in _public(Run, run._run) if callable(getattr(Run, n, None))]
    assert {"log_metric", "log_artifact", "log_dict", "end", "__aexit__"} <= set(checked)


def test_the_constructors_take_the_same_options() -> None:
    """SyncTracker(...) accepts Tracker's options, apart from the listed differences."""
    async_params = {p[0]: p for p in _params(Tracker.__init__, bound=False)}
    sync_params = {p[0]: p for p in _params(SyncTracker.__init__, bound=False)}
    for name in INIT_DIFFERENCES:
        async_params.pop(name, None)
        sync_params.pop(name, None)
    assert sync_params == async_params
    default = inspect.signature(SyncTracker.__init__).parameters["on_full"].default
    assert default == "block"


def test_a_new_async_method_fails_the_check_until_it_has_a_twin(
    opened: tuple[Tracker, SyncTracker, SyncRun],
) -> None:
    """The check is built by introspection: an async method added later is reported."""
    _, sync, _ = opened

    class Grown(Tracker):
        async def archive_run(self, run_id: str, *, reason: str = "") -> None:
            """A method added after the sync facade was written."""

        async def get_run(self, run_id: str, *, deleted: bool = False) -> Any:  # type: ignore[override]
            """A parameter added to an existing method."""

    grown = Grown.__new__(Grown)
    problems = parity_problems(Grown, grown, SyncTracker, sync)
    assert any("no archive_run" in p for p in problems), problems
    assert any("SyncTracker.get_run takes" in p for p in problems), problems
    assert len(problems) == 2, problems
