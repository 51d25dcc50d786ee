"""Raw HTTP against the app in-process: status codes, MLflow's error bodies, bad input, limits."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.server.conftest import app_config
from tracker.server import create_app
from tracker.server.app import package_version
from tracker.server.services import SERVICES

API = "/api/2.0/mlflow"
Client = TestClient[Any, Any]
HINT = " See the API docs for more information about request parameters."


async def post(http: Client, path: str, body: Any, status: int = 200) -> dict[str, Any]:
    """POST `body` as JSON, check the status, and return the decoded answer."""
    response = await http.post(f"{API}/{path}", json=body)
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json"
    decoded: dict[str, Any] = json.loads(text)
    return decoded


async def get(http: Client, path: str, params: Any, status: int = 200) -> dict[str, Any]:
    response = await http.get(f"{API}/{path}", params=params)
    text = await response.text()
    assert response.status == status, text
    decoded: dict[str, Any] = json.loads(text)
    return decoded


async def new_run(http: Client) -> str:
    answer = await post(http, "runs/create", {"experiment_id": "0", "start_time": 1})
    run_id: str = answer["run"]["info"]["run_id"]
    return run_id


def error(code: str, message: str) -> dict[str, str]:
    return {"error_code": code, "message": message}


# -- request validation, in MLflow's words --------------------------------------------------


async def test_missing_required_fields(http: Client) -> None:
    """Absent, null and empty required fields get MLflow's exact message, naming the field."""
    for body in ({}, {"run_id": None}, {"run_id": ""}):
        answer = await post(http, "runs/log-metric", body, 400)
        assert answer == error(
            "INVALID_PARAMETER_VALUE", f"Missing value for required parameter 'run_id'.{HINT}"
        )
    answer = await post(http, "experiments/update", {"experiment_id": "0"}, 400)
    assert answer["message"] == f"Missing value for required parameter 'new_name'.{HINT}"


async def test_wrong_types(http: Client) -> None:
    """A value of the wrong type is refused with MLflow's message, quoting the value as JSON
    and its type, as MLflow's own tests expect."""
    cases = [
        ({"run_id": 31, "key": "k", "value": 1, "timestamp": 1}, "31", "run_id", "int"),
        ({"run_id": "r", "key": "k", "value": 1, "timestamp": 1, "step": "foo"}, '"foo"',
         "step", "str"),
        ({"run_id": "r", "key": "k", "value": "abc", "timestamp": 1}, '"abc"', "value", "str"),
        ({"run_id": "r", "key": "k", "value": True, "timestamp": 1}, "true", "value", "bool"),
        ({"run_id": "r", "key": "k", "value": 1, "timestamp": 1.5}, "1.5", "timestamp", "float"),
        ({"run_id": "r", "key": ["k"], "value": 1, "timestamp": 1}, '["k"]', "key", "list"),
    ]  # fmt: skip
    for body, shown, name, kind in cases:
        answer = await post(http, "runs/log-metric", body, 400)
        assert answer["message"] == (
            f"Invalid value {shown} for parameter '{name}' supplied:  "
            f"Hint: Value was of type '{kind}'.{HINT}"
        ), body


async def test_nested_fields_are_named_by_path(http: Client) -> None:
    """Inside a log-batch, the offending field is named by its path, as MLflow does."""
    run_id = await new_run(http)
    answer = await post(
        http, "runs/log-batch",
        {"run_id": run_id, "metrics": [{"key": "a", "value": 1, "timestamp": 1},
                                       {"key": "b", "timestamp": 1}]}, 400,
    )  # fmt: skip
    assert answer["message"] == f"Missing value for required parameter 'metrics[1].value'.{HINT}"
    answer = await post(http, "runs/log-batch", {"run_id": run_id, "tags": [{"value": "x"}]}, 400)
    assert answer["message"] == f"Missing value for required parameter 'tags[0].key'.{HINT}"
    answer = await post(
        http, "runs/log-inputs",
        {"run_id": run_id, "datasets": [{"dataset": {"name": "d", "digest": 5}}]}, 400,
    )  # fmt: skip
    assert "'datasets[0].dataset.digest'" in answer["message"]


