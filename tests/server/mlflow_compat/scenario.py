"""Representative REST calls, replayed against MLflow's server (recorded) and against ours.

`run(base_url)` sends every step in order to a fresh server and returns the answers,
normalised so that two servers can be compared: run ids become <run1>, <run2>... in order of
appearance, wall-clock times become <now>, page tokens <token>. Each step says how its answers
must agree: "exact" (status, body and the listed headers), "code" (status and error_code; the
wording differs, and the test says why), or "status".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts"
TIMEOUT = 60

Compare = Literal["exact", "code", "status"]


@dataclass(frozen=True)
class Step:
    name: str
    method: str
    path: str
    body: Any = None
    params: dict[str, str] | None = None
    data: bytes | None = None
    headers: dict[str, str] | None = None
    compare: Compare = "exact"
    show_headers: tuple[str, ...] = ()
    capture: dict[str, str] = field(default_factory=dict)
    """Names for values of the answer (a dotted path) that later steps use as {name}."""


def _metric(run: Any, **fields: Any) -> dict[str, Any]:
    return {"run_id": run, "key": "m", "timestamp": 5, **fields}


STEPS: tuple[Step, ...] = (
    Step("health", "GET", "/health"),
    Step("default experiment", "GET", f"{API}/experiments/get", params={"experiment_id": "0"}),
    Step("create experiment", "POST", f"{API}/experiments/create",
         {"name": "compat", "tags": [{"key": "a", "value": "b"}]},
         capture={"exp": "experiment_id"}),
    Step("create taken name", "POST", f"{API}/experiments/create", {"name": "compat"},
         compare="code"),
    Step("create without name", "POST", f"{API}/experiments/create", {}),
    Step("create name of wrong type", "POST", f"{API}/experiments/create", {"name": 5}),
    Step("get experiment", "GET", f"{API}/experiments/get", params={"experiment_id": "{exp}"}),
    Step("get missing experiment", "GET", f"{API}/experiments/get",
         params={"experiment_id": "999"}),
    Step("get by missing name", "GET", f"{API}/experiments/get-by-name",
         params={"experiment_name": "nope"}),
    Step("search experiments", "POST", f"{API}/experiments/search", {"max_results": 10}),
    Step("search experiments by GET, paged", "GET", f"{API}/experiments/search",
         params={"max_results": "1"}),
    Step("search experiments over the limit", "POST", f"{API}/experiments/search",
         {"max_results": 1000000}),
    Step("create run", "POST", f"{API}/runs/create",
         {"experiment_id": "{exp}", "start_time": 1000, "run_name": "r1", "user_id": "u",
          "tags": [{"key": "t", "value": "v"}]}, capture={"run": "run.info.run_id"}),
    Step("log metric NaN", "POST", f"{API}/runs/log-metric", _metric("{run}", value="NaN")),
    Step("log metric as strings", "POST", f"{API}/runs/log-metric",
         _metric("{run}", value="1.5", timestamp="7", step="2")),
    Step("log metric, run_id an int", "POST", f"{API}/runs/log-metric",
         _metric(31, value=1)),
    Step("log metric, step not a number", "POST", f"{API}/runs/log-metric",
         _metric("{run}", value=1, step="foo")),
    Step("log metric without run_id", "POST", f"{API}/runs/log-metric", {"key": "m"}),
    Step("log metric without value", "POST", f"{API}/runs/log-metric",
         {"run_id": "{run}", "key": "m", "timestamp": 1}),
    Step("log param", "POST", f"{API}/runs/log-parameter",
         {"run_id": "{run}", "key": "p", "value": "a"}),
    Step("log param again, same value", "POST", f"{API}/runs/log-parameter",
         {"run_id": "{run}", "key": "p", "value": "a"}),
    Step("log param, other value", "POST", f"{API}/runs/log-parameter",
         {"run_id": "{run}", "key": "p", "value": "b"}),
    Step("log batch", "POST", f"{API}/runs/log-batch",
         {"run_id": "{run}", "params": [{"key": "q", "value": "1"}],
          "tags": [{"key": "x", "value": "1"}, {"key": "x", "value": "2"}],
          "metrics": [{"key": "b", "value": -5, "timestamp": 1, "step": -2}]}),
    Step("log batch, param conflict", "POST", f"{API}/runs/log-batch",
         {"run_id": "{run}", "params": [{"key": "p", "value": "c"}]}),
    Step("log batch, duplicate params", "POST", f"{API}/runs/log-batch",
         {"run_id": "{run}", "params": [{"key": "z", "value": "1"}, {"key": "z", "value": "2"}]}),
    Step("log batch, metric without value", "POST", f"{API}/runs/log-batch",
         {"run_id": "{run}", "metrics": [{"key": "a", "value": 1, "timestamp": 1},
                                         {"key": "b", "timestamp": 1}]}),
    Step("log batch over the limit", "POST", f"{API}/runs/log-batch",
         {"run_id": "{run}", "metrics": [{"key": "a", "value": 1, "timestamp": i}
                                         for i in range(1001)]}),
    Step("get run", "GET", f"{API}/runs/get", params={"run_id": "{run}"}),
    Step("get missing run", "GET", f"{API}/runs/get", params={"run_id": "nope"}),
    Step("metric history", "GET", f"{API}/metrics/get-history",
         params={"run_id": "{run}", "metric_key": "m"}),
    Step("metric history, max_results 0", "GET", f"{API}/metrics/get-history",
         params={"run_id": "{run}", "metric_key": "m", "max_results": "0"}),
    Step("metric history without key", "GET", f"{API}/metrics/get-history",
         params={"run_id": "{run}"}),
    Step("update run", "POST", f"{API}/runs/update",
         {"run_id": "{run}", "status": "FINISHED", "end_time": 2000, "run_name": "r2"}),
    Step("delete missing tag", "POST", f"{API}/runs/delete-tag", {"run_id": "{run}", "key": "no"}),
    Step("second run", "POST", f"{API}/runs/create",
         {"experiment_id": "{exp}", "start_time": 3000, "run_name": "r3", "user_id": "u"},
         capture={"run2": "run.info.run_id"}),
    Step("search runs, paged", "POST", f"{API}/runs/search",
         {"experiment_ids": ["{exp}"], "max_results": 1}),
    Step("search runs over the limit", "POST", f"{API}/runs/search",
         {"experiment_ids": ["{exp}"], "max_results": 123456789}),
    Step("search runs of no experiment", "POST", f"{API}/runs/search", {}),
    Step("list artifacts of a new run", "GET", f"{API}/artifacts/list", params={"run_id": "{run2}"}),
    Step("upload artifact", "PUT", f"{ARTIFACTS}/artifacts/{{exp}}/{{run2}}/artifacts/dir/a.txt",
         data=b"hello", compare="status"),
    Step("upload second artifact", "PUT", f"{ARTIFACTS}/artifacts/{{exp}}/{{run2}}/artifacts/b.bin",
         data=b"x", compare="status"),
    Step("list artifacts", "GET", f"{API}/artifacts/list", params={"run_id": "{run2}"}),
    Step("list artifacts in a directory", "GET", f"{API}/artifacts/list",
         params={"run_id": "{run2}", "path": "dir"}),
    Step("list through the proxy", "GET", f"{ARTIFACTS}/artifacts",
         params={"path": "{exp}/{run2}/artifacts"}),
    Step("download artifact", "GET", f"{ARTIFACTS}/artifacts/{{exp}}/{{run2}}/artifacts/dir/a.txt",
         show_headers=("Content-Type", "Content-Disposition", "X-Content-Type-Options")),
    Step("download missing artifact", "GET", f"{ARTIFACTS}/artifacts/{{exp}}/none.txt",
         compare="code"),
    Step("list with traversal", "GET", f"{API}/artifacts/list",
         params={"run_id": "{run2}", "path": "../x"}),
    Step("proxy list with traversal", "GET", f"{ARTIFACTS}/artifacts", params={"path": "../x"}),
    Step("proxy download with traversal", "GET", f"{ARTIFACTS}/artifacts/..%2f..%2fetc/passwd"),
    Step("multipart create", "POST", f"{ARTIFACTS}/mpu/create/{{exp}}/{{run2}}/artifacts",
         {"path": "big.bin", "num_parts": 2}),
    Step("delete artifact", "DELETE", f"{ARTIFACTS}/artifacts/{{exp}}/{{run2}}/artifacts/b.bin"),
    Step("delete artifact again", "DELETE",
         f"{ARTIFACTS}/artifacts/{{exp}}/{{run2}}/artifacts/b.bin"),
    Step("delete run", "POST", f"{API}/runs/delete", {"run_id": "{run2}"}),
    Step("tag a deleted run", "POST", f"{API}/runs/set-tag",
         {"run_id": "{run2}", "key": "k", "value": "v"}, compare="code"),
    Step("restore run", "POST", f"{API}/runs/restore", {"run_id": "{run2}"}),
    Step("delete experiment", "POST", f"{API}/experiments/delete", {"experiment_id": "{exp}"}),
    Step("delete experiment again", "POST", f"{API}/experiments/delete",
         {"experiment_id": "{exp}"}, compare="code"),
    Step("rename a deleted experiment", "POST", f"{API}/experiments/update",
         {"experiment_id": "{exp}", "new_name": "zz"}, compare="code"),
    Step("tag a deleted experiment", "POST", f"{API}/experiments/set-experiment-tag",
         {"experiment_id": "{exp}", "key": "k", "value": "v"}, compare="code"),
    Step("restore experiment", "POST", f"{API}/experiments/restore", {"experiment_id": "{exp}"}),
    Step("restore an active experiment", "POST", f"{API}/experiments/restore",
         {"experiment_id": "{exp}"}, compare="code"),
    Step("delete missing experiment tag", "POST", f"{API}/experiments/delete-experiment-tag",
         {"experiment_id": "{exp}", "key": "k"}),
    Step("unknown endpoint", "GET", f"{API}/no-such-thing", compare="status"),
    Step("POST without a content type", "POST", f"{API}/experiments/create",
         data=b'{"name": "x"}', headers={"Content-Type": ""}),
    Step("POST with another content type", "POST", f"{API}/experiments/create",
         data=b'{"name": "x"}', headers={"Content-Type": "text/plain"}),
)  # fmt: skip

_RUN_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
_TIME_KEYS = frozenset({"creation_time", "last_update_time", "start_time", "end_time", "timestamp"})
_RECENT_MS = 10**12  # anything later than 2001 is a clock reading, not a value the test sent


def _fill(value: Any, captured: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**captured) if "{" in value else value
    if isinstance(value, list):
        return [_fill(v, captured) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, captured) for k, v in value.items()}
    return value


def _dig(body: Any, dotted: str) -> str:
    for part in dotted.split("."):
        body = body[part]
    return str(body)


def _clocks(value: Any) -> Any:
    if isinstance(value, list):
        return [_clocks(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in _TIME_KEYS and isinstance(v, int) and v > _RECENT_MS:
                out[k] = "<now>"
            elif k == "next_page_token":
                out[k] = "<token>"
            else:
                out[k] = _clocks(v)
        return out
    return value


def run(base_url: str) -> list[dict[str, Any]]:
    """Send every step to the server at `base_url`; the normalised answers, in order."""
    captured: dict[str, str] = {}
    answers = []
    session = requests.Session()
    for step in STEPS:
        headers = {} if step.headers is None else dict(step.headers)
        if step.data is not None and "Content-Type" in headers and not headers["Content-Type"]:
            headers.pop("Content-Type")
            skip = True
        else:
            skip = False
        request = requests.Request(
            step.method, base_url + _fill(step.path, captured),
            params=_fill(step.params, captured), json=_fill(step.body, captured),
            data=step.data, headers=headers,
        )  # fmt: skip
        prepared = session.prepare_request(request)
        if skip:
            prepared.headers.pop("Content-Type", None)
        response = session.send(prepared, timeout=TIMEOUT)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        for name, dotted in step.capture.items():
            captured[name] = _dig(body, dotted)
        answers.append({
            "step": step.name,
            "status": response.status_code,
            "body": _clocks(body),
            "headers": {h: response.headers.get(h) for h in step.show_headers},
        })  # fmt: skip
    # Run ids are random: name them by order of first appearance, the same on both servers.
    text = json.dumps(answers)
    names: dict[str, str] = {}
    for found in _RUN_ID.findall(text):
        names.setdefault(found, f"<run{len(names) + 1}>")
    decoded: list[dict[str, Any]] = json.loads(_RUN_ID.sub(lambda m: names[m.group(0)], text))
    return decoded
