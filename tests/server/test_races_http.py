"""Races through the HTTP API between the workers of `tracker server --workers 2`, on SQLite and
on PostgreSQL: the command layer's invariants hold across processes sharing one store."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import ServerProcess
from tests.server.processes import (
    API,
    Call,
    backend_uri,
    history,
    log_metric,
    new_run,
    ok,
    requests_by_worker,
    running_server,
    send_together,
)

RACERS = 8
MAX_ROUNDS = 10
"""Rounds to run until one was answered by both workers (the kernel picks the worker of each
connection; a round that one worker answered alone is still checked, but proves less)."""


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """`tracker server --workers 2` on a fresh SQLite file or PostgreSQL schema."""
    with (
        backend_uri(request.param, tmp_path) as uri,
        running_server(tmp_path / "server", "--workers", "2", backend=uri) as server,
    ):
        yield server


def race(server: ServerProcess, rpcs: set[str], round_: Callable[[int], None]) -> None:
    """Run `round_(n)` (which sends its racing calls and checks their outcome) for n = 0, 1,
    ... until a round's calls to `rpcs` were answered by both workers."""
    routes = {f"{API}/{rpc}" for rpc in rpcs}
    for n in range(MAX_ROUNDS):
        before = requests_by_worker(server, routes)
        round_(n)
        after = requests_by_worker(server, routes)
        assert len(after) == 2, after
        if all(after[pid] > before.get(pid, 0.0) for pid in after):
            return
    raise AssertionError(f"in {MAX_ROUNDS} rounds, no race was answered by both workers")


def run_data(url: str, run_id: str) -> Any:
    """The run as runs/get answers it."""
    return ok(url, "runs/get", {"run_id": run_id}, "GET")["run"]


def test_one_experiment_name_created_by_racing_workers(server: ServerProcess) -> None:
    """Eight creates of one experiment name, released together across both workers: exactly
    one is answered 200, the others 400 RESOURCE_ALREADY_EXISTS, and one experiment exists."""

    def round_(n: int) -> None:
        name = f"race-{n}-{uuid.uuid4().hex[:8]}"
        replies = send_together(
            server.url, [Call("POST", "experiments/create", {"name": name})] * RACERS
        )
        won = [r for r in replies if r.status == 200]
        lost = [r for r in replies if r.status != 200]
        assert len(won) == 1, replies
        assert {(r.status, r.body["error_code"]) for r in lost} == {
            (400, "RESOURCE_ALREADY_EXISTS")
        }, lost
        assert all(name in r.body["message"] for r in lost), lost
        # The server does not filter searches yet: every experiment fits one page here.
        page = ok(server.url, "experiments/search", {"view_type": "ALL", "max_results": 1000})
        assert "next_page_token" not in page, page
        found = [e["experiment_id"] for e in page["experiments"] if e["name"] == name]
        assert found == [won[0].body["experiment_id"]]

    race(server, {"experiments/create"}, round_)


def test_one_value_of_a_param_stored_by_racing_workers(server: ServerProcess) -> None:
    """Eight different values of one param on one run, released together across both
    workers: exactly one is answered 200 and stored, the others 400 INVALID_PARAMETER_VALUE
    with MLflow's message naming the stored value."""
    run_id = new_run(server.url)

    def round_(n: int) -> None:
        key = f"p{n}"
        calls = [
            Call("POST", "runs/log-parameter", {"run_id": run_id, "key": key, "value": f"v{i}"})
            for i in range(RACERS)
        ]
        replies = send_together(server.url, calls)
        won = [i for i, r in enumerate(replies) if r.status == 200]
        assert len(won) == 1, replies
        winner = f"v{won[0]}"
        for i, reply in enumerate(replies):
            if i == won[0]:
                continue
            assert reply.status == 400, reply
            assert reply.body == {
                "error_code": "INVALID_PARAMETER_VALUE",
                "message": f"Changing param values is not allowed. Param with key='{key}' was "
                f"already logged with value='{winner}' for run ID='{run_id}'. Attempted "
                f"logging new value 'v{i}'.",
            }
        params = run_data(server.url, run_id)["data"]["params"]
        assert {"key": key, "value": winner} in params
        assert [p for p in params if p["key"] == key] == [{"key": key, "value": winner}]

    race(server, {"runs/log-parameter"}, round_)