async def test_protobuf_json_conversions(http: Client) -> None:
    """Numbers sent as strings, "NaN"/"Infinity" for doubles, integral floats for integers,
    enum names or numbers, experiment ids as numbers: all accepted as protobuf's parser does;
    unknown fields are ignored; `run_uuid` stands in for `run_id`."""
    run_id = await new_run(http)
    points = [("NaN", "7", "1"), ("Infinity", 8.0, 2), ("-Infinity", 9, "3"), ("2.5", 10, 4)]
    for value, timestamp, step in points:
        await post(http, "runs/log-metric", {"run_uuid": run_id, "key": "m", "value": value,
                                             "timestamp": timestamp, "step": step,
                                             "unknown": {"deep": [1, 2]}})  # fmt: skip
    history = await get(http, "metrics/get-history", {"run_id": run_id, "metric_key": "m"})
    assert [m["value"] for m in history["metrics"]] == ["NaN", "Infinity", "-Infinity", 2.5]
    assert [(m["timestamp"], m["step"]) for m in history["metrics"]] == [
        (7, 1), (8, 2), (9, 3), (10, 4),
    ]  # fmt: skip
    info = await post(http, "runs/update", {"run_id": run_id, "status": 3})
    assert info["run_info"]["status"] == "FINISHED"
    answer = await post(http, "runs/search", {"experiment_ids": [0], "run_view_type": "ALL"})
    assert [r["info"]["run_id"] for r in answer["runs"]] == [run_id]


async def test_refused_enum_and_ranges(http: Client) -> None:
    """An unknown status, a step beyond int64 and max_results beyond MLflow's limits are 400s."""
    run_id = await new_run(http)
    answer = await post(http, "runs/update", {"run_id": run_id, "status": "BOGUS"}, 400)
    assert "'status'" in answer["message"] and "RUNNING" in answer["message"]
    answer = await post(http, "runs/log-metric", {"run_id": run_id, "key": "m", "value": 1,
                                                   "timestamp": 1, "step": 1 << 63}, 400)  # fmt: skip
    assert "'step'" in answer["message"] and "64-bit" in answer["message"]
    answer = await post(http, "runs/search", {"experiment_ids": ["0"], "max_results": 123456789},
                        400)  # fmt: skip
    assert answer["message"].startswith(
        "Invalid value 123456789 for parameter 'max_results' supplied"
    )
    answer = await get(http, "experiments/search", {"max_results": "0"}, 400)
    assert "must be a positive integer" in answer["message"]
    answer = await get(http, "metrics/get-history",
                       {"run_id": run_id, "metric_key": "m", "max_results": "0"}, 400)  # fmt: skip
    assert "must be a positive integer" in answer["message"]


