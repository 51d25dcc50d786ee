"""The remote client's read side: the views' queries and a run's events, answered by the tracking server."""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, NoReturn

import numpy as np

from tracker.entities import (
    DatasetInputInfo,
    Experiment,
    Metric,
    Page,
    RunData,
    RunInfo,
    RunView,
)
from tracker.errors import InvalidStateError, NotFoundError
from tracker.events import (
    EVENT_TYPES,
    DatasetInput,
    DatasetInputsLogged,
    DomainEvent,
    MetricSeries,
    MetricsLogged,
    NewEvent,
    RecordedEvent,
    run_stream,
)
from tracker.projections.queries import DEFAULT_HISTORY_PAGE, Points, Queries, rank_dedupe
from tracker.remote.client import RemoteClient
from tracker.stores.base import Database, EventLog, Row, Session
from tracker.stores.sql import Params, Statement
from tracker.validation import validate_status

MLFLOW: Final = "/api/2.0/mlflow"
NATIVE: Final = "/api/tracker/v1"
SERIES_PAGE: Final = 100_000
"""Points per get-history request while reading a whole series."""
EVENTS_PAGE: Final = 1000
_RUN_PREFIX: Final = run_stream("")
_DOUBLES: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _unavailable(what: str) -> NoReturn:
    raise InvalidStateError(
        f"{what} is not available through a tracking server yet: open the store itself "
        "(its database URI) for it"
    )


class NoSession:
    """The session a remote tracker's reads get: its queries go over HTTP and never use it;
    a query that would run SQL (one the server does not answer yet) says so."""

    async def execute(self, statement: Statement, params: Params | None = None) -> int:
        _unavailable("this query")

    async def executemany(self, statement: Statement, rows: Sequence[Params]) -> None:
        _unavailable("this query")

    async def fetchall(self, statement: Statement, params: Params | None = None) -> list[Row]:
        _unavailable("this query")

    async def execute_batch(self, ops: Sequence[tuple[Statement, Sequence[Params]]]) -> None:
        _unavailable("this query")

    async def execute_raw(self, sql: str) -> None:
        _unavailable("this query")


class RemoteDatabase(Database):
    """A remote tracker's stand-in for the views' database: the server holds the views."""

    family = "sqlite"

    def __init__(self, url: str) -> None:
        self.uri = url

    async def open(self, create: bool = True) -> None:
        return None

    async def aclose(self) -> None:
        return None

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Session]:
        yield NoSession()

    def transaction(self) -> AbstractAsyncContextManager[Session]:
        return self._session()

    def snapshot(self) -> AbstractAsyncContextManager[Session]:
        return self._session()


class RemoteLog(EventLog):
    """A remote tracker's log: a run's events read page by page from the server's native
    API (`tracker replay`, run_state_at). Appends go through the outbox instead, and the
    rest of the log is the server's own."""

    def __init__(self, client: RemoteClient) -> None:
        self.client = client
        self.uri = client.url

    async def open(self, create: bool = True) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def _append(self, unique: dict[bytes, NewEvent], encoded: Any) -> list[RecordedEvent]:
        _unavailable("appending to the log directly")

    async def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        _unavailable("reading the whole log")

    async def read_stream(
        self, stream_id: str, *, after: int = 0, until_position: int | None = None,
        until_time: int | None = None, limit: int = 1000,
        exclude_types: frozenset[str] = frozenset(),
    ) -> list[RecordedEvent]:  # fmt: skip
        out: list[RecordedEvent] = []
        async for rec in self.iter_stream(
            stream_id, until_position=until_position, until_time=until_time,
            exclude_types=exclude_types, after=after,
        ):  # fmt: skip
            out.append(rec)
            if len(out) >= limit:
                break
        return out

    async def iter_stream(
        self, stream_id: str, *, until_position: int | None = None,
        until_time: int | None = None, exclude_types: frozenset[str] = frozenset(),
        after: int = 0,
    ) -> AsyncIterator[RecordedEvent]:  # fmt: skip
        """A run's events, in order (nothing for a run the server does not know). Other
        streams (an experiment's, whose deletion a run's past state folds in) are not served
        over HTTP yet: they read as empty."""
        if not stream_id.startswith(_RUN_PREFIX):
            return
        run_id = stream_id[len(_RUN_PREFIX) :]
        path = f"{NATIVE}/runs/{run_id}/events"
        while True:
            try:
                page = await self.client.get(path, {"after": after, "limit": EVENTS_PAGE})
            except NotFoundError:
                return
            for item in page.get("events", []):
                rec = event_from_json(item)
                if until_position is not None and rec.position > until_position:
                    return
                if until_time is not None and rec.recorded_at > until_time:
                    continue
                if type(rec.event).__name__ not in exclude_types:
                    yield rec
            nxt = page.get("next_after")
            if not isinstance(nxt, int):
                return
            after = nxt

    async def stream_head(self, stream_id: str) -> int:
        _unavailable("a stream's head")

    async def head(self) -> int:
        _unavailable("the log's head")

    async def known_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        _unavailable("looking up event ids")

    async def read_slices(self, refs: Sequence[tuple[int, int, int]]) -> list[bytes]:
        _unavailable("reading stored payloads")