def test_a_deleted_run_refuses_writes_on_every_worker(server: ServerProcess) -> None:
    """Once a run is deleted, writes to it are refused whichever worker answers, with
    MLflow's 400 INVALID_PARAMETER_VALUE, and nothing of them is stored; reads still work."""
    run_id = new_run(server.url)
    ok(server.url, "runs/log-metric", log_metric(run_id, "m", 0, 1.0).body)
    ok(server.url, "runs/delete", {"run_id": run_id})
    refused = {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": f"The run {run_id} must be in the 'active' state. Current state is deleted.",
    }

    def round_(n: int) -> None:
        points = [{"key": "b", "value": 1.0, "timestamp": 1, "step": 0}]
        calls = [log_metric(run_id, "m", n * RACERS + i) for i in range(RACERS - 3)] + [
            Call("POST", "runs/log-parameter", {"run_id": run_id, "key": "p", "value": "x"}),
            Call("POST", "runs/set-tag", {"run_id": run_id, "key": "t", "value": "x"}),
            Call("POST", "runs/log-batch", {"run_id": run_id, "metrics": points}),
        ]
        replies = send_together(server.url, calls)
        assert [(r.status, r.body) for r in replies] == [(400, refused)] * len(calls)

    rpcs = {"runs/log-metric", "runs/log-parameter", "runs/set-tag", "runs/log-batch"}
    race(server, rpcs, round_)
    run = run_data(server.url, run_id)
    assert run["info"]["lifecycle_stage"] == "deleted"
    data = run["data"]
    assert [(m["key"], m["value"]) for m in data["metrics"]] == [("m", 1.0)]
    assert "params" not in data or not data["params"]
    assert not [t for t in data.get("tags", []) if t["key"] == "t"]
    assert [(p["step"], p["value"]) for p in history(server.url, run_id, "m")] == [(0, 1.0)]


def test_writes_racing_a_delete_are_stored_exactly_when_accepted(server: ServerProcess) -> None:
    """A delete released together with log-metric calls on the same run, across both workers:
    every write answered 200 is stored, every other one is refused with MLflow's error and
    is not stored; the run ends deleted."""

    def round_(n: int) -> None:
        run_id = new_run(server.url)
        calls = [Call("POST", "runs/delete", {"run_id": run_id})]
        calls += [log_metric(run_id, "m", i) for i in range(RACERS - 1)]
        replies = send_together(server.url, calls)
        assert replies[0].status == 200, replies[0]
        accepted = set()
        for i, reply in enumerate(replies[1:]):
            if reply.status == 200:
                accepted.add(i)
            else:
                assert reply.status == 400, reply
                assert reply.body["error_code"] == "INVALID_PARAMETER_VALUE", reply
                assert "must be in the 'active' state" in reply.body["message"], reply
        assert {p["step"] for p in history(server.url, run_id, "m")} == accepted
        assert run_data(server.url, run_id)["info"]["lifecycle_stage"] == "deleted"

    race(server, {"runs/delete", "runs/log-metric"}, round_)


def test_reads_on_either_worker_see_the_other_workers_writes(server: ServerProcess) -> None:
    """A write answered by one worker is seen by the next read, whichever worker answers it
    (each read is on a connection of its own)."""
    run_id = new_run(server.url)
    for step in range(10):
        ok(server.url, "runs/log-metric", log_metric(run_id, "m", step).body)
        assert [p["step"] for p in history(server.url, run_id, "m")] == list(range(step + 1))
