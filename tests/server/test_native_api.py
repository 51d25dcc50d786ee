"""The native API in-process: batches of commands, a run's event pages, and live event streams."""

from __future__ import annotations

import asyncio
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.server.conftest import app_config
from tracker import wire
from tracker.commands import Command, CreateRun, DeleteTag, LogBatch
from tracker.events import MetricSeries
from tracker.server import create_app
from tracker.server.app import serve

Client = TestClient[Any, Any]
NATIVE = "/api/tracker/v1"
MLFLOW = "/api/2.0/mlflow"
DEADLINE = 20.0
HEARTBEAT = 0.2


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[Client]:
    """The app in-process, with quick heartbeats and polls, and at most 50 commands a batch."""
    config = app_config(
        tmp_path, stream_heartbeat=HEARTBEAT, stream_poll_interval=0.02, max_batch_commands=50
    )
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


def new_run(experiment_id: str = "0", **params: str) -> CreateRun:
    return CreateRun(
        run_id=uuid.uuid4().hex, experiment_id=experiment_id, run_name="native",
        start_time=1_700_000_000_000, params=params,
    )  # fmt: skip


def points(run_id: str, key: str = "loss", first: int = 0, n: int = 3, **kw: Any) -> LogBatch:
    steps = list(range(first, first + n))
    times = [1_700_000_000_000 + s for s in steps]
    return LogBatch(
        run_id=run_id, series=(MetricSeries(key, steps, times, [s / 2 for s in steps]),), **kw
    )


async def send(http: Client, commands: Sequence[Command], status: int = 200) -> Any:
    return await post_raw(http, {"commands": [wire.encode(c) for c in commands]}, status)


async def post_raw(http: Client, body: Any, status: int, path: str = "commands") -> Any:
    response = await http.post(f"{NATIVE}/{path}", data=orjson.dumps(body),
                               headers={"Content-Type": "application/json"})  # fmt: skip
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json"
    return orjson.loads(text)


async def run_events(http: Client, run_id: str, **params: Any) -> Any:
    response = await http.get(f"{NATIVE}/runs/{run_id}/events", params=params)
    assert response.status == 200, await response.text()
    return await response.json()


async def all_positions(http: Client, run_id: str) -> list[int]:
    page = await run_events(http, run_id, limit=10_000)
    assert "next_after" not in page
    return [e["position"] for e in page["events"]]


async def get_run(http: Client, run_id: str, status: int = 200) -> Any:
    response = await http.get(f"{MLFLOW}/runs/get", params={"run_id": run_id})
    assert response.status == status, await response.text()
    return await response.json()


# -- commands ------------------------------------------------------------------------------


async def test_a_batch_is_stored_and_readable_through_mlflows_api(http: Client) -> None:
    """A run created, metric series, params and tags logged in one batch: every command gets a
    position, and MLflow's get-run shows all of it."""
    create = new_run(lr="0.1")
    batch = [
        create,
        points(create.run_id, "loss", n=5, params={"epochs": "3"}),
        points(create.run_id, "acc", n=2),
        LogBatch(run_id=create.run_id, tags={"team": "vision", "stage": "dev"}),
    ]
    answer = await send(http, batch)
    positions = [r["position"] for r in answer["results"]]
    assert len(positions) == 4 and all(p > 0 for p in positions)
    assert positions == sorted(positions)
    run = (await get_run(http, create.run_id))["run"]
    assert run["info"]["run_id"] == create.run_id
    # get-run gives each metric's latest value (the steps are checked in the history below).
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics == {"loss": 2.0, "acc": 0.5}
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params == {"lr": "0.1", "epochs": "3"}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["team"] == "vision" and tags["stage"] == "dev"
    history = await http.get(f"{MLFLOW}/metrics/get-history",
                             params={"run_id": create.run_id, "metric_key": "loss"})  # fmt: skip
    assert [m["step"] for m in (await history.json())["metrics"]] == [0, 1, 2, 3, 4]


async def test_the_events_alias_takes_batches_too(http: Client) -> None:
    """POST /api/tracker/v1/events is the same endpoint as /commands."""
    create = new_run()
    answer = await post_raw(http, {"commands": [wire.encode(create)]}, 200, path="events")
    assert "position" in answer["results"][0]
    await get_run(http, create.run_id)


