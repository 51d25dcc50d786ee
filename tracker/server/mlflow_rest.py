"""MLflow's REST API 2.0, tracking part, mapped onto Tracker's public methods."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from tracker.entities import Metric
from tracker.events import DEFAULT_EXPERIMENT_ID, RUN_STATUSES, DatasetInput
from tracker.projections.downsampling import sample_history
from tracker.projections.queries import DEFAULT_HISTORY_PAGE
from tracker.server import artifacts_proxy
from tracker.server.entities import (
    JSON,
    experiment_json,
    file_info_json,
    metric_json,
    run_info_json,
    run_json,
)
from tracker.server.errors import RESOURCE_DOES_NOT_EXIST, RestError, invalid_parameter
from tracker.server.protocol import (
    Field,
    Message,
    double,
    invalid_value,
    json_response,
    parse,
    query_to_json,
    read_body,
)
from tracker.server.services import SERVICES, Handler, Services, name_rpc
from tracker.validation import (
    MAX_BATCH_METRICS,
    MAX_BATCH_PARAMS,
    MAX_BATCH_TAGS,
    MAX_BATCH_TOTAL,
)

PREFIXES: Final = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
MAX_SEARCH_RESULTS: Final = 50_000
DEFAULT_SEARCH_RESULTS: Final = 1000
# An explicit max_results beyond this still gets a page token; no request builds more.
MAX_HISTORY_PAGE: Final = 100_000
# MLflow's limits for the UI's bulk reads (MAX_RUNS_GET_METRIC_HISTORY_BULK,
# MAX_RESULTS_PER_RUN in mlflow/server/handlers.py).
MAX_BULK_RUNS: Final = 100
MAX_BULK_INTERVAL_RESULTS: Final = 2500
MAX_BULK_HISTORY: Final = 25_000
VIEW_TYPES: Final = ("ACTIVE_ONLY", "DELETED_ONLY", "ALL")
# MLflow's limits for run inputs (mlflow/utils/validation.py).
_DATASET_LIMITS: Final = {"name": 500, "digest": 36, "source": 65535, "schema": 1048575,
                          "profile": 16777215}  # fmt: skip
_INPUT_TAG_LIMITS: Final = {"key": 255, "value": 500}

Impl = Callable[[Services, Message], Awaitable[JSON]]


@dataclass(frozen=True, slots=True)
class Rpc:
    """One MLflow RPC: its name (for errors and metrics), methods, path and request schema."""

    name: str
    methods: tuple[str, ...]
    path: str
    schema: tuple[Field, ...]
    impl: Impl
    prefixes: tuple[str, ...] = PREFIXES
    """Where it is served: MLflow serves a few UI-only RPCs under /ajax-api alone."""


def _tags(name: str = "tags") -> Field:
    return Field(name, "message", repeated=True,
                 fields=(Field("key", required=True), Field("value")))  # fmt: skip


_RUN_ID: Final = Field("run_id", required=True, alias="run_uuid")


def _tag_dict(msg: Message, name: str = "tags") -> dict[str, str]:
    # Within one request the last value of a key wins, as in MLflow.
    return {t.text("key"): t.string("value") or "" for t in msg.messages(name)}


def _page(items: list[JSON], name: str, token: str | None) -> JSON:
    out: JSON = {name: items} if items else {}
    if token:
        out["next_page_token"] = token
    return out


def _max_results(msg: Message, default: int, *, limit: int | None) -> int:
    value = msg.integer("max_results")
    if value is None:
        return default
    if value <= 0:
        raise invalid_parameter(
            f"Invalid value {value} for parameter 'max_results' supplied. "
            "It must be a positive integer"
        )
    if limit is not None and value > limit:
        raise invalid_parameter(
            f"Invalid value {value} for parameter 'max_results' supplied. "
            f"It must be at most {limit}"
        )
    return value


# -- experiments ---------------------------------------------------------------------------


async def create_experiment(s: Services, msg: Message) -> JSON:
    experiment_id = await s.tracker.create_experiment(
        msg.text("name"), msg.string("artifact_location") or None, _tag_dict(msg)
    )
    return {"experiment_id": experiment_id}


async def get_experiment(s: Services, msg: Message) -> JSON:
    return {
        "experiment": experiment_json(await s.tracker.get_experiment(msg.text("experiment_id")))
    }


async def get_experiment_by_name(s: Services, msg: Message) -> JSON:
    name = msg.text("experiment_name")
    found = await s.tracker.get_experiment_by_name(name)
    if found is None:
        raise RestError(RESOURCE_DOES_NOT_EXIST, f"Could not find experiment with name '{name}'")
    return {"experiment": experiment_json(found)}


async def search_experiments(s: Services, msg: Message) -> JSON:
    # A malformed filter, order_by or token is the queries' InvalidInputError: a 400
    # INVALID_PARAMETER_VALUE with the parser's message, as any bad input.
    page = await s.tracker.search_experiments(
        view_type=msg.string("view_type") or "ACTIVE_ONLY",
        max_results=_max_results(msg, DEFAULT_SEARCH_RESULTS, limit=MAX_SEARCH_RESULTS),
        page_token=msg.string("page_token") or None,
        filter_string=msg.string("filter") or None,
        order_by=msg.strings("order_by"),
    )
    return _page([experiment_json(e) for e in page], "experiments", page.next_page_token)


async def update_experiment(s: Services, msg: Message) -> JSON:
    await s.tracker.rename_experiment(msg.text("experiment_id"), msg.text("new_name"))
    return {}


async def delete_experiment(s: Services, msg: Message) -> JSON:
    await s.tracker.delete_experiment(msg.text("experiment_id"))
    return {}


async def restore_experiment(s: Services, msg: Message) -> JSON:
    await s.tracker.restore_experiment(msg.text("experiment_id"))
    return {}


async def set_experiment_tag(s: Services, msg: Message) -> JSON:
    await s.tracker.set_experiment_tag(
        msg.text("experiment_id"), msg.text("key"), msg.string("value") or ""
    )
    return {}


async def delete_experiment_tag(s: Services, msg: Message) -> JSON:
    await s.tracker.delete_experiment_tag(msg.text("experiment_id"), msg.text("key"))
    return {}


# -- runs ----------------------------------------------------------------------------------


async def create_run(s: Services, msg: Message) -> JSON:
    view = await s.tracker.create_run(
        msg.string("experiment_id") or DEFAULT_EXPERIMENT_ID,
        run_name=msg.string("run_name") or None,
        start_time=msg.integer("start_time"),
        tags=_tag_dict(msg),
        # TODO(#11): Tracker.create_run takes a missing user as the server's own OS user;
        # MLflow keeps what the client sent (its clients always send one).
        user_id=msg.string("user_id") or None,
    )
    return {"run": run_json(view, outputs=False)}


async def update_run(s: Services, msg: Message) -> JSON:
    run_id = msg.text("run_id")
    await s.tracker.update_run(
        run_id,
        status=msg.string("status"),
        end_time=msg.integer("end_time"),
        run_name=msg.string("run_name") or None,
    )
    return {"run_info": run_info_json((await s.tracker.get_run(run_id)).info)}


async def delete_run(s: Services, msg: Message) -> JSON:
    await s.tracker.delete_run(msg.text("run_id"))
    return {}


async def restore_run(s: Services, msg: Message) -> JSON:
    await s.tracker.restore_run(msg.text("run_id"))
    return {}


async def get_run(s: Services, msg: Message) -> JSON:
    return {"run": run_json(await s.tracker.get_run(msg.text("run_id")))}


async def search_runs(s: Services, msg: Message) -> JSON:
    max_results = msg.integer("max_results", DEFAULT_SEARCH_RESULTS)
    assert max_results is not None
    if max_results > MAX_SEARCH_RESULTS:
        # MLflow's handler refuses this with its generic wording, not the store's.
        raise invalid_value("max_results", max_results)
    page = await s.tracker.search_runs(
        msg.strings("experiment_ids"),
        view_type=msg.string("run_view_type") or "ACTIVE_ONLY",
        max_results=max_results,
        page_token=msg.string("page_token") or None,
        filter_string=msg.string("filter") or None,
        order_by=msg.strings("order_by"),
    )
    return _page([run_json(r) for r in page], "runs", page.next_page_token)


async def log_metric(s: Services, msg: Message) -> JSON:
    # TODO(#11): model_id, dataset_name and dataset_digest (logged models) are accepted and
    # not stored yet.
    await s.tracker.log_metric(
        msg.text("run_id"),
        msg.text("key"),
        msg.number("value"),
        msg.whole("timestamp"),
        msg.whole("step"),
    )
    return {}


async def log_param(s: Services, msg: Message) -> JSON:
    await s.tracker.log_param(msg.text("run_id"), msg.text("key"), msg.string("value") or "")
    return {}


async def set_tag(s: Services, msg: Message) -> JSON:
    await s.tracker.set_tag(msg.text("run_id"), msg.text("key"), msg.string("value") or "")
    return {}


async def delete_tag(s: Services, msg: Message) -> JSON:
    await s.tracker.delete_tag(msg.text("run_id"), msg.text("key"))
    return {}


def _check_batch_limits(n_metrics: int, n_params: int, n_tags: int) -> None:
    # Checked on the raw lists, before their items are read: a request cannot make us read
    # a million metrics only to refuse them.
    for n, limit, what in (
        (n_metrics, MAX_BATCH_METRICS, "metrics"),
        (n_params, MAX_BATCH_PARAMS, "params"),
        (n_tags, MAX_BATCH_TAGS, "tags"),
        (n_metrics + n_params + n_tags, MAX_BATCH_TOTAL, "metrics, params, and tags"),
    ):
        if n > limit:
            raise invalid_parameter(
                f"A batch logging request can contain at most {limit} {what}. Got {n} {what}. "
                f"Please split up {what} across multiple requests and try again."
            )


def _length(body: JSON, name: str) -> int:
    value = body.get(name)
    return len(value) if isinstance(value, list) else 0


async def log_batch(s: Services, msg: Message) -> JSON:
    params = [(p.text("key"), p.string("value") or "") for p in msg.messages("params")]
    keys = [k for k, _ in params]
    duplicates = [k for i, k in enumerate(keys) if k in keys[:i]]
    if duplicates:
        raise invalid_parameter(
            f"Duplicate parameter keys have been submitted: {duplicates}. Please ensure the "
            "request contains only one param value per param key."
        )
    metrics = [
        Metric(m.text("key"), m.number("value"), m.whole("timestamp"), m.whole("step"))
        for m in msg.messages("metrics")
    ]
    await s.tracker.log_batch(msg.text("run_id"), metrics, dict(params), _tag_dict(msg))
    return {}


def _check_length(value: str | None, limit: int, what: str) -> None:
    if value is not None and len(value) > limit:
        raise invalid_parameter(f"'{what}' exceeds the maximum length of {limit} characters")


async def log_inputs(s: Services, msg: Message) -> JSON:
    datasets = []
    for item in msg.messages("datasets"):
        d = item.message("dataset")
        assert d is not None  # required by the schema
        for name, limit in _DATASET_LIMITS.items():
            _check_length(d.string(name), limit, name)
        tags = _tag_dict(item)
        for key, value in tags.items():
            _check_length(key, _INPUT_TAG_LIMITS["key"], "key")
            _check_length(value, _INPUT_TAG_LIMITS["value"], "value")
        datasets.append(
            DatasetInput(
                d.text("name"),
                d.text("digest"),
                d.text("source_type"),
                d.text("source"),
                d.string("schema"),
                d.string("profile"),
                tags,
            )
        )
    # TODO(#11): `models` (logged-model inputs) are accepted and not stored yet.
    await s.tracker.log_inputs(msg.text("run_id"), datasets)
    return {}


async def get_metric_history(s: Services, msg: Message) -> JSON:
    value = msg.integer("max_results")
    if value is not None and value <= 0:
        raise invalid_parameter(
            f"Invalid value {value} for parameter 'max_results' supplied. "
            "It must be a positive integer."
        )
    # Without max_results MLflow sends the whole history in one answer; a page of at most
    # DEFAULT_HISTORY_PAGE points with a token keeps every answer bounded (MLflow's own
    # clients page with max_results=25000).
    page = await s.tracker.get_metric_history(
        msg.text("run_id"),
        msg.text("metric_key"),
        max_results=min(value or DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE),
        page_token=msg.string("page_token") or None,
    )
    return _page([metric_json(m) for m in page], "metrics", page.next_page_token)


def _run_ids(msg: Message, name: str, rpc: str) -> list[str]:
    run_ids = msg.strings(name)
    if not run_ids:
        raise invalid_parameter(f"{rpc} request must specify at least one run_id.")
    if len(run_ids) > MAX_BULK_RUNS:
        raise invalid_parameter(
            f"{rpc} request must specify at most {MAX_BULK_RUNS} run_ids. "
            f"Received {len(run_ids)} run_ids."
        )
    return run_ids


async def get_metric_history_bulk_interval(s: Services, msg: Message) -> JSON:
    """Per run, in the order asked, at most max_results points of its history (within the
    steps, if given), sampled as MLflow's SQL store samples them: the first point of each of
    max_results equal runs of points, and the last point (tracker.series.ntile_sample)."""
    run_ids = _run_ids(msg, "run_ids", "GetMetricHistoryBulkInterval")
    max_results = msg.integer("max_results", MAX_BULK_INTERVAL_RESULTS)
    assert max_results is not None
    if not 1 <= max_results <= MAX_BULK_INTERVAL_RESULTS:
        raise invalid_parameter(f"max_results must be between 1 and {MAX_BULK_INTERVAL_RESULTS}.")
    start, end = msg.integer("start_step"), msg.integer("end_step")
    if (start is None) != (end is None):
        raise invalid_parameter(
            "If either start step or end step are specified, both must be specified."
        )
    if start is not None and end is not None and start > end:
        raise invalid_parameter(
            "end_step must be greater than start_step. "
            f"Found start_step={start} and end_step={end}."
        )
    key = msg.text("metric_key")
    out: list[JSON] = []
    for run_id in run_ids:
        # One run's points in range at a time: memory follows the longest run asked about.
        points = await s.tracker.get_metric_series(run_id, key, start_step=start, end_step=end)
        sample = sample_history(points, max_results)
        out += [
            {"key": key, "value": double(v), "timestamp": t, "step": st, "run_id": run_id}
            for st, t, v in zip(sample.steps.tolist(), sample.timestamps.tolist(),
                                sample.values.tolist(), strict=True)
        ]  # fmt: skip
    return {"metrics": out} if out else {}


async def get_metric_history_bulk(s: Services, msg: Message) -> JSON:
    """The UI's older bulk read: runs by id (code-point order, each once), each run's points
    ordered by (timestamp, step, value), at most max_results (capped at 25,000) in all."""
    run_ids = _run_ids(msg, "run_id", "GetMetricHistoryBulk")
    value = msg.integer("max_results")
    if value is not None and value <= 0:
        raise invalid_parameter(
            f"Invalid value {value} for parameter 'max_results' supplied. "
            "It must be a positive integer."
        )
    left = min(value or MAX_BULK_HISTORY, MAX_BULK_HISTORY)
    key = msg.text("metric_key")
    out: list[JSON] = []
    for run_id in sorted(set(run_ids)):
        if left <= 0:
            break
        # Read in step order, bounded by what is left; MLflow orders by timestamp first, which
        # differs only where a run's timestamps go back as its steps go forward.
        page = await s.tracker.get_metric_history(run_id, key, max_results=left)
        ordered = sorted(page, key=lambda m: (m.timestamp, m.step, m.value))
        out += [{**metric_json(m), "run_id": run_id} for m in ordered]
        left -= len(ordered)
    return {"metrics": out}


async def list_artifacts(s: Services, msg: Message) -> JSON:
    path = artifacts_proxy.safe_path(msg.string("path"))
    run = await s.tracker.get_run(msg.text("run_id"))
    root = run.info.artifact_uri
    proxied = artifacts_proxy.proxied_prefix(root) if s.proxy is not None else None
    if s.proxy is not None and proxied is not None:
        entries = await s.proxy.list_under(proxied, path)
    else:
        entries = [(e.path, e) for e in await s.tracker.list_artifacts(run.info.run_id, path)]
    files = [file_info_json(p, e) for p, e in entries]
    return {"root_uri": root, "files": files} if files else {"root_uri": root}


async def search_logged_models(s: Services, msg: Message) -> JSON:
    # MLflow's client asks for a run's logged models whenever it lists a path in the run's
    # artifacts. TODO(#11): logged models are not stored yet, so there are none to find.
    return {}


# -- the table -----------------------------------------------------------------------------

_TAG_VALUE_FIELDS: Final = (_RUN_ID, Field("key", required=True), Field("value"))
_EXPERIMENT_ID: Final = Field("experiment_id", required=True)
_DATASET: Final = Field("dataset", "message", required=True, fields=(
    Field("name", required=True), Field("digest", required=True),
    Field("source_type", required=True), Field("source", required=True),
    Field("schema"), Field("profile"),
))  # fmt: skip

RPCS: Final[tuple[Rpc, ...]] = (
    Rpc("createExperiment", ("POST",), "/experiments/create",
        (Field("name", required=True), Field("artifact_location"), _tags()), create_experiment),
    Rpc("getExperiment", ("GET",), "/experiments/get", (_EXPERIMENT_ID,), get_experiment),
    Rpc("getExperimentByName", ("GET",), "/experiments/get-by-name",
        (Field("experiment_name", required=True),), get_experiment_by_name),
    Rpc("searchExperiments", ("GET", "POST"), "/experiments/search",
        (Field("max_results", "int64"), Field("page_token"), Field("filter"),
         Field("order_by", repeated=True), Field("view_type", "enum", values=VIEW_TYPES)),
        search_experiments),
    Rpc("updateExperiment", ("POST",), "/experiments/update",
        (_EXPERIMENT_ID, Field("new_name", required=True)), update_experiment),
    Rpc("deleteExperiment", ("POST",), "/experiments/delete", (_EXPERIMENT_ID,), delete_experiment),
    Rpc("restoreExperiment", ("POST",), "/experiments/restore", (_EXPERIMENT_ID,),
        restore_experiment),
    Rpc("setExperimentTag", ("POST",), "/experiments/set-experiment-tag",
        (_EXPERIMENT_ID, Field("key", required=True), Field("value")), set_experiment_tag),
    Rpc("deleteExperimentTag", ("POST",), "/experiments/delete-experiment-tag",
        (_EXPERIMENT_ID, Field("key", required=True)), delete_experiment_tag),
    Rpc("createRun", ("POST",), "/runs/create",
        (Field("experiment_id"), Field("user_id"), Field("run_name"),
         Field("start_time", "int64"), _tags()), create_run),
    Rpc("updateRun", ("POST",), "/runs/update",
        (_RUN_ID, Field("status", "enum", values=RUN_STATUSES), Field("end_time", "int64"),
         Field("run_name")), update_run),
    Rpc("deleteRun", ("POST",), "/runs/delete", (Field("run_id", required=True),), delete_run),
    Rpc("restoreRun", ("POST",), "/runs/restore", (Field("run_id", required=True),), restore_run),
    Rpc("getRun", ("GET",), "/runs/get", (_RUN_ID,), get_run),
    Rpc("searchRuns", ("POST",), "/runs/search",
        (Field("experiment_ids", repeated=True), Field("filter"),
         Field("run_view_type", "enum", values=VIEW_TYPES), Field("max_results", "int32"),
         Field("order_by", repeated=True), Field("page_token")), search_runs),
    Rpc("logMetric", ("POST",), "/runs/log-metric",
        (_RUN_ID, Field("key", required=True), Field("value", "double", required=True),
         Field("timestamp", "int64", required=True), Field("step", "int64"),
         Field("model_id"), Field("dataset_name"), Field("dataset_digest")), log_metric),
    Rpc("logParam", ("POST",), "/runs/log-parameter", _TAG_VALUE_FIELDS, log_param),
    Rpc("setTag", ("POST",), "/runs/set-tag", _TAG_VALUE_FIELDS, set_tag),
    Rpc("deleteTag", ("POST",), "/runs/delete-tag",
        (Field("run_id", required=True), Field("key", required=True)), delete_tag),
    Rpc("logBatch", ("POST",), "/runs/log-batch",
        (Field("run_id", required=True),
         Field("metrics", "message", repeated=True, fields=(
             Field("key", required=True), Field("value", "double", required=True),
             Field("timestamp", "int64", required=True), Field("step", "int64"))),
         Field("params", "message", repeated=True,
               fields=(Field("key", required=True), Field("value"))),
         _tags()), log_batch),
    Rpc("logInputs", ("POST",), "/runs/log-inputs",
        (Field("run_id", required=True),
         Field("datasets", "message", repeated=True, fields=(_tags(), _DATASET)),
         Field("models", "message", repeated=True, fields=(Field("model_id"),))), log_inputs),
    Rpc("getMetricHistory", ("GET",), "/metrics/get-history",
        (_RUN_ID, Field("metric_key", required=True), Field("page_token"),
         Field("max_results", "int32")), get_metric_history),
    Rpc("getMetricHistoryBulkInterval", ("GET",), "/metrics/get-history-bulk-interval",
        (Field("run_ids", repeated=True, required=True), Field("metric_key", required=True),
         Field("start_step", "int64"), Field("end_step", "int64"), Field("max_results", "int32")),
        get_metric_history_bulk_interval),
    Rpc("getMetricHistoryBulk", ("GET",), "/metrics/get-history-bulk",
        (Field("run_id", repeated=True, required=True), Field("metric_key", required=True),
         Field("max_results", "int32")), get_metric_history_bulk, prefixes=PREFIXES[1:]),
    Rpc("listArtifacts", ("GET",), "/artifacts/list",
        (_RUN_ID, Field("path"), Field("page_token")), list_artifacts),
    Rpc("searchLoggedModels", ("POST",), "/logged-models/search",
        (Field("experiment_ids", repeated=True), Field("filter"), Field("max_results", "int32"),
         Field("page_token")), search_logged_models),
)  # fmt: skip


def _handler(rpc: Rpc) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        # One deadline for the whole request: a client trickling its body is cut off too.
        async with asyncio.timeout(services.config.request_timeout):
            if request.method == "GET" and request.query:
                body = query_to_json(request.query, rpc.schema)
            elif request.method == "GET":
                body = {}
            else:
                body = await read_body(request)
            if rpc.name == "logBatch":
                _check_batch_limits(*(_length(body, n) for n in ("metrics", "params", "tags")))
            msg = parse(body, rpc.schema)
            return json_response(await rpc.impl(services, msg))

    return name_rpc(handle, rpc.name)


def add_routes(app: web.Application, rpcs: Sequence[Rpc] = RPCS) -> None:
    """Every RPC under both of MLflow's prefixes, plus the server-info capability endpoint."""
    for rpc in rpcs:
        handler = _handler(rpc)
        for prefix in rpc.prefixes:
            for method in rpc.methods:
                app.router.add_route(method, prefix + rpc.path, handler)
    for prefix in ("/api/3.0/mlflow", "/ajax-api/3.0/mlflow"):
        app.router.add_get(f"{prefix}/server-info", _server_info)


async def _server_info(request: web.Request) -> web.Response:
    # What MLflow's clients probe before large transfers. As MLflow's server: multipart
    # uploads (to presigned part URLs) when the proxy stores artifacts on S3; downloads
    # always stream through the proxy.
    proxy = request.app[SERVICES].proxy
    multipart = proxy is not None and artifacts_proxy.multipart_store(proxy) is not None
    return json_response(
        {
            "store_type": None,
            "workspaces_enabled": False,
            "trace_archival_enabled": False,
            "multipart_uploads_enabled": multipart,
            "multipart_downloads_enabled": False,
            "presigned_upload_run_id_supported": False,
            "presigned_upload_model_id_supported": False,
            "features_enabled": {"gateway": False},
        }
    )
