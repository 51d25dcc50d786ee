"""Bounded and downsampled histories over HTTP: MLflow's bulk endpoints, the native buckets
endpoint, and MLflow's client paging a long history."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

import pytest
import requests
from aiohttp.test_utils import TestClient
from mlflow import MlflowClient
from mlflow.entities import Metric

Client = TestClient[Any, Any]
API = "/api/2.0/mlflow"
AJAX = "/ajax-api/2.0/mlflow"
BULK = "metrics/get-history-bulk-interval"


async def new_run(http: Client, points: list[tuple[int, float]], key: str = "m") -> str:
    response = await http.post(f"{API}/runs/create", json={"experiment_id": "0"})
    assert response.status == 200, await response.text()
    run_id: str = (await response.json())["run"]["info"]["run_id"]
    for i in range(0, len(points), 1000):
        metrics = [
            {"key": key, "value": v, "timestamp": 1000 + step, "step": step}
            for step, v in points[i : i + 1000]
        ]
        response = await http.post(
            f"{API}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}
        )
        assert response.status == 200, await response.text()
    return run_id


async def get(http: Client, path: str, params: Any, status: int = 200) -> dict[str, Any]:
    response = await http.get(path, params=params)
    body: dict[str, Any] = await response.json()
    assert response.status == status, body
    return body


@pytest.fixture
async def two_runs(http: Client) -> tuple[str, str]:
    long_id = await new_run(http, [(s, 1e6 if s == 333 else s / 1000) for s in range(1000)])
    short_id = await new_run(http, [(s, -float(s)) for s in range(10)])
    return long_id, short_id


@pytest.mark.parametrize("prefix", [API, AJAX])
async def test_bulk_interval_samples_each_run_keeping_both_ends(
    http: Client, two_runs: tuple[str, str], prefix: str
) -> None:
    """Per run, in the order asked, at most max_results points ordered by step, sampled as
    MLflow's SQL store samples (the first of each of max_results equal runs of points, the
    last point replacing the final sample): the first and last step always included."""
    long_id, short_id = two_runs
    params = [("run_ids", long_id), ("run_ids", short_id), ("metric_key", "m"),
              ("max_results", "50")]  # fmt: skip
    got = (await get(http, f"{prefix}/{BULK}", params))["metrics"]
    by_run = [[m["step"] for m in got if m["run_id"] == r] for r in (long_id, short_id)]
    assert [m["run_id"] for m in got] == [long_id] * 50 + [short_id] * 10
    assert by_run[0] == [*range(0, 980, 20), 999]
    assert by_run[1] == list(range(10))
    assert got[0] == {"key": "m", "value": 0.0, "timestamp": 1000, "step": 0, "run_id": long_id}
    ranged = [*params[:3], ("start_step", "100"), ("end_step", "200"), ("max_results", "7")]
    got = (await get(http, f"{prefix}/{BULK}", ranged))["metrics"]
    assert [m["step"] for m in got] == [100, 115, 130, 145, 159, 173, 200]  # tiles of 15 first
    default = (await get(http, f"{prefix}/{BULK}", params[:3]))["metrics"]
    assert len(default) == 1010  # max_results defaults to 2500 per run


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([("run_ids", str(i)) for i in range(101)] + [("metric_key", "m")],
         "must specify at most 100 run_ids. Received 101 run_ids."),
        ([("run_ids", "a"), ("metric_key", "m"), ("max_results", "2501")],
         "max_results must be between 1 and 2500."),
        ([("run_ids", "a"), ("metric_key", "m"), ("max_results", "0")],
         "max_results must be between 1 and 2500."),
        ([("run_ids", "a"), ("metric_key", "m"), ("start_step", "3")],
         "If either start step or end step are specified, both must be specified."),
        ([("run_ids", "a"), ("metric_key", "m"), ("start_step", "3"), ("end_step", "2")],
         "end_step must be greater than start_step. Found start_step=3 and end_step=2."),
        ([("metric_key", "m")], "Missing value for required parameter 'run_ids'"),
        ([("run_ids", "a")], "Missing value for required parameter 'metric_key'"),
    ],
)  # fmt: skip
async def test_bulk_interval_refuses_what_mlflow_refuses(
    http: Client, params: list[tuple[str, str]], message: str
) -> None:
    """Too many runs, max_results outside 1..2500, half a step range or a reversed one, and a
    missing run or key are 400 INVALID_PARAMETER_VALUE in MLflow's words."""
    body = await get(http, f"{API}/{BULK}", params, status=400)
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert message in body["message"]