class RemoteQueries(Queries):
    """The queries the client's reads make, answered by the server: MLflow's REST API for
    experiments, runs and metric histories. The session argument is ignored. A query this
    class does not answer runs on a NoSession, which raises InvalidStateError saying so."""

    def __init__(self, client: RemoteClient, database: RemoteDatabase, log: RemoteLog) -> None:
        super().__init__(database, log, False)
        self.client = client

    # -- experiments -----------------------------------------------------------------------

    async def get_experiment(self, s: Session, experiment_id: str) -> Experiment | None:
        try:
            answer = await self.client.get(
                f"{MLFLOW}/experiments/get", {"experiment_id": experiment_id}
            )
        except NotFoundError:
            return None
        return experiment_from_json(answer["experiment"])

    async def get_experiment_by_name(self, s: Session, name: str) -> Experiment | None:
        try:
            answer = await self.client.get(
                f"{MLFLOW}/experiments/get-by-name", {"experiment_name": name}
            )
        except NotFoundError:
            return None
        return experiment_from_json(answer["experiment"])

    async def search_experiments(
        self, s: Session, view_type: str = "ACTIVE_ONLY", max_results: int = 1000,
        page_token: str | None = None, *, filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
    ) -> Page[Experiment]:  # fmt: skip
        body: dict[str, Any] = {"view_type": view_type, "max_results": max_results}
        _put(body, page_token=page_token, filter=filter_string, order_by=order_by)
        answer = await self.client.post(f"{MLFLOW}/experiments/search", body)
        items = [experiment_from_json(e) for e in answer.get("experiments", [])]
        return Page(items, answer.get("next_page_token") or None)

    async def next_experiment_id(self, s: Session) -> int:
        _unavailable("the next experiment id")

    # -- runs ------------------------------------------------------------------------------

    async def get_run(self, s: Session, run_id: str) -> RunView | None:
        try:
            answer = await self.client.get(f"{MLFLOW}/runs/get", {"run_id": run_id})
        except NotFoundError:
            return None
        return run_from_json(answer["run"])

    async def search_runs(
        self, s: Session, experiment_ids: Sequence[str], *, status: str | None = None,
        view_type: str = "ACTIVE_ONLY", max_results: int = 1000, page_token: str | None = None,
        filter_string: str | None = None, order_by: Sequence[str] | None = None,
    ) -> Page[RunView]:  # fmt: skip
        experiment_ids = list(dict.fromkeys(experiment_ids))
        if not experiment_ids:
            return Page([])
        if status is not None:
            # MLflow's search has no status argument; its filter grammar has the attribute.
            by_status = f"attributes.status = '{validate_status(status)}'"
            filter_string = f"({filter_string}) AND {by_status}" if filter_string else by_status
        body: dict[str, Any] = {
            "experiment_ids": experiment_ids, "run_view_type": view_type,
            "max_results": max_results,
        }  # fmt: skip
        _put(body, page_token=page_token, filter=filter_string, order_by=order_by)
        answer = await self.client.post(f"{MLFLOW}/runs/search", body)
        items = [run_from_json(r) for r in answer.get("runs", [])]
        return Page(items, answer.get("next_page_token") or None)

    # -- metric histories ------------------------------------------------------------------

    async def _history_page(
        self, run_id: str, key: str, max_results: int, page_token: str | None
    ) -> tuple[list[Metric], str | None]:
        params: dict[str, Any] = {"run_id": run_id, "metric_key": key, "max_results": max_results}
        _put(params, page_token=page_token)
        answer = await self.client.get(f"{MLFLOW}/metrics/get-history", params)
        points = [
            Metric(m["key"], _double(m["value"]), int(m.get("timestamp", 0)), int(m.get("step", 0)))
            for m in answer.get("metrics", [])
        ]
        return points, answer.get("next_page_token") or None

    async def get_metric_history(
        self, s: Session, run_id: str, key: str, *, max_results: int = DEFAULT_HISTORY_PAGE,
        page_token: str | None = None, start_step: int | None = None, end_step: int | None = None,
    ) -> Page[Metric]:  # fmt: skip
        """As Queries.get_metric_history; with start_step or end_step, the server's pages
        are cut to the steps here, so a page may hold fewer than `max_results` points."""
        while True:
            points, token = await self._history_page(run_id, key, max_results, page_token)
            if start_step is None and end_step is None:
                return Page(points, token)
            kept = [
                m for m in points
                if (start_step is None or m.step >= start_step)
                and (end_step is None or m.step <= end_step)
            ]  # fmt: skip
            if end_step is not None and points and points[-1].step > end_step:
                token = None  # points come by step: none further is in range
            if kept or token is None:
                return Page(kept, token)
            page_token = token

    async def get_metric_series(
        self, s: Session, run_id: str, key: str, *, start_step: int | None = None,
        end_step: int | None = None,
    ) -> Points:  # fmt: skip
        steps: list[int] = []
        stamps: list[int] = []
        values: list[float] = []
        token: str | None = None
        while True:
            points, token = await self._history_page(run_id, key, SERIES_PAGE, token)
            for m in points:
                if (start_step is None or m.step >= start_step) and (
                    end_step is None or m.step <= end_step
                ):
                    steps.append(m.step)
                    stamps.append(m.timestamp)
                    values.append(m.value)
            if token is None or (end_step is not None and points and points[-1].step > end_step):
                break
        return rank_dedupe(
            np.array(steps, dtype=np.int64),
            np.array(stamps, dtype=np.int64),
            np.array(values, dtype=np.float64),
        )