async def test_a_resent_batch_stores_nothing_twice(http: Client) -> None:
    """The same batch sent again, and twice at once, answers positions and adds no event."""
    create = new_run()
    batch = [create, points(create.run_id, n=4), LogBatch(run_id=create.run_id, tags={"a": "1"})]
    first = await send(http, batch)
    stored = await all_positions(http, create.run_id)
    assert len(stored) == 3
    again = await send(http, batch)
    assert all("position" in r for r in again["results"]), again
    both = await asyncio.gather(send(http, batch), send(http, batch))
    assert all("position" in r for answer in both for r in answer["results"]), both
    assert await all_positions(http, create.run_id) == stored
    assert [r["position"] for r in first["results"]] == stored
    history = await http.get(f"{MLFLOW}/metrics/get-history",
                             params={"run_id": create.run_id, "metric_key": "loss"})  # fmt: skip
    assert len((await history.json())["metrics"]) == 4


async def test_a_batch_sent_twice_at_once_is_stored_once(http: Client) -> None:
    """Two copies of a new batch racing each other: both answered, one stored."""
    create = new_run()
    batch = [create, points(create.run_id, n=4)]
    answers = await asyncio.gather(*(send(http, batch) for _ in range(3)))
    assert all("position" in r for answer in answers for r in answer["results"]), answers
    assert len(await all_positions(http, create.run_id)) == 2


async def test_a_malformed_command_refuses_the_whole_batch(http: Client) -> None:
    """One command that cannot be decoded: a 400 naming its index, and nothing stored."""
    create = new_run()
    bad = wire.encode(points(create.run_id))
    bad["series"][0]["blob"] = "not base64!"
    body = {"commands": [wire.encode(create), bad]}
    answer = await post_raw(http, body, 400)
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "commands[1]" in answer["message"] and "blob" in answer["message"]
    await get_run(http, create.run_id, 404)
    for command in ({"type": "Nope", "id": "00" * 16}, {"type": "CreateRun"}, "text", None):
        answer = await post_raw(http, {"commands": [wire.encode(create), command]}, 400)
        assert "commands[1]" in answer["message"], answer
    await get_run(http, create.run_id, 404)


async def test_a_run_with_its_own_artifact_uri_is_refused(http: Client) -> None:
    """A client cannot choose where a run's artifacts live: with file:/// it could read any
    file the server can through the artifact routes. The batch is refused, nothing stored."""
    run = new_run()
    chosen = CreateRun(
        run_id=run.run_id, experiment_id="0", run_name="x", start_time=1,
        artifact_uri="file:///",
    )  # fmt: skip
    answer = await send(http, [chosen], 400)
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "commands[0]" in answer["message"] and "artifact_uri" in answer["message"]
    await get_run(http, run.run_id, 404)


async def test_two_commands_with_one_id_refuse_the_batch(http: Client) -> None:
    """A batch that gives two commands one id (the log would keep only one) is a 400."""
    create = new_run()
    log_ = points(create.run_id)
    twin = wire.encode(log_) | {"id": wire.encode(create)["id"]}
    answer = await post_raw(http, {"commands": [wire.encode(create), twin]}, 400)
    assert "commands[1]" in answer["message"] and "commands[0]" in answer["message"]
    await get_run(http, create.run_id, 404)


async def test_a_refused_command_fails_alone(http: Client) -> None:
    """A param conflict and a missing tag are refused in MLflow's error codes; the other
    commands of the batch are stored."""
    create = new_run(lr="0.1")
    await send(http, [create])
    conflict = LogBatch(run_id=create.run_id, params={"lr": "0.2"})
    answer = await send(http, [
        conflict,
        LogBatch(run_id=create.run_id, tags={"kept": "yes"}),
        DeleteTag(run_id=create.run_id, key="never-set"),
        points(create.run_id, n=2),
    ])  # fmt: skip
    refused, tagged, missing, logged = answer["results"]
    assert refused["error_code"] == "INVALID_PARAMETER_VALUE", refused
    assert "lr" in refused["message"]
    assert missing["error_code"] == "RESOURCE_DOES_NOT_EXIST", missing
    assert "position" in tagged and "position" in logged
    run = (await get_run(http, create.run_id))["run"]
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"lr": "0.1"}
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["kept"] == "yes"
    assert [m["key"] for m in run["data"]["metrics"]] == ["loss"]