async def test_history_bulk_is_ajax_only_and_capped(
    http: Client, two_runs: tuple[str, str]
) -> None:
    """get-history-bulk answers under /ajax-api only: runs by id, points by timestamp, at most
    max_results in all; the same path under /api is a 404 as in MLflow."""
    params = [("run_id", r) for r in two_runs] + [("metric_key", "m"), ("max_results", "1005")]
    got = (await get(http, f"{AJAX}/metrics/get-history-bulk", params))["metrics"]
    first, second = sorted(two_runs)
    sizes = {first: 1000 if first == two_runs[0] else 10}
    sizes[second] = 1005 - sizes[first]
    assert [m["run_id"] for m in got] == [first] * sizes[first] + [second] * sizes[second]
    stamps = [(m["run_id"], m["timestamp"]) for m in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    response = await http.get(f"{API}/metrics/get-history-bulk", params=params)
    assert response.status == 404


async def test_native_buckets_endpoint_answers_columns(
    http: Client, two_runs: tuple[str, str]
) -> None:
    """GET /api/tracker/v1/runs/{id}/metrics/{key}/buckets answers the buckets as JSON
    columns: the spike is its bucket's max; NaN and ±Inf come as strings; a key may hold
    slashes and spaces; a bad bucket count is a 400 naming the limit."""
    long_id, _ = two_runs
    url = f"/api/tracker/v1/runs/{long_id}/metrics/m/buckets"
    body = await get(http, url, {"buckets": "10"})
    assert (body["start_step"], body["end_step"], body["buckets"]) == (0, 999, 10)
    assert body["index"] == list(range(10)) and body["count"] == [100] * 10
    assert body["lower"][:3] == [0, 100, 200] and body["upper"][-1] == 999
    assert body["max"]["value"][3] == 1e6 and body["max"]["step"][3] == 333
    assert body["first"]["step"][0] == 0 and body["last"]["step"][-1] == 999
    part = await get(http, url, {"start_step": "100", "end_step": "199", "buckets": "3"})
    assert part["count"] == [33, 33, 34] and part["min"]["value"][0] == 0.1

    odd_key = "val/loss rate"
    odd = await new_run(http, [(0, math.nan), (1, math.inf), (2, -math.inf), (3, 1.0)], odd_key)
    body = await get(http, f"/api/tracker/v1/runs/{odd}/metrics/{quote(odd_key)}/buckets", {})
    assert body["key"] == odd_key and body["count"] == [1, 1, 1, 1]
    assert body["min"]["value"] == ["NaN", "Infinity", "-Infinity", 1.0]
    bad = await get(http, url, {"buckets": "0"}, status=400)
    assert bad["error_code"] == "INVALID_PARAMETER_VALUE" and "1 to 100,000" in bad["message"]
    bad = await get(http, url, {"buckets": "ten"}, status=400)
    assert "buckets" in bad["message"]


def test_mlflow_client_pages_a_long_history(mlflow_url: str) -> None:
    """An unpaged get-history of 30,000 points answers a first page and a token, never the
    whole series; MLflow's client follows the tokens and gets every point, in step order."""
    client = MlflowClient(tracking_uri=mlflow_url)
    run_id = client.create_run("0").info.run_id
    n = 30_000
    for i in range(0, n, 1000):
        client.log_batch(
            run_id, metrics=[Metric("long", float(s), 1000 + s, s) for s in range(i, i + 1000)]
        )
    raw = requests.get(
        f"{mlflow_url}{API}/metrics/get-history",
        params={"run_id": run_id, "metric_key": "long"},
        timeout=60,
    ).json()
    assert len(raw["metrics"]) == 25_000 and raw["next_page_token"]
    history = client.get_metric_history(run_id, "long")
    assert [m.step for m in history] == list(range(n))
    assert [m.value for m in history] == [float(s) for s in range(n)]