def _put(body: dict[str, Any], **optional: Any) -> None:
    for k, v in optional.items():
        if v is not None:
            body[k] = list(v) if isinstance(v, list | tuple) else v


def _double(value: Any) -> float:
    """A double as protobuf's JSON writes it (NaN and the infinities as strings)."""
    if isinstance(value, str):
        return _DOUBLES[value] if value in _DOUBLES else float(value)
    return float(value)


def _pairs(items: Any) -> dict[str, str]:
    return {p["key"]: p.get("value", "") for p in items or []}


def experiment_from_json(e: dict[str, Any]) -> Experiment:
    """An Experiment from MLflow's JSON (tracker.server.entities.experiment_json)."""
    return Experiment(
        str(e["experiment_id"]), e.get("name", ""), e.get("artifact_location", ""),
        e.get("lifecycle_stage", "active"), int(e.get("creation_time", 0)),
        int(e.get("last_update_time", 0)), _pairs(e.get("tags")),
    )  # fmt: skip


def run_from_json(r: dict[str, Any]) -> RunView:
    """A RunView from MLflow's JSON (tracker.server.entities.run_json). The latest points'
    steps and timestamps are what the server sends (0 where it sends none)."""
    i = r["info"]
    end = i.get("end_time")
    info = RunInfo(
        i.get("run_id") or i["run_uuid"], str(i["experiment_id"]), i.get("run_name", ""),
        i.get("user_id", ""), i.get("status", "RUNNING"), int(i.get("start_time", 0)),
        None if end is None else int(end), i.get("lifecycle_stage", "active"),
        i.get("artifact_uri", ""),
    )  # fmt: skip
    data = r.get("data", {})
    metrics: dict[str, float] = {}
    latest: dict[str, Metric] = {}
    for m in data.get("metrics", []):
        value = _double(m["value"])
        metrics[m["key"]] = value
        latest[m["key"]] = Metric(
            m["key"], value, int(m.get("timestamp", 0)), int(m.get("step", 0))
        )
    inputs = []
    for d in r.get("inputs", {}).get("dataset_inputs", []):
        ds = d["dataset"]
        inputs.append(
            DatasetInputInfo(
                ds["name"], ds["digest"], ds["source_type"], ds["source"], ds.get("schema"),
                ds.get("profile"), _pairs(d.get("tags")),
            )
        )  # fmt: skip
    return RunView(
        info, RunData(metrics, _pairs(data.get("params")), _pairs(data.get("tags")), latest),
        tuple(inputs),
    )  # fmt: skip


def event_from_json(item: dict[str, Any]) -> RecordedEvent:
    """A recorded event from the native API's JSON (tracker.server.native.event_json)."""
    kind = item["type"]
    data = item["data"]
    event: DomainEvent
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise InvalidStateError(
            f"the tracking server sent an event of type {kind!r}, unknown here: upgrade tracker"
        )
    if cls is MetricsLogged:
        series = tuple(
            MetricSeries(s["key"], s["steps"], s["timestamps"], [_double(v) for v in s["values"]])
            for s in data["series"]
        )
        event = MetricsLogged(data["run_id"], series)
    elif cls is DatasetInputsLogged:
        event = DatasetInputsLogged(
            data["run_id"], tuple(DatasetInput(**d) for d in data["datasets"])
        )
    else:
        event = cls(**data)
    return RecordedEvent(
        int(item["position"]), uuid.UUID(hex=item["event_id"]).bytes, item["stream_id"],
        int(item["sequence"]), int(item["recorded_at"]), int(item["schema_version"]), event,
    )  # fmt: skip
