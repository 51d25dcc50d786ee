"""Searches and metric histories, replayed against MLflow's server (recorded) and against ours.

`run(base_url)` builds the same small data set on a fresh server (three experiments, thirteen
runs with params, tags, metrics, datasets, a deleted run and a nested one, a 3,000-point
history) through MLflow's REST API, then sends every query in QUERIES and returns one
normalised answer per query. Answers hold only what two servers can share: run and experiment
NAMES in the order returned, page by page (ids are random), the status and error_code of a
refusal, and for histories the points themselves (their timestamps are the ones the scenario
logged). Setup calls must succeed on both servers; `run` raises if one does not.

Start times are distinct within the searched experiments: MLflow breaks a start_time tie by
run_id, which is random, so such a tie could not be compared by name. Ties in metric values,
params, tags and status are there, broken by start_time.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

API = "/api/2.0/mlflow"
TIMEOUT = 60
PAGE_LIMIT = 100
"""No query here needs more pages; more means a token that never ends."""
HISTORY_POINTS = 3000

Kind = Literal["runs", "experiments", "history", "bulk_interval", "client_runs",
               "client_experiments", "client_history", "run_data"]  # fmt: skip


@dataclass(frozen=True)
class Query:
    """One compared query. `body` is the request (runs/search, experiments/search), the
    query parameters (get-history, get-history-bulk-interval; "run"/"runs" name the runs) or
    the arguments of a call through MLflow's client; "{name}" in a string is a captured id
    ({exp_a}, {r01}...) or creation time ({created_b}). Paged queries follow next_page_token
    to the end."""

    name: str
    kind: Kind
    body: dict[str, Any] = field(default_factory=dict)


_NAN = float("nan")

# name: (experiment, start_time, end_time, status, params, tags, metrics)
_RUNS: dict[str, tuple[str, int, int | None, str, dict[str, str], dict[str, str],
                       dict[str, float]]] = {
    "r01": ("a", 1000, 1500, "FINISHED", {"lr": "0.1", "opt": "adam", "layers": "10"},
            {"env": "prod", "my tag": "x"}, {"acc": 0.9, "loss": 0.5, "val-loss": 0.7}),
    "r02": ("a", 2000, 2600, "FINISHED", {"lr": "0.01", "opt": "sgd", "layers": "9"},
            {"env": "dev"}, {"acc": 0.8, "loss": -1.5, "val-loss": 0.2}),
    "r03": ("a", 3000, 3100, "FAILED", {"lr": "0.1", "opt": "Adam"},
            {"env": "prod", "my tag": "x_y"}, {"acc": 0.9, "loss": _NAN}),
    "r04": ("a", 3050, None, "RUNNING", {"lr": "0.001"}, {"env": "staging"}, {"acc": 0.7}),
    "r05": ("a", 4000, 4100, "KILLED", {}, {"env": "Prod", "my tag": "xzy"},
            {"acc": -0.2, "loss": 0.0}),
    "r06": ("a", 5000, 5900, "FINISHED", {"lr": "0.5", "opt": "adam"}, {},
            {"loss": 2.0, "val-loss": -3.0}),
    "run seven": ("a", 6000, None, "RUNNING", {"lr": "0.1"}, {"env": "prod"},
                  {"acc": 0.95, "loss": 0.1}),
    "r08": ("a", 7000, 7100, "FINISHED", {"lr": "0.2"}, {"env": "prod"}, {"acc": 1.0}),
    "r09": ("a", 8000, 8200, "FINISHED", {"lr": "0.3", "opt": "adam"}, {"env": "dev"},
            {"acc": 0.5, "loss": 0.0}),
    "R10_x": ("a", 9000, 9500, "FINISHED", {"lr": "0.1"}, {"env": "dev"}, {"acc": 0.5}),
    "r11": ("b", 1500, 1600, "FINISHED", {"lr": "0.1"}, {"env": "prod"}, {"acc": 0.6}),
    "r12": ("b", 2500, 2700, "FAILED", {"lr": "0.2"}, {"env": "dev"}, {"acc": _NAN}),
    "r13": ("c", 500, 900, "FINISHED", {"lr": "0.1"}, {}, {"acc": 0.99}),
}  # fmt: skip
_DELETED = "r08"
_NESTED = ("run seven", "r01")  # (child, parent)
_DATASETS = {
    "r09": [("train", "d1", "training")],
    "R10_x": [("train", "d1", "training"), ("eval set", "d2", "eval")],
    "r11": [("train", "d3", "training")],
}
_EXPERIMENTS = {
    "a": ("search-a", {"team": "vision", "owner.name": "ann"}),
    "b": ("search-b", {"team": "Vision-2"}),
    "c": ("Search C", {"team": "nlp", "stage": "prod"}),
}
_HISTORY_RUN = "r01"


def _history_point(i: int) -> dict[str, Any]:
    # Values repeat and go negative; two points share each of some steps (a retried step).
    return {"key": "curve", "value": (i % 101) / 4 - 10, "timestamp": 100_000 + i,
            "step": i - (1 if i % 500 == 1 else 0)}  # fmt: skip


def _runs(name: str, filter: str = "", *order_by: str, exps: str = "a", **extra: Any) -> Query:
    body: dict[str, Any] = {"experiment_ids": [f"{{exp_{e}}}" for e in exps], "filter": filter,
                            "order_by": list(order_by), **extra}  # fmt: skip
    return Query(name, "runs", body)


def _exps(name: str, filter: str = "", *order_by: str, **extra: Any) -> Query:
    # MLflow's REST API reads a missing max_results as 0 here (and refuses it); its client
    # always sends one.
    body = {"filter": filter, "order_by": list(order_by), "max_results": 100, **extra}
    return Query(name, "experiments", {k: v for k, v in body.items() if v is not None})


QUERIES: tuple[Query, ...] = (
    # -- runs: the default order, paging, view types
    _runs("all runs, default order"),
    _runs("three experiments", exps="abc"),
    _runs("paged by 4", max_results=4),
    _runs("paged by 1, ordered by metric", "", "metrics.acc DESC", max_results=1),
    _runs("deleted only", run_view_type="DELETED_ONLY"),
    _runs("all view types", run_view_type="ALL"),
    # -- metrics
    _runs("metric >", "metrics.acc > 0.7"),
    _runs("metric >=", "metrics.acc >= 0.9"),
    _runs("metric <", "metrics.loss < 0"),
    _runs("metric <=", "metrics.acc <= 0.5", exps="ab"),
    _runs("metric =", "metrics.loss = 0"),
    _runs("metric !=", "metrics.loss != 0"),
    _runs("metric no run has", "metrics.nope > -1"),
    _runs("metric = a float", "metrics.acc = 0.9"),
    _runs("metric range", "metrics.acc >= 0.5 AND metrics.acc <= 0.9"),
    _runs("metric, singular alias", "metric.acc > 0.9"),
    _runs("metric = negative", "metrics.acc = -0.2"),
    _runs("metric, quoted key", "metrics.`val-loss` < 0.5"),
    _runs("metric, double-quoted key", 'metrics."val-loss" > 0'),
    _runs("metric and param and tag",
          "metrics.acc > 0 AND params.lr = '0.1' AND tags.env LIKE 'pr%'"),
    # -- params
    _runs("param =", "params.opt = 'adam'"),
    _runs("param !=", "params.opt != 'adam'"),
    _runs("param LIKE", "params.lr LIKE '0.0%'"),
    _runs("param ILIKE", "params.opt ILIKE 'ADAM'"),
    _runs("param IN (MLflow refuses)", "params.lr IN ('0.1', '0.5')"),
    _runs("param NOT IN (MLflow refuses)", "params.lr NOT IN ('0.1', '0.5')"),
    _runs("param IS NULL", "params.opt IS NULL"),
    _runs("param IS NOT NULL", "params.opt IS NOT NULL"),
    # -- tags
    _runs("tag =", "tags.env = 'prod'"),
    _runs("tag LIKE is case-sensitive", "tags.env LIKE 'P%'"),
    _runs("tag ILIKE", "tags.env ILIKE 'p%'"),
    _runs("tag !=", "tags.env != 'prod'"),
    _runs("tag ILIKE without wildcard", "tags.env ILIKE 'PROD'"),
    _runs("tag LIKE, escaped wildcard", "tags.`my tag` LIKE 'x\\_%'"),
    _runs("tag, double-quoted key", 'tags."my tag" != \'x\''),
    _runs("tag RLIKE (MLflow refuses)", "tags.env RLIKE '^p'"),
    _runs("tag, quoted key", "tags.`my tag` = 'x'"),
    _runs("tag IN (MLflow refuses)", "tags.env IN ('dev', 'staging')"),
    _runs("tag IS NULL", "tags.env IS NULL"),
    _runs("nested runs", "tags.mlflow.parentRunId = '{r01}'"),
    _runs("run name tag", "tags.mlflow.runName LIKE 'r0%'"),
    # -- attributes
    _runs("status =", "attributes.status = 'FINISHED'"),
    _runs("status IN (MLflow refuses)", "attributes.status IN ('FAILED', 'KILLED')"),
    _runs("status NOT IN (MLflow refuses)", "status NOT IN ('FINISHED')"),
    _runs("run_name LIKE, _ wildcard", "attributes.run_name LIKE 'r0_'"),
    _runs("run_name ILIKE", "run_name ILIKE 'r1%'"),
    _runs("run_name with a space", "attributes.run_name = 'run seven'"),
    _runs("run_name LIKE, escaped _", "attributes.run_name LIKE 'R10\\_x'"),
    _runs("run_name RLIKE (MLflow refuses)", "attributes.run_name RLIKE '^r0[1-3]$'"),
    _runs("run_name !=", "attributes.run_name != 'r01'"),
    _runs("status !=, attr alias", "attr.status != 'RUNNING'"),
    _runs("start_time =", "attributes.start_time = 3050"),
    _runs("lifecycle_stage", "attributes.lifecycle_stage = 'deleted'", run_view_type="ALL"),
    _runs("run_id =", "attributes.run_id = '{r03}'"),
    _runs("run_id NOT IN", "attributes.run_id NOT IN ('{r01}', '{r02}')"),
    _runs("run_id IN", "attributes.run_id IN ('{r02}', '{r05}', '{r11}')", exps="ab"),
    _runs("start_time >", "attributes.start_time > 3000"),
    _runs("end_time <=", "attributes.end_time <= 3100"),
    _runs("created >=", "attributes.created >= 5000"),
    _runs("user_id =", "attributes.user_id = 'alice'"),
    # -- datasets
    _runs("dataset name", "datasets.name = 'train'", exps="ab"),
    _runs("dataset name IN", "datasets.name IN ('eval set')"),
    _runs("dataset digest", "datasets.digest = 'd1'"),
    _runs("dataset context", "datasets.context = 'training'", exps="ab"),
    _runs("dataset digest IN", "datasets.digest IN ('d1', 'd3')", exps="ab"),
    _runs("dataset context !=", "datasets.context != 'training'"),
    _runs("dataset context LIKE", "datasets.context LIKE 'ev%'"),
    # -- order_by
    _runs("order by metric ASC (ties, NaN, missing)", "", "metrics.acc ASC"),
    _runs("order by metric DESC (ties, NaN, missing)", "", "metrics.acc DESC"),
    _runs("order by metric with NaN ASC", "", "metrics.loss"),
    _runs("order by param, then metric", "", "params.opt", "metrics.acc DESC"),
    _runs("order by metric with NaN, paged by 2", "", "metrics.loss ASC", max_results=2),
    _runs("order by quoted tag", "", "tags.`my tag` DESC"),
    _runs("order by tag DESC", "", "tags.env DESC"),
    _runs("order by start_time ASC", "", "attributes.start_time ASC"),
    _runs("order by end_time DESC", "", "attributes.end_time DESC"),
    _runs("order by run_name", "", "attributes.run_name"),
    _runs("order by status, then name DESC", "", "attributes.status", "run_name DESC"),
    _runs("order by quoted metric, paged", "", "metrics.`val-loss` DESC", max_results=2),
    _runs("filter and order, paged", "metrics.acc >= 0.5", "params.lr DESC", "metrics.acc",
          max_results=3, exps="ab"),
    # -- the MLflow client
    Query("client: search_runs", "client_runs",
          {"exps": "ab", "filter": "metrics.acc > 0.5", "order_by": ["metrics.acc DESC"],
           "max_results": 3}),
    Query("client: search_experiments", "client_experiments",
          {"filter": "name LIKE 'search%'", "order_by": ["name DESC"], "max_results": 1}),
    Query("client: get_metric_history", "client_history", {"run": "r01", "key": "curve"}),
    # -- run data as search answers it
    Query("run data in a search answer", "run_data", {"exps": "ab"}),
    # -- experiments
    _exps("all experiments"),
    _exps("experiments without max_results", max_results=None),
    _exps("experiments paged", max_results=2),
    _exps("name =", "name = 'search-a'"),
    _exps("name LIKE", "name LIKE 'search%'"),
    _exps("name ILIKE", "name ILIKE 'search%'"),
    _exps("name !=", "name != 'Default'"),
    _exps("name LIKE is case-sensitive", "name LIKE 'Search%'"),
    _exps("two clauses", "creation_time > 0 AND name ILIKE 'search-%'"),
    _exps("experiment tag LIKE", "tags.team LIKE '%ision%'"),
    _exps("experiment tag =", "tags.team = 'vision'"),
    _exps("experiment tag ILIKE", "tags.team ILIKE 'vision%'"),
    _exps("experiment tag, quoted key", "tags.`owner.name` = 'ann'"),
    _exps("experiment tag !=", "tags.team != 'nlp'"),
    _exps("creation_time >=", "creation_time >= {created_b}"),
    _exps("creation_time <", "attribute.creation_time < {created_b}"),
    _exps("order by name", "", "name"),
    _exps("order by name DESC, paged by 1", "", "name DESC", max_results=1),
    _exps("order by creation_time ASC", "", "creation_time ASC"),
    _exps("order by last_update_time DESC", "name LIKE 'search%'", "last_update_time DESC"),
    _exps("order by experiment_id DESC", "", "experiment_id DESC"),
    _exps("deleted experiments", view_type="DELETED_ONLY"),
    # -- metric history
    Query("history, no max_results", "history", {"run": "r01", "metric_key": "curve"}),
    Query("history, paged by 1000", "history",
          {"run": "r01", "metric_key": "curve", "max_results": "1000"}),
    Query("history, paged by 700", "history",
          {"run": "r01", "metric_key": "curve", "max_results": "700"}),
    Query("history of a NaN metric", "history", {"run": "r03", "metric_key": "loss"}),
    Query("history of a missing key", "history", {"run": "r01", "metric_key": "nope"}),
    Query("sampled history, 50 points", "bulk_interval",
          {"runs": ["r01"], "metric_key": "curve", "max_results": "50"}),
    Query("sampled history, a step range", "bulk_interval",
          {"runs": ["r01"], "metric_key": "curve", "start_step": "100", "end_step": "1200",
           "max_results": "7"}),
    Query("sampled history, two runs", "bulk_interval",
          {"runs": ["r03", "r01"], "metric_key": "loss", "max_results": "5"}),
    # -- refusals
    _runs("error: OR", "metrics.acc > 0 OR metrics.loss < 0"),
    _runs("error: string compared to a metric", "metrics.acc > 'x'"),
    _runs("error: number compared to a param", "params.lr = 0.1"),
    _runs("error: < on a param", "params.lr < '0.5'"),
    _runs("error: unknown entity", "foo.bar = 1"),
    _runs("error: dangling comparator", "metrics.acc >"),
    _runs("error: unclosed IN", "attributes.status IN ('FINISHED'"),
    _runs("error: IS NULL on a metric", "metrics.loss IS NULL"),
    _runs("error: bad order direction", "", "metrics.acc sideways"),
    _runs("error: unknown order attribute", "", "attributes.nope"),
    _runs("error: malformed page token", page_token="not-a-token"),
    _exps("error: experiment tag >", "tags.team > 'a'"),
    _exps("error: unknown experiment attribute", "owner = 'x'"),
)  # fmt: skip


class SetupError(AssertionError):
    """A setup call failed: the data set could not be built."""


class _Calls:
    def __init__(self, base_url: str) -> None:
        self.base = base_url + API
        self.session = requests.Session()

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.session.post(self.base + path, json=body, timeout=TIMEOUT)

    def get(self, path: str, params: dict[str, Any]) -> requests.Response:
        return self.session.get(self.base + path, params=params, timeout=TIMEOUT)

    def ok(self, path: str, body: dict[str, Any]) -> Any:
        response = self.post(path, body)
        if response.status_code != 200:
            raise SetupError(f"{path} {body}: {response.status_code} {response.text}")
        return response.json()


def _metric_value(value: float) -> float | str:
    return "NaN" if math.isnan(value) else value


def _build(calls: _Calls) -> dict[str, str]:
    """The data set; the ids and creation times the queries refer to, by name."""
    ids: dict[str, str] = {}
    for label, (name, tags) in _EXPERIMENTS.items():
        # Distinct creation times, so ordering by them is the same on both servers.
        previous = int(ids.get("created_last", "0"))
        deadline = time.monotonic() + 5
        while time.time() * 1000 <= previous + 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        tag_list = [{"key": k, "value": v} for k, v in tags.items()]
        exp = calls.ok("/experiments/create", {"name": name, "tags": tag_list})["experiment_id"]
        ids[f"exp_{label}"] = exp
        created = calls.get("/experiments/get", {"experiment_id": exp}).json()["experiment"]
        ids[f"created_{label}"] = ids["created_last"] = str(created["creation_time"])
    for name, (exp, start, end, status, params, tags, metrics) in _RUNS.items():
        run = calls.ok("/runs/create", {
            "experiment_id": ids[f"exp_{exp}"], "start_time": start, "run_name": name,
            "user_id": "alice" if name in ("r01", "r02") else "bob",
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        })["run"]["info"]["run_id"]  # fmt: skip
        ids[name] = run
        calls.ok("/runs/log-batch", {
            "run_id": run,
            "params": [{"key": k, "value": v} for k, v in params.items()],
            "metrics": [{"key": k, "value": _metric_value(v), "timestamp": start, "step": 0}
                        for k, v in metrics.items()],
        })  # fmt: skip
        update: dict[str, Any] = {"run_id": run, "status": status}
        if end is not None:
            update["end_time"] = end
        calls.ok("/runs/update", update)
    child, parent = _NESTED
    calls.ok("/runs/set-tag",
             {"run_id": ids[child], "key": "mlflow.parentRunId", "value": ids[parent]})  # fmt: skip
    for name, inputs in _DATASETS.items():
        calls.ok("/runs/log-inputs", {"run_id": ids[name], "datasets": [
            {"dataset": {"name": ds, "digest": digest, "source_type": "local",
                         "source": '{"uri": "/data"}'},
             "tags": [{"key": "mlflow.data.context", "value": context}]}
            for ds, digest, context in inputs]})  # fmt: skip
    points = [_history_point(i) for i in range(HISTORY_POINTS)]
    for i in range(0, HISTORY_POINTS, 1000):
        calls.ok("/runs/log-batch", {"run_id": ids[_HISTORY_RUN], "metrics": points[i : i + 1000]})
    calls.ok("/runs/delete", {"run_id": ids[_DELETED]})
    deleted = calls.ok("/experiments/create", {"name": "gone"})["experiment_id"]
    calls.ok("/experiments/delete", {"experiment_id": deleted})
    return ids


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids) if "{" in value else value
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def _refusal(response: requests.Response) -> dict[str, Any]:
    try:
        code = response.json().get("error_code")
    except ValueError:
        code = None
    return {"status": response.status_code, "error_code": code}


def _paged(
    send: Callable[[str | None], requests.Response], items: str, pick: Callable[[Any], Any]
) -> dict[str, Any]:
    """Follow page tokens to the end: each page's picked items, or the refusal."""
    pages: list[list[Any]] = []
    token: str | None = None
    for _ in range(PAGE_LIMIT):
        response = send(token)
        if response.status_code != 200:
            return {**_refusal(response), "pages": pages}
        body = response.json()
        pages.append([pick(item) for item in body.get(items, [])])
        token = body.get("next_page_token") or None
        if token is None:
            return {"status": 200, "pages": pages}
    raise AssertionError(f"more than {PAGE_LIMIT} pages")