async def test_a_command_for_a_missing_run_is_refused(http: Client) -> None:
    """Writing to a run that does not exist: RESOURCE_DOES_NOT_EXIST for that command."""
    answer = await send(http, [points(uuid.uuid4().hex)])
    assert answer["results"][0]["error_code"] == "RESOURCE_DOES_NOT_EXIST"


async def test_bad_requests_are_4xx_in_mlflows_format(http: Client, tmp_path: Path) -> None:
    """Invalid JSON, a body that is not a batch, unknown fields, too many commands, and a
    body over the size limit: each a 4xx with MLflow's error fields, nothing stored."""
    response = await http.post(f"{NATIVE}/commands", data=b'{"commands": [',
                               headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status == 400
    assert (await response.json())["error_code"] == "INVALID_PARAMETER_VALUE"
    response = await http.post(f"{NATIVE}/commands", data=b"\xff\xfe{}",
                               headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status == 400
    bodies: list[Any] = [[], {"commands": {}}, {"commands": None}, {}, {"commands": [], "x": 1}]
    for body in bodies:
        answer = await post_raw(http, body, 400)
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
    creates = [new_run() for _ in range(51)]
    answer = await send(http, creates, 400)
    assert "at most 50" in answer["message"]
    await get_run(http, creates[0].run_id, 404)
    small = app_config(tmp_path / "small", max_request_bytes=4096)
    async with TestClient(TestServer(create_app(small))) as client:
        create = new_run()
        big = [create, points(create.run_id, n=2000)]
        response = await client.post(f"{NATIVE}/commands", data=orjson.dumps(
            {"commands": [wire.encode(c) for c in big]}),
            headers={"Content-Type": "application/json"})  # fmt: skip
        assert response.status == 413, await response.text()
        answer = await response.json()
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE" and "smaller" in answer["message"]
        await get_run(client, create.run_id, 404)


# -- a run's events ------------------------------------------------------------------------


async def test_run_events_page_with_after_and_limit(http: Client) -> None:
    """Pages of `limit` events after `after`, chained by next_after, cover the run's events
    once each, in order; metric points come as columns."""
    create = new_run()
    await send(http, [create, *(points(create.run_id, first=10 * i) for i in range(6))])
    everything = await run_events(http, create.run_id)
    assert len(everything["events"]) == 7 and "next_after" not in everything
    first = everything["events"][0]
    assert first["type"] == "RunCreated" and first["sequence"] == 1
    assert first["data"]["run_id"] == create.run_id and first["stream_id"] == f"run-{create.run_id}"
    metric = everything["events"][1]
    assert metric["type"] == "MetricsLogged"
    assert metric["data"]["series"] == [{"key": "loss", "steps": [0, 1, 2],
        "timestamps": [1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_002],
        "values": [0.0, 0.5, 1.0]}]  # fmt: skip
    seen: list[int] = []
    after = 0
    pages = 0
    while True:
        page = await run_events(http, create.run_id, after=after, limit=3)
        seen += [e["position"] for e in page["events"]]
        pages += 1
        if "next_after" not in page:
            break
        after = page["next_after"]
        assert pages < 10
    assert seen == [e["position"] for e in everything["events"]]
    assert pages == 3
    middle = everything["events"][3]["position"]
    tail = await run_events(http, create.run_id, after=middle)
    assert [e["position"] for e in tail["events"]] == seen[4:]


async def test_non_finite_values_come_as_protobufs_strings(http: Client) -> None:
    """NaN and the infinities in a page are "NaN", "Infinity", "-Infinity", as in MLflow's
    JSON, not the null a JSON encoder would write."""
    create = new_run()
    nan = LogBatch(
        run_id=create.run_id,
        series=(
            MetricSeries("x", [0, 1, 2, 3], [1, 2, 3, 4], [math.nan, math.inf, -math.inf, 1.5]),
        ),
    )
    await send(http, [create, nan])
    page = await run_events(http, create.run_id)
    assert page["events"][1]["data"]["series"][0]["values"] == ["NaN", "Infinity", "-Infinity", 1.5]


async def test_run_events_bad_parameters_and_unknown_runs(http: Client) -> None:
    """A limit out of 1..10000 or an `after` that is no position is a 400; an unknown run 404."""
    create = new_run()
    await send(http, [create])
    for params in ({"limit": "0"}, {"limit": "10001"}, {"limit": "x"}, {"after": "-1"}):
        response = await http.get(f"{NATIVE}/runs/{create.run_id}/events", params=params)
        assert response.status == 400, params
        answer = await response.json()
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert next(iter(params)) in answer["message"]
    response = await http.get(f"{NATIVE}/runs/{uuid.uuid4().hex}/events")
    assert response.status == 404
    assert (await response.json())["error_code"] == "RESOURCE_DOES_NOT_EXIST"


# -- live streams ----------------------------------------------------------------------------


class Stream:
    """A server-sent-events response read block by block; heartbeat comments are counted."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.heartbeats = 0

    async def block(self) -> list[str]:
        lines: list[str] = []
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\r\n")
            if line:
                lines.append(line)
            elif lines:
                return lines

    async def event(self, timeout: float = DEADLINE) -> tuple[int, dict[str, Any]]:
        """The next event: its id and its data."""
        async with asyncio.timeout(timeout):
            while True:
                lines = await self.block()
                if all(line.startswith(":") for line in lines):
                    self.heartbeats += 1
                    continue
                fields = dict(line.split(": ", 1) for line in lines)
                assert "event" not in fields, lines  # plain messages, never an error event
                return int(fields["id"]), orjson.loads(fields["data"])

    async def events(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        return [await self.event() for _ in range(n)]


async def open_stream(http: Client, headers: dict[str, str] | None = None, **params: Any) -> Stream:
    response = await http.get(f"{NATIVE}/events/stream", params=params, headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return Stream(response)


async def test_a_stream_delivers_events_that_commit_after_it_opened(http: Client) -> None:
    """A run's stream sends its history, then each event as it commits, with its position as
    the event id, and nothing of other runs."""
    create = new_run()
    other = new_run()
    await send(http, [create, other])
    stream = await open_stream(http, run_id=create.run_id)
    position, data = await stream.event()
    assert data["type"] == "RunCreated" and data["position"] == position
    await send(http, [points(other.run_id), points(create.run_id, n=2)])
    await send(http, [LogBatch(run_id=create.run_id, tags={"t": "1"})])
    later = await stream.events(2)
    assert [d["type"] for _, d in later] == ["MetricsLogged", "TagsSet"]
    assert all(d["data"]["run_id"] == create.run_id for _, d in later)
    ids = [position] + [p for p, _ in later]
    assert ids == await all_positions(http, create.run_id)
    stream.response.close()


async def test_a_stream_never_skips_events_committed_concurrently(http: Client) -> None:
    """Many batches committing at once while the stream follows: every event arrives, once,
    in position order."""
    create = new_run()
    await send(http, [create])
    stream = await open_stream(http, run_id=create.run_id)
    await stream.event()
    await asyncio.gather(*(send(http, [points(create.run_id, first=10 * i)]) for i in range(20)))
    got = [p for p, _ in await stream.events(20)]
    assert got == (await all_positions(http, create.run_id))[1:]
    stream.response.close()


async def test_a_stream_resumes_with_last_event_id(http: Client) -> None:
    """Reconnecting with Last-Event-ID (which wins over `after`) continues with exactly the
    events after it: no gap, no duplicate."""
    create = new_run()
    await send(http, [create, *(points(create.run_id, first=10 * i) for i in range(3))])
    stream = await open_stream(http, run_id=create.run_id)
    first = [p for p, _ in await stream.events(2)]
    stream.response.close()
    await send(http, [points(create.run_id, first=100), points(create.run_id, first=200)])
    resumed = await open_stream(
        http, headers={"Last-Event-ID": str(first[-1])}, run_id=create.run_id, after=0
    )
    rest = [p for p, _ in await resumed.events(4)]
    assert first + rest == await all_positions(http, create.run_id)
    await send(http, [points(create.run_id, first=300)])
    position, _ = await resumed.event()
    assert position == (await all_positions(http, create.run_id))[-1]
    resumed.response.close()
    started = await open_stream(http, run_id=create.run_id, after=rest[-1])
    assert (await started.event())[0] == position
    started.response.close()


async def test_a_quiet_stream_sends_heartbeats(http: Client) -> None:
    """While nothing commits, comment lines keep the connection alive (every HEARTBEAT s)."""
    create = new_run()
    await send(http, [create])
    stream = await open_stream(http, run_id=create.run_id)
    await stream.event()
    with pytest.raises(TimeoutError):
        await stream.event(timeout=HEARTBEAT * 5)
    assert stream.heartbeats >= 2
    stream.response.close()


async def test_an_experiment_stream_sees_the_runs_of_that_experiment(http: Client) -> None:
    """Following an experiment: its own events and those of its runs, whether created before
    or after the stream opened, and nothing of other experiments' runs."""
    response = await http.post(f"{MLFLOW}/experiments/create", json={"name": "followed"})
    experiment_id = (await response.json())["experiment_id"]
    before = new_run(experiment_id)
    await send(http, [before])
    head = (await run_events(http, before.run_id))["events"][-1]["position"]
    stream = await open_stream(http, experiment_id=experiment_id, after=head)
    after = new_run(experiment_id)
    elsewhere = new_run("0")
    await send(http, [elsewhere, points(elsewhere.run_id), points(before.run_id), after])
    await http.post(f"{MLFLOW}/experiments/set-experiment-tag",
                    json={"experiment_id": experiment_id, "key": "k", "value": "v"})  # fmt: skip
    got = await stream.events(3)
    assert [(d["type"], d["data"].get("run_id")) for _, d in got] == [
        ("MetricsLogged", before.run_id),
        ("RunCreated", after.run_id),
        ("ExperimentTagSet", None),
    ]
    assert [p for p, _ in got] == sorted(p for p, _ in got)
    stream.response.close()
    whole = await open_stream(http, experiment_id=experiment_id)
    assert (await whole.event())[1]["type"] == "ExperimentCreated"
    whole.response.close()


async def test_stream_bad_parameters(http: Client) -> None:
    """Neither or both of run_id and experiment_id, a bad Last-Event-ID, or an unknown run or
    experiment: answered in MLflow's error format before any stream starts."""
    create = new_run()
    await send(http, [create])
    cases: list[tuple[dict[str, str], dict[str, str], int]] = [
        ({}, {}, 400),
        ({"run_id": create.run_id, "experiment_id": "0"}, {}, 400),
        ({"run_id": create.run_id}, {"Last-Event-ID": "abc"}, 400),
        ({"run_id": create.run_id, "after": "-3"}, {}, 400),
        ({"run_id": uuid.uuid4().hex}, {}, 404),
        ({"experiment_id": "424242"}, {}, 404),
    ]
    for params, headers, status in cases:
        response = await http.get(f"{NATIVE}/events/stream", params=params, headers=headers)
        assert response.status == status, (params, await response.text())
        assert "error_code" in await response.json()


async def test_shutdown_ends_open_streams(tmp_path: Path) -> None:
    """`serve` stopping with a stream open ends the stream and returns long before its
    shutdown timeout (streams are not waited for as requests are)."""
    config = app_config(tmp_path, stream_heartbeat=HEARTBEAT, stream_poll_interval=0.02)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    server = asyncio.create_task(serve(create_app(config), sock, 60.0, stop))
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        create = new_run()
        response = await session.post(f"{base}{NATIVE}/commands",
                                      json={"commands": [wire.encode(create)]})  # fmt: skip
        assert response.status == 200
        streaming = await session.get(f"{base}{NATIVE}/events/stream",
                                      params={"run_id": create.run_id})  # fmt: skip
        stream = Stream(streaming)
        await stream.event()
        started = time.monotonic()
        stop.set()
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(EOFError):
                while True:
                    await stream.block()
            await server
        assert time.monotonic() - started < 10.0
