"""The UI's own reads, in-process: artifacts wherever a run keeps them, the run at a position."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tracker.server import ServerConfig, create_app

API = "/api/2.0/mlflow"
NATIVE = "/api/tracker/v1"


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = ServerConfig(
        backend_store_uri=str(tmp_path / "mlruns"),
        artifacts_destination=str(tmp_path / "artifacts"),
    )
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def _run(http: TestClient[Any, Any]) -> dict[str, Any]:
    exp = await (await http.post(f"{API}/experiments/create", json={"name": "e"})).json()
    answer = await http.post(f"{API}/runs/create", json={"experiment_id": exp["experiment_id"]})
    run: dict[str, Any] = (await answer.json())["run"]["info"]
    return run


async def test_a_proxied_artifact_is_served_inline_or_as_a_download(
    http: TestClient[Any, Any],
) -> None:
    """A run whose artifacts go through the proxy (mlflow-artifacts:/) has them read from the
    destination; inline by default, sandboxed, and as an attachment with ?download=1."""
    run = await _run(http)
    assert run["artifact_uri"].startswith("mlflow-artifacts:/")
    prefix = run["artifact_uri"].removeprefix("mlflow-artifacts:/").strip("/")
    put = await http.put(f"/api/2.0/mlflow-artifacts/artifacts/{prefix}/dir/a.json", data=b"{}")
    assert put.status == 200
    url = f"{NATIVE}/runs/{run['run_id']}/artifacts/dir/a.json"
    inline = await http.get(url)
    assert inline.status == 200 and await inline.read() == b"{}"
    assert inline.headers["Content-Security-Policy"] == "sandbox"
    assert "Content-Disposition" not in inline.headers
    download = await http.get(url + "?download=1")
    assert download.headers["Content-Disposition"] == "attachment; filename=a.json"
    missing = await http.get(f"{NATIVE}/runs/{run['run_id']}/artifacts/nope.txt")
    assert missing.status == 404
    climbing = await http.get(f"{NATIVE}/runs/{run['run_id']}/artifacts/..%2F..%2Fx")
    assert climbing.status == 400


async def test_a_proxying_server_serves_no_artifact_outside_its_destination(
    http: TestClient[Any, Any], tmp_path: Path
) -> None:
    """An experiment's artifact location is a client's to choose: a server that proxies
    artifacts must not read files from wherever it points (here a directory of the server's
    own files), only from its destination."""
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("not yours")
    body = {"name": "elsewhere", "artifact_location": secret.as_uri()}
    exp = await (await http.post(f"{API}/experiments/create", json=body)).json()
    answer = await http.post(f"{API}/runs/create", json={"experiment_id": exp["experiment_id"]})
    run = (await answer.json())["run"]["info"]
    assert run["artifact_uri"].startswith(secret.as_uri())
    (secret / run["run_id"] / "artifacts").mkdir(parents=True)
    (secret / run["run_id"] / "artifacts" / "secret.txt").write_text("not yours")
    refused = await http.get(f"{NATIVE}/runs/{run['run_id']}/artifacts/secret.txt")
    assert refused.status == 404
    assert b"not yours" not in await refused.read()


async def test_the_state_endpoint_replays_to_a_position(http: TestClient[Any, Any]) -> None:
    """The run at a position has what was logged up to it, not later; a bad position is a
    400 that says what to give."""
    run = await _run(http)
    head = (await (await http.get(f"{NATIVE}/log/head")).json())["position"]
    await http.post(
        f"{API}/runs/log-batch",
        json={"run_id": run["run_id"], "params": [{"key": "lr", "value": "0.1"}],
              "metrics": [{"key": "loss", "value": 0.5, "timestamp": 7, "step": 3}]},
    )  # fmt: skip
    before = await (await http.get(f"{NATIVE}/runs/{run['run_id']}/state?at={head}")).json()
    assert "params" not in before["run"]["data"] and before["latest"] == []
    now = (await (await http.get(f"{NATIVE}/log/head")).json())["position"]
    after = await (await http.get(f"{NATIVE}/runs/{run['run_id']}/state?at={now}")).json()
    assert after["run"]["data"]["params"] == [{"key": "lr", "value": "0.1"}]
    assert after["latest"] == [{"key": "loss", "value": 0.5, "timestamp": 7, "step": 3}]
    bad = await http.get(f"{NATIVE}/runs/{run['run_id']}/state?at=soon")
    assert bad.status == 400
    assert "give a log position" in (await bad.json())["message"]


async def test_tracker_servers_app_serves_the_ui(http: TestClient[Any, Any]) -> None:
    """The app `tracker server` runs answers / with the shell and /static/ with its assets,
    from the installed package."""
    shell = await http.get("/")
    assert shell.status == 200 and '<script type="module" src="/static/app.js">' in (
        await shell.text()
    )
    for asset in ("app.js", "app.css"):
        assert (await http.get(f"/static/{asset}")).status == 200
    assert (await http.get("/static/nope.js")).status == 404