def _run_name(run: Any) -> str:
    return str(run["info"]["run_name"])


def _points(pages: list[list[Any]]) -> dict[str, Any]:
    """A history's points, in order, as a digest with the first and last few and the count."""
    flat = [p for page in pages for p in page]
    text = json.dumps(flat, sort_keys=True)
    return {"count": len(flat), "head": flat[:3], "tail": flat[-3:],
            "sha256": hashlib.sha256(text.encode()).hexdigest()}  # fmt: skip


def _point(m: Any) -> list[Any]:
    value = m.get("value")
    return [m.get("step", 0), value, m.get("timestamp")]


def _run_data(calls: _Calls, body: dict[str, Any], ids: dict[str, str]) -> list[Any]:
    """Every run's fields that both servers answer alike (no ids, no artifact URIs, no
    clock readings), in the default order."""
    exps = [ids[f"exp_{e}"] for e in body["exps"]]
    runs = calls.post("/runs/search", {"experiment_ids": exps, "max_results": 100}).json()["runs"]
    out = []
    for run in runs:
        info, data = run["info"], run.get("data", {})
        out.append({
            "info": {k: info.get(k) for k in ("run_name", "status", "start_time", "end_time",
                                              "lifecycle_stage", "user_id")},
            "metrics": sorted([m["key"], m["value"], m.get("step", 0)]
                              for m in data.get("metrics", [])),
            "params": sorted([p["key"], p["value"]] for p in data.get("params", [])),
            "tags": sorted([t["key"], t["value"]] for t in data.get("tags", [])
                           if not t["key"].startswith("mlflow.")),
            "inputs": sorted([i["dataset"]["name"], i["dataset"]["digest"]]
                             for i in run.get("inputs", {}).get("dataset_inputs", [])),
        })  # fmt: skip
    return out


