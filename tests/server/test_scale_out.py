"""Scale-out: two `tracker server` processes on different ports sharing one PostgreSQL schema.
Each client sees its own writes at once through its server, and the other server's within
the projector's lag."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import ServerProcess, wait_for
from tests.server.processes import (
    Reply,
    call,
    fresh_postgres_schema,
    history,
    log_metric,
    new_run,
    ok,
    postgres_uri,
    running_server,
)

LAG_DEADLINE = 10.0
"""How long a server may take to show what the other one wrote."""
STEPS = 6


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two single-worker servers, each on a port of its own, on one fresh PostgreSQL schema."""
    with fresh_postgres_schema() as schema:
        uri = postgres_uri(schema)
        with (
            running_server(tmp_path / "a", backend=uri) as a,
            running_server(tmp_path / "b", backend=uri) as b,
        ):
            assert a.url != b.url
            yield a, b


def get_run(url: str, run_id: str) -> Reply:
    return call(url, "runs/get", {"run_id": run_id}, "GET")


def shown(reply: Reply) -> dict[str, Any]:
    """What a runs/get answer shows of a run: its metrics, params and user tags."""
    data = reply.body["run"]["data"]
    return {
        "metrics": {m["key"]: m["value"] for m in data.get("metrics", [])},
        "params": {p["key"]: p["value"] for p in data.get("params", [])},
        "tags": {t["key"]: t["value"] for t in data.get("tags", []) if t["key"][:7] != "mlflow."},
    }


def steps(url: str, run_id: str, key: str) -> list[int]:
    return [p["step"] for p in history(url, run_id, key)]


@pytest.mark.parametrize("direction", ["a-then-b", "b-then-a"])
def test_own_writes_at_once_the_other_servers_within_the_lag(
    servers: tuple[ServerProcess, ServerProcess], direction: str
) -> None:
    """Writes through one server are read back through it at once, after every single write;
    the other server shows them within the deadline, and then accepts writes to the same run
    (it decides them against the shared log), which the first server shows in turn."""
    mine, other = servers if direction == "a-then-b" else servers[::-1]
    experiment_id = ok(mine.url, "experiments/create", {"name": "shared"})["experiment_id"]
    got = ok(mine.url, "experiments/get-by-name", {"experiment_name": "shared"}, "GET")
    assert got["experiment"]["experiment_id"] == experiment_id
    run_id = new_run(mine.url, experiment_id)
    for step in range(STEPS):
        ok(mine.url, "runs/log-metric", log_metric(run_id, "loss", step).body)
        assert steps(mine.url, run_id, "loss") == list(range(step + 1))
    ok(mine.url, "runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"})
    ok(mine.url, "runs/set-tag", {"run_id": run_id, "key": "team", "value": "mine"})
    expected = {"metrics": {"loss": STEPS - 1.0}, "params": {"lr": "0.1"}, "tags": {"team": "mine"}}
    assert shown(get_run(mine.url, run_id)) == expected

    def seen_by_the_other() -> bool:
        reply = get_run(other.url, run_id)
        return reply.status == 200 and shown(reply) == expected

    wait_for(seen_by_the_other, timeout=LAG_DEADLINE, what="the other server to show the run")
    assert steps(other.url, run_id, "loss") == list(range(STEPS))
    # The other server refuses what the shared log forbids, and accepts the rest.
    taken = call(other.url, "experiments/create", {"name": "shared"})
    assert (taken.status, taken.body["error_code"]) == (400, "RESOURCE_ALREADY_EXISTS"), taken
    conflict = call(other.url, "runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "1"})
    assert (conflict.status, conflict.body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    ok(other.url, "runs/log-parameter", {"run_id": run_id, "key": "batch", "value": "32"})
    ok(other.url, "runs/log-metric", log_metric(run_id, "loss", STEPS, -1.0).body)
    assert shown(get_run(other.url, run_id))["params"] == {"lr": "0.1", "batch": "32"}
    wait_for(
        lambda: (
            shown(get_run(mine.url, run_id))["params"] == {"lr": "0.1", "batch": "32"}
            and steps(mine.url, run_id, "loss") == list(range(STEPS + 1))
        ),
        timeout=LAG_DEADLINE,
        what="the first server to show the other's writes",
    )


def test_both_servers_logging_to_one_run_end_up_with_every_point(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    """Both servers log to one run in turn; each shows its own points at once, and both end
    up with the whole history."""
    a, b = servers
    run_id = new_run(a.url)
    wait_for(lambda: get_run(b.url, run_id).status == 200, timeout=LAG_DEADLINE,
             what="server B to show the run")  # fmt: skip
    for step in range(STEPS):
        server = (a, b)[step % 2]
        ok(server.url, "runs/log-metric", log_metric(run_id, "m", step).body)
        assert step in steps(server.url, run_id, "m")
    for server in (a, b):
        wait_for(lambda s=server: steps(s.url, run_id, "m") == list(range(STEPS)),
                 timeout=LAG_DEADLINE, what=f"{server.url} to show every point")  # fmt: skip