async def test_content_type_and_malformed_bodies(http: Client) -> None:
    """POSTs must be JSON objects: a missing or wrong content type, malformed JSON, invalid
    UTF-8, a lone surrogate, a non-object and JSON nested past orjson's limit are all 400s
    in MLflow's error format, never a 500."""
    url = f"{API}/experiments/create"
    response = await http.post(url, data=b'{"name": "x"}', skip_auto_headers=["Content-Type"])
    assert response.status == 400
    assert (await response.json())["message"] == "Bad Request. Content-Type header is missing."
    response = await http.post(url, data=b'{"name": "x"}', headers={"Content-Type": "text/plain"})
    assert (await response.json())["message"] == (
        "Bad Request. Content-Type must be one of ['application/json']."
    )
    json_header = {"Content-Type": "application/json; charset=utf-8"}
    for body, expected in [
        (b'{"name": ', "Malformed JSON"),
        (b'{"name": "\xff\xfe"}', "UTF-8"),
        (b'{"name": "\\ud800"}', "Malformed JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"[" * 5000 + b"]" * 5000, "Malformed JSON"),
    ]:
        response = await http.post(url, data=body, headers=json_header)
        assert response.status == 400, body[:20]
        answer = await response.json()
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert expected in answer["message"], answer
    # Older clients encode the body twice, as a JSON string; MLflow decodes it again.
    response = await http.post(url, data=json.dumps(json.dumps({"name": "twice"})),
                               headers=json_header)  # fmt: skip
    assert response.status == 200
    # A bare NaN token (Python's json.dumps writes them) is read as NaN.
    run_id = await new_run(http)
    body = f'{{"run_id": "{run_id}", "key": "m", "value": NaN, "timestamp": 1}}'
    response = await http.post(f"{API}/runs/log-metric", data=body, headers=json_header)
    assert response.status == 200, await response.text()


async def test_huge_values_are_refused_whole(http: Client) -> None:
    """Over-long keys and values, and a deeply nested value where a string belongs, are 400s
    naming the field (the echoed value cut short); nothing of the batch is stored."""
    run_id = await new_run(http)
    answer = await post(http, "runs/log-batch", {
        "run_id": run_id,
        "metrics": [{"key": "ok", "value": 1, "timestamp": 1}],
        "params": [{"key": "p", "value": "x" * 7000}],
    }, 400)  # fmt: skip
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE" and "6000" in answer["message"]
    nested: Any = "leaf"
    for _ in range(500):
        nested = {"n": nested}
    answer = await post(http, "runs/set-tag", {"run_id": run_id, "key": "k", "value": nested}, 400)
    assert "'value'" in answer["message"] and len(answer["message"]) < 600
    answer = await post(http, "runs/set-tag", {"run_id": run_id, "key": "k" * 300, "value": "v"},
                        400)  # fmt: skip
    assert "250" in answer["message"]
    run = await get(http, "runs/get", {"run_id": run_id})
    assert "metrics" not in run["run"]["data"] and "params" not in run["run"]["data"]


async def test_batch_limits(http: Client) -> None:
    """More than MLflow's per-request batch limits is refused in MLflow's words, before any
    item is read, and nothing is stored."""
    run_id = await new_run(http)
    metrics = [{"key": f"m{i}", "value": i, "timestamp": 1} for i in range(1001)]
    answer = await post(http, "runs/log-batch", {"run_id": run_id, "metrics": metrics}, 400)
    assert answer["message"] == (
        "A batch logging request can contain at most 1000 metrics. Got 1001 metrics. Please "
        "split up metrics across multiple requests and try again."
    )
    params = [{"key": f"p{i}", "value": "v"} for i in range(101)]
    answer = await post(http, "runs/log-batch", {"run_id": run_id, "params": params}, 400)
    assert "at most 100 params" in answer["message"]
    mixed = {
        "run_id": run_id,
        "metrics": metrics[:950],
        "tags": [{"key": f"t{i}", "value": "v"} for i in range(60)],
    }
    answer = await post(http, "runs/log-batch", mixed, 400)
    assert "at most 1000 metrics, params, and tags" in answer["message"]
    answer = await post(http, "runs/log-batch", {"run_id": run_id, "params": [
        {"key": "d", "value": "1"}, {"key": "d", "value": "1"}]}, 400)  # fmt: skip
    assert answer["message"].startswith("Duplicate parameter keys have been submitted: ['d'].")
    run = await get(http, "runs/get", {"run_id": run_id})
    assert run["run"]["data"].keys() <= {"tags"}


async def test_request_body_limit(tmp_path: Path) -> None:
    """A body above the configured limit is a 413 in MLflow's error format."""
    app = create_app(app_config(tmp_path, max_request_bytes=4096))
    async with TestClient(TestServer(app)) as http:
        answer = await post(http, "experiments/create", {"name": "x" * 10_000}, 413)
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "--max-request-size" in answer["message"]
        await post(http, "experiments/create", {"name": "small"})


async def test_unknown_endpoints_are_a_bare_404(http: Client) -> None:
    """Unknown paths (and MLflow RPCs this server does not serve) answer 404 with no body;
    a known path with the wrong method is 405."""
    for path in ("/api/2.0/mlflow/nope", "/api/2.0/mlflow/traces", "/nothing/here"):
        response = await http.get(path)
        assert response.status == 404 and await response.read() == b""
    response = await http.get(f"{API}/runs/log-metric")
    assert response.status == 405


async def test_entity_errors(http: Client) -> None:
    """Missing entities are 404 RESOURCE_DOES_NOT_EXIST with MLflow's wording, a taken name is
    400 RESOURCE_ALREADY_EXISTS, renaming a deleted experiment is 500 INVALID_STATE."""
    answer = await get(http, "runs/get", {"run_id": "nope"}, 404)
    assert answer == error("RESOURCE_DOES_NOT_EXIST", "Run with id=nope not found")
    answer = await get(http, "experiments/get-by-name", {"experiment_name": "ghost"}, 404)
    assert answer == error("RESOURCE_DOES_NOT_EXIST", "Could not find experiment with name 'ghost'")
    exp = (await post(http, "experiments/create", {"name": "e"}))["experiment_id"]
    answer = await post(http, "experiments/create", {"name": "e"}, 400)
    assert answer["error_code"] == "RESOURCE_ALREADY_EXISTS"
    await post(http, "experiments/delete", {"experiment_id": exp})
    answer = await post(http, "experiments/update", {"experiment_id": exp, "new_name": "f"}, 500)
    assert answer["error_code"] == "INVALID_STATE"
    run_id = await new_run(http)
    answer = await post(http, "runs/delete-tag", {"run_id": run_id, "key": "nope"}, 404)
    assert answer == error(
        "RESOURCE_DOES_NOT_EXIST", f"No tag with name: nope in run with id {run_id}"
    )


async def test_shapes(http: Client) -> None:
    """Answers have MLflow's shapes: empty lists left out, int64 as numbers, the run's name as a
    tag, end_time only once set, pages with next_page_token."""
    created = await post(http, "runs/create", {"experiment_id": "0", "run_name": "r",
                                                "start_time": 5, "user_id": "u"})  # fmt: skip
    run = created["run"]
    assert set(run) == {"info", "data", "inputs"}
    assert run["inputs"] == {}
    info = run["info"]
    assert info["run_uuid"] == info["run_id"] and "end_time" not in info
    assert info["start_time"] == 5 and info["user_id"] == "u" and info["status"] == "RUNNING"
    assert {"key": "mlflow.runName", "value": "r"} in run["data"]["tags"]
    fetched = (await get(http, "runs/get", {"run_id": info["run_id"]}))["run"]
    assert fetched["outputs"] == {} and "metrics" not in fetched["data"]
    exp = (await get(http, "experiments/get", {"experiment_id": "0"}))["experiment"]
    assert set(exp) == {"experiment_id", "name", "artifact_location", "lifecycle_stage",
                        "last_update_time", "creation_time", "workspace"}  # fmt: skip
    assert exp["artifact_location"] == "mlflow-artifacts:/0"
    for i in range(3):
        await post(http, "experiments/create", {"name": f"page-{i}"})
    first = await get(http, "experiments/search", {"max_results": "2"})
    assert len(first["experiments"]) == 2 and first["next_page_token"]
    rest = await post(http, "experiments/search",
                      {"max_results": 2, "page_token": first["next_page_token"]})  # fmt: skip
    assert len(rest["experiments"]) == 2 and "next_page_token" not in rest
    assert await post(http, "runs/search", {"experiment_ids": ["12345"]}) == {}


async def test_metric_history_pages(http: Client) -> None:
    """get-history pages by max_results with opaque tokens; without max_results a page is
    still bounded and carries a token when more points exist."""
    run_id = await new_run(http)
    metrics = [{"key": "m", "value": float(i), "timestamp": i, "step": i} for i in range(30)]
    await post(http, "runs/log-batch", {"run_id": run_id, "metrics": metrics})
    seen: list[float] = []
    params: dict[str, str] = {"run_id": run_id, "metric_key": "m", "max_results": "7"}
    pages = 0
    while True:
        page = await get(http, "metrics/get-history", params)
        pages += 1
        seen += [m["value"] for m in page["metrics"]]
        if "next_page_token" not in page:
            break
        params["page_token"] = page["next_page_token"]
    assert seen == [float(i) for i in range(30)] and pages == 5
    whole = await get(http, "metrics/get-history", {"run_id": run_id, "metric_key": "m"})
    assert len(whole["metrics"]) == 30 and "next_page_token" not in whole


async def test_forged_page_tokens(http: Client) -> None:
    """A page token that decodes but was never ours is a 400 naming the token, not a 500: also
    one whose fields are well typed but hold what no database takes (an integer past int64,
    which JSON allows, or text with a NUL)."""
    forged = base64.urlsafe_b64encode(b'{"offset": 1}').decode()
    empty = base64.urlsafe_b64encode(b"{}").decode()
    for token in (forged, empty, "not base64 at all!"):
        answer = await post(http, "runs/search", {"experiment_ids": ["0"], "page_token": token},
                            400)  # fmt: skip
        assert "page token" in answer["message"], answer
        if token != forged:  # an offset is what experiment tokens hold
            answer = await post(http, "experiments/search", {"page_token": token}, 400)
            assert "page token" in answer["message"], answer
        answer = await get(http, "metrics/get-history",
                           {"run_id": "r", "metric_key": "m", "page_token": token}, 400)  # fmt: skip
        assert "page token" in answer["message"], answer

    def token(**fields: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode()

    run_id = await new_run(http)
    await post(http, "runs/log-metric",
               {"run_id": run_id, "key": "m", "value": 1, "timestamp": 1})  # fmt: skip
    point = {"kind": "history", "key": "m", "step": 0, "ts": 1, "nan": 0, "v": "1.0"}
    for big in (2**63, 2**64 - 1):
        cases = [
            ("runs/search", {"experiment_ids": ["0"]},
             token(kind="runs", start_time=big, run_id=run_id)),
            ("experiments/search", {}, token(kind="experiments", offset=big)),
            ("metrics/get-history", {"run_id": run_id, "metric_key": "m"},
             token(**{**point, "step": big})),
            ("metrics/get-history", {"run_id": run_id, "metric_key": "m"},
             token(**{**point, "ts": big})),
            ("runs/search", {"experiment_ids": ["0"]},
             token(kind="runs", start_time=1, run_id="a\x00b")),
        ]  # fmt: skip
        for path, body, bad in cases:
            if path == "metrics/get-history":
                answer = await get(http, path, {**body, "page_token": bad}, 400)
            else:
                answer = await post(http, path, {**body, "page_token": bad}, 400)
            assert answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
            assert "page token" in answer["message"], answer


async def test_inputs_limits(http: Client) -> None:
    """Dataset fields and input tags beyond MLflow's limits are refused, naming the field."""
    run_id = await new_run(http)
    dataset = {"name": "d", "digest": "x" * 37, "source_type": "local", "source": "s"}
    answer = await post(http, "runs/log-inputs",
                        {"run_id": run_id, "datasets": [{"dataset": dataset}]}, 400)  # fmt: skip
    assert answer["message"] == "'digest' exceeds the maximum length of 36 characters"
    dataset["digest"] = "ok"
    tags = [{"key": "mlflow.data.context", "value": "v" * 501}]
    answer = await post(http, "runs/log-inputs",
                        {"run_id": run_id, "datasets": [{"dataset": dataset, "tags": tags}]},
                        400)  # fmt: skip
    assert answer["message"] == "'value' exceeds the maximum length of 500 characters"


# -- health, version, metrics, internal errors ----------------------------------------------


async def test_health_version_and_metrics(http: Client) -> None:
    """/health is OK, /version the package version, /metrics Prometheus text with requests by
    route and status, a latency histogram and the writer's statistics."""
    assert await (await http.get("/health")).text() == "OK"
    assert await (await http.get("/version")).text() == package_version()
    run_id = await new_run(http)
    await post(http, "runs/log-metric", {"run_id": run_id, "key": "m", "value": 1, "timestamp": 1})
    await get(http, "runs/get", {"run_id": "missing"}, 404)
    response = await http.get("/metrics")
    assert response.content_type == "text/plain"
    text = await response.text()
    assert (
        'tracker_http_requests_total{method="POST",route="/api/2.0/mlflow/runs/log-metric",'
        'status="200"} 1.0'
    ) in text
    assert 'route="/api/2.0/mlflow/runs/get",status="404"} 1.0' in text
    assert "tracker_http_request_duration_seconds_bucket" in text
    for name in ("tracker_writer_queue_depth", "tracker_projector_lag_events",
                 "tracker_writer_batches_total", "tracker_writer_points_total"):  # fmt: skip
        assert f"\n{name} " in text, name
    points = [line for line in text.splitlines() if line.startswith("tracker_writer_points_total")]
    assert float(points[0].split()[1]) >= 1


async def test_unexpected_errors_never_leak(
    http: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug (here, a fault injected into the tracker) answers a bare INTERNAL_ERROR with an
    incident id; the traceback and the exception's text go to the server log only."""
    tracker = http.server.app[SERVICES].tracker

    async def broken(run_id: str) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(tracker, "get_run", broken)
    answer = await get(http, "runs/get", {"run_id": "r"}, 500)
    assert answer["error_code"] == "INTERNAL_ERROR"
    assert "secret" not in answer["message"] and "Traceback" not in answer["message"]
    incident = answer["message"].split("incident ")[1].split(")")[0]
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert "secret detail" in str(logged[0].exc_info[1])


async def test_nan_is_written_as_protobuf_json(http: Client) -> None:
    """Latest metric values that are not finite are written as "NaN"/"Infinity" strings."""
    run_id = await new_run(http)
    await post(http, "runs/log-batch", {"run_id": run_id, "metrics": [
        {"key": "a", "value": "NaN", "timestamp": 1}, {"key": "b", "value": "-Infinity",
                                                       "timestamp": 1}]})  # fmt: skip
    metrics = (await get(http, "runs/get", {"run_id": run_id}))["run"]["data"]["metrics"]
    assert sorted((m["key"], m["value"]) for m in metrics) == [("a", "NaN"), ("b", "-Infinity")]
    assert not any(isinstance(m["value"], float) and math.isnan(m["value"]) for m in metrics)


async def test_trickled_request_meets_its_deadline(tmp_path: Path) -> None:
    """A JSON request whose body stops arriving is answered 504 DEADLINE_EXCEEDED after the
    request timeout instead of holding a handler forever."""
    app = create_app(app_config(tmp_path, request_timeout=0.5))
    async with TestClient(TestServer(app)) as http:
        reader, writer = await asyncio.open_connection(http.host, http.port)
        try:
            writer.write(
                f"POST {API}/experiments/create HTTP/1.1\r\nHost: t\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                '{"name": '.encode()
            )
            await writer.drain()
            async with asyncio.timeout(30):
                head = await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()
            await writer.wait_closed()
        assert head.startswith(b"HTTP/1.1 504"), head