def _client_query(base_url: str, query: Query, ids: dict[str, str]) -> dict[str, Any]:
    """The same questions through MLflow's own client (mlflow-skinny), which pages itself
    for histories and hands page tokens back for searches."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=base_url)
    b = query.body
    pages: list[list[Any]] = []
    token: str | None = None
    try:
        if query.kind == "client_history":
            history = client.get_metric_history(ids[b["run"]], b["key"])
            return {"status": 200, **_points([[[m.step, m.value, m.timestamp] for m in history]])}
        for _ in range(PAGE_LIMIT):
            if query.kind == "client_runs":
                page: Any = client.search_runs(
                    [ids[f"exp_{e}"] for e in b["exps"]], b["filter"], order_by=b["order_by"],
                    max_results=b["max_results"], page_token=token,
                )  # fmt: skip
                pages.append([r.info.run_name for r in page])
            else:
                page = client.search_experiments(
                    filter_string=b["filter"], order_by=b["order_by"],
                    max_results=b["max_results"], page_token=token,
                )  # fmt: skip
                pages.append([e.name for e in page])
            token = page.token
            if not token:
                return {"status": 200, "pages": pages}
    except MlflowException as exc:
        status = exc.get_http_status_code()  # type: ignore[no-untyped-call]
        return {"status": status, "error_code": exc.error_code}
    raise AssertionError(f"more than {PAGE_LIMIT} pages")


def _answer(calls: _Calls, base_url: str, query: Query, ids: dict[str, str]) -> dict[str, Any]:
    body = _fill(query.body, ids)
    if query.kind == "runs":

        def send_runs(token: str | None) -> requests.Response:
            page = body if token is None else {**body, "page_token": token}
            return calls.post("/runs/search", page)

        return _paged(send_runs, "runs", _run_name)
    if query.kind == "experiments":

        def send_experiments(token: str | None) -> requests.Response:
            page = body if token is None else {**body, "page_token": token}
            return calls.post("/experiments/search", page)

        return _paged(send_experiments, "experiments", lambda e: e["name"])
    if query.kind == "history":
        params = {k: v for k, v in body.items() if k != "run"}
        params["run_id"] = ids[body["run"]]

        def send_history(token: str | None) -> requests.Response:
            page = params if token is None else {**params, "page_token": token}
            return calls.get("/metrics/get-history", page)

        answer = _paged(send_history, "metrics", _point)
        pages = answer.pop("pages")
        return {**answer, "page_sizes": [len(p) for p in pages], **_points(pages)}
    if query.kind == "bulk_interval":
        params = {k: v for k, v in body.items() if k != "runs"}
        params["run_ids"] = [ids[r] for r in body["runs"]]
        response = calls.get("/metrics/get-history-bulk-interval", params)
        if response.status_code != 200:
            return _refusal(response)
        names = {v: k for k, v in ids.items()}
        points = [[names[m["run_id"]], *_point(m)] for m in response.json().get("metrics", [])]
        return {"status": 200, "points": points}
    if query.kind == "run_data":
        return {"status": 200, "runs": _run_data(calls, body, ids)}
    return _client_query(base_url, query, ids)


def run(base_url: str) -> list[dict[str, Any]]:
    """Build the data set on the (fresh) server at `base_url`, then answer every query, in
    order: {"query": name, "status": ..., and "pages" / "error_code" / points}."""
    calls = _Calls(base_url)
    ids = _build(calls)
    return [{"query": q.name, **_answer(calls, base_url, q, ids)} for q in QUERIES]
