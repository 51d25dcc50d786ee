"""The native API: batches of commands in; a run's events out, paged or live as they commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import orjson
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from tracker import wire
from tracker.commands import Command, CreateRun
from tracker.errors import InvalidInputError, TrackerError
from tracker.events import MetricsLogged, RecordedEvent, RunCreated, experiment_stream, run_stream
from tracker.handler import Accepted
from tracker.serialization import recorded_to_json
from tracker.server.errors import (
    INTERNAL_ERROR,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
    RestError,
    answer_for,
    invalid_parameter,
)
from tracker.server.protocol import double, json_response, read_body
from tracker.server.services import SERVICES, Services
from tracker.stores.base import EventLog

log = logging.getLogger("tracker.server")

PREFIX: Final = "/api/tracker/v1"
DEFAULT_PAGE: Final = 1000
MAX_PAGE: Final = 10_000
_STREAM_PAGE: Final = 1000
_RUN_STREAM_PREFIX: Final = run_stream("")
_KNOWN_RUNS: Final = 100_000
"""Runs whose experiment an experiment stream remembers (it reads a forgotten one again)."""


# -- commands ------------------------------------------------------------------------------


async def post_commands(request: web.Request) -> web.StreamResponse:
    """Store a batch of commands, each as tracker.wire.encode writes it, through the server's
    writer: `{"commands": [...]}` in, `{"results": [...]}` out, one result per command in
    order, `{"position": N}` once it is durable or `{"error_code": ..., "message": ...}` when
    the write rules refused it (the others are stored all the same). A malformed command
    refuses the whole request (400, naming its index) and nothing is stored. Idempotent: a
    command whose id is in the log already is not stored again, so a batch can be resent
    whenever its answer was lost."""
    services = request.app[SERVICES]
    async with asyncio.timeout(services.config.request_timeout):
        commands = _commands(await read_body(request), services.config.max_batch_commands)
        outcomes = await services.tracker.submit_commands(commands, check_stored=True)
    results: list[dict[str, Any]] = []
    for outcome in outcomes:
        if isinstance(outcome, Accepted):
            results.append({"position": outcome.position})
            continue
        answer = answer_for(outcome)
        if answer is None:  # pragma: no cover - every TrackerError has an answer
            raise outcome
        results.append({"error_code": answer.error_code, "message": answer.message})
    return json_response({"results": results})


def _commands(body: Mapping[str, Any], limit: int) -> list[Command]:
    unknown = sorted(set(body) - {"commands"})
    if unknown:
        raise invalid_parameter(
            f'Unknown field {unknown[0]!r} in the request body: send {{"commands": [...]}}'
        )
    raw = body.get("commands")
    if not isinstance(raw, list):
        raise invalid_parameter(
            "Missing or invalid parameter 'commands': send a list of commands, each as "
            "tracker.wire.encode writes it"
        )
    if len(raw) > limit:
        raise invalid_parameter(
            f"The batch has {len(raw)} commands and this server takes at most {limit} in one "
            "request: send it in smaller batches"
        )
    commands: list[Command] = []
    seen: dict[bytes, int] = {}
    for i, item in enumerate(raw):
        try:
            command = wire.decode(item)
        except InvalidInputError as exc:
            raise invalid_parameter(
                f"Invalid value for parameter 'commands[{i}]': {exc}; nothing of the batch "
                "was stored"
            ) from None
        if isinstance(command, CreateRun) and command.artifact_uri is not None:
            # The server places a run's artifacts under its experiment's location: a client's
            # own URI would let it read any file the server can (through the UI's artifact
            # route) or write anywhere with the server's credentials.
            raise invalid_parameter(
                f"Invalid value for parameter 'commands[{i}]': a run's artifact_uri is chosen "
                "by the server; leave it out (nothing of the batch was stored)"
            )
        first = seen.setdefault(command.command_id, i)
        if first != i:
            # The log keeps one event per id: the second command would be lost unnoticed.
            raise invalid_parameter(
                f"Invalid value for parameter 'commands[{i}]': its id repeats that of "
                f"commands[{first}]; give every command an id of its own (nothing of the "
                "batch was stored)"
            )
        commands.append(command)
    return commands


# -- a run's events ------------------------------------------------------------------------


def event_json(rec: RecordedEvent) -> dict[str, Any]:
    """A recorded event as the native API answers it: `tracker replay`'s JSON line, except that
    a MetricsLogged event's points come as columns, `{"run_id", "series": [{"key", "steps",
    "timestamps", "values"}]}`, with NaN and the infinities as protobuf's JSON writes them."""
    if not isinstance(rec.event, MetricsLogged):
        return recorded_to_json(rec)
    out = recorded_to_json(_without_points(rec))
    out["data"] = {
        "run_id": rec.event.run_id,
        "series": [
            {
                "key": s.key,
                "steps": s.steps.tolist(),
                "timestamps": s.timestamps.tolist(),
                "values": _values(s.values),
            }
            for s in rec.event.series
        ],
    }
    return out


def _without_points(rec: RecordedEvent) -> RecordedEvent:
    assert isinstance(rec.event, MetricsLogged)
    return RecordedEvent(
        rec.position, rec.event_id, rec.stream_id, rec.sequence, rec.recorded_at,
        rec.schema_version, MetricsLogged(rec.event.run_id, ()),
    )  # fmt: skip


def _values(values: Any) -> list[Any]:
    if bool(np.isfinite(values).all()):
        return list(values.tolist())
    return [double(v) if not math.isfinite(v) else v for v in values.tolist()]


async def get_run_events(request: web.Request) -> web.StreamResponse:
    """A page of a run's events in log order: `?after=POS` (exclusive, default 0) and
    `?limit=N` (default 1000, at most 10000). Answers `{"events": [...]}`, with `next_after`
    (the `after` of the next page) when the page is full and there may be more."""
    services = request.app[SERVICES]
    run_id = request.match_info["run_id"]
    after = _integer(request.query, "after", 0, low=0)
    limit = _integer(request.query, "limit", DEFAULT_PAGE, low=1, high=MAX_PAGE)
    log_ = services.tracker.log
    stream = run_stream(run_id)
    async with asyncio.timeout(services.config.request_timeout):
        page = await log_.read_stream(stream, after=after, limit=limit)
        if not page and await log_.stream_head(stream) == 0:
            raise _no_run(run_id)
    body: dict[str, Any] = {"events": [event_json(r) for r in page]}
    if len(page) == limit:
        body["next_after"] = page[-1].position
    return json_response(body)


def _no_run(run_id: str) -> RestError:
    return RestError(RESOURCE_DOES_NOT_EXIST, f"Run with id={run_id} not found")


def _integer(
    query: Mapping[str, str], name: str, default: int, *, low: int, high: int | None = None
) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    bounds = f"an integer from {low}" + (f" to {high}" if high is not None else " up")
    if value is None or value < low or (high is not None and value > high):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise invalid_parameter(
            f"Invalid value {shown!r} for parameter '{name}' supplied: it must be {bounds}"
        )
    return value


# -- live streams --------------------------------------------------------------------------


class LogWatch:
    """The head of the log, polled once per interval for every open stream at once (and not
    at all while no stream waits): streams read the log by position after it moves."""

    def __init__(self, log_: EventLog, interval: float) -> None:
        self.head = 0
        """The head as last polled; it only grows."""
        self._log = log_
        self._interval = interval
        self._moved = asyncio.Event()
        self._waiters = 0
        self._task: asyncio.Task[None] | None = None

    async def wait_past(self, position: int) -> None:
        """Return once the polled head is beyond `position`."""
        self._waiters += 1
        try:
            while self.head <= position:
                if self._task is None or self._task.done():
                    self._task = asyncio.create_task(self._poll(), name="tracker-log-watch")
                await self._moved.wait()
        finally:
            self._waiters -= 1

    async def _poll(self) -> None:
        failing = False
        # The loop's test and its exit happen in one step: a waiter that comes after it
        # sees the task done and starts another.
        while self._waiters:
            try:
                head = await self._log.head()
            except Exception as exc:  # the store's trouble: streams wait, polling goes on
                if not failing:
                    log.warning("event streams: cannot read the log's head (%s); retrying", exc)
                failing = True
            else:
                failing = False
                if head > self.head:
                    self.head = head
                    moved, self._moved = self._moved, asyncio.Event()
                    moved.set()
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Streams:
    """The open event streams, so that a shutdown can end them instead of waiting for them."""

    def __init__(self) -> None:
        self.open: set[EventSourceResponse] = set()
        self.closing = False
        self.watch: LogWatch | None = None

    def watch_for(self, services: Services) -> LogWatch:
        if self.watch is None:
            self.watch = LogWatch(services.tracker.log, services.config.stream_poll_interval)
        return self.watch

    async def close(self) -> None:
        """End every open stream (their clients reconnect with Last-Event-ID elsewhere), and
        refuse new ones."""
        self.closing = True
        for sse in list(self.open):
            with contextlib.suppress(RuntimeError):
                sse.stop_streaming()
        if self.watch is not None:
            await self.watch.aclose()


STREAMS: Final = web.AppKey("streams", Streams)


class _Follow:
    """What one stream follows: a run's stream, or an experiment (its own stream and those of
    its runs)."""

    def __init__(self, log_: EventLog, run_id: str | None, experiment_id: str | None) -> None:
        self.log = log_
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._experiment_of: OrderedDict[str, str | None] = OrderedDict()

    async def page(self, after: int) -> tuple[list[RecordedEvent], int, bool]:
        """The next events to send after position `after`, the position read up to, and
        whether the page was full (there may be more at once)."""
        if self.run_id is not None:
            page = await self.log.read_stream(
                run_stream(self.run_id), after=after, limit=_STREAM_PAGE
            )
            return page, page[-1].position if page else after, len(page) == _STREAM_PAGE
        scanned = await self.log.read(after, _STREAM_PAGE)
        mine = [rec for rec in scanned if await self._ours(rec)]
        return mine, scanned[-1].position if scanned else after, len(scanned) == _STREAM_PAGE

    async def _ours(self, rec: RecordedEvent) -> bool:
        assert self.experiment_id is not None
        if rec.stream_id == experiment_stream(self.experiment_id):
            return True
        if not rec.stream_id.startswith(_RUN_STREAM_PREFIX):
            return False
        if isinstance(rec.event, RunCreated):
            self._remember(rec.stream_id, rec.event.experiment_id)
        elif rec.stream_id not in self._experiment_of:
            # A run created before the stream's start: its first event names its experiment
            # (runs never move between experiments).
            first = await self.log.read_stream(rec.stream_id, limit=1)
            created = first[0].event if first else None
            self._remember(
                rec.stream_id, created.experiment_id if isinstance(created, RunCreated) else None
            )
        self._experiment_of.move_to_end(rec.stream_id)
        return self._experiment_of[rec.stream_id] == self.experiment_id

    def _remember(self, stream_id: str, experiment_id: str | None) -> None:
        self._experiment_of[stream_id] = experiment_id
        if len(self._experiment_of) > _KNOWN_RUNS:
            self._experiment_of.popitem(last=False)


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one per log event of a run (`?run_id=`) or of an experiment and its
    runs (`?experiment_id=`), in position order, each with `id: <position>` and the event as
    `data:` (JSON, as the run-events page gives it). It starts after `?after=POS` (default 0:
    from the beginning), or after the `Last-Event-ID` header, which takes precedence; it
    follows the log by position, so an event that commits late is never skipped. A comment
    line is sent every `stream_heartbeat` seconds. It ends when the client goes away or the
    server shuts down."""
    services = request.app[SERVICES]
    streams = request.app[STREAMS]
    query = request.query
    run_id, experiment_id = query.get("run_id"), query.get("experiment_id")
    if (run_id is None) == (experiment_id is None):
        raise invalid_parameter(
            "Give exactly one of the parameters 'run_id' and 'experiment_id': the run or the "
            "experiment to follow"
        )
    last_id = request.headers.get(EventSourceResponse.DEFAULT_LAST_EVENT_HEADER)
    if last_id is not None:
        after = _integer({"Last-Event-ID": last_id}, "Last-Event-ID", 0, low=0)
    else:
        after = _integer(query, "after", 0, low=0)
    log_ = services.tracker.log
    async with asyncio.timeout(services.config.request_timeout):
        if run_id is not None and await log_.stream_head(run_stream(run_id)) == 0:
            raise _no_run(run_id)
        if experiment_id is not None and not await log_.stream_head(
            experiment_stream(experiment_id)
        ):
            raise RestError(
                RESOURCE_DOES_NOT_EXIST, f"No Experiment with id={experiment_id} exists"
            )
    if streams.closing:
        raise RestError(
            TEMPORARILY_UNAVAILABLE,
            "The server is shutting down: reconnect (with Last-Event-ID) to another one",
        )
    follow = _Follow(log_, run_id, experiment_id)
    watch = streams.watch_for(services)
    sse = EventSourceResponse(ping_interval=services.config.stream_heartbeat)
    await sse.prepare(request)
    streams.open.add(sse)
    if streams.closing:  # the shutdown began while this stream was being prepared
        sse.stop_streaming()
    try:
        pump = asyncio.create_task(_pump(sse, follow, watch, after))
        try:
            await sse.wait()  # until the client goes away or stop_streaming()
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    finally:
        streams.open.discard(sse)
    return sse


async def _pump(sse: EventSourceResponse, follow: _Follow, watch: LogWatch, after: int) -> None:
    """Send what `follow` finds after `after`, then wait for the log to move; for ever, until
    the client goes away. Ends the stream when it stops (an `error` event says why, when the
    store failed)."""
    try:
        while True:
            seen = watch.head  # taken before the read: everything up to it has committed
            page, after, full = await follow.page(after)
            for rec in page:
                await sse.send(orjson.dumps(event_json(rec)).decode(), id=str(rec.position))
            if not full:
                await watch.wait_past(max(seen, after))
    except ConnectionError:  # the client went away
        pass
    except TrackerError as exc:
        answer = answer_for(exc)
        code = answer.error_code if answer is not None else INTERNAL_ERROR
        log.warning("an event stream stopped: %s", exc)
        with contextlib.suppress(Exception):
            message = f"{exc}; reconnect with Last-Event-ID to resume"
            await sse.send(orjson.dumps({"error_code": code, "message": message}).decode(),
                           event="error")  # fmt: skip
    except Exception:
        log.exception("an event stream failed")
    finally:
        with contextlib.suppress(RuntimeError):
            sse.stop_streaming()


async def close_streams(app: web.Application) -> None:
    """End the open event streams and refuse new ones (a shutdown does not wait for them)."""
    await app[STREAMS].close()


def add_routes(app: web.Application) -> None:
    """The native API under /api/tracker/v1, and the shutdown hook that ends its streams."""
    app[STREAMS] = Streams()
    app.on_shutdown.append(close_streams)
    for path in ("/commands", "/events"):
        app.router.add_post(PREFIX + path, post_commands)
    app.router.add_get(PREFIX + "/runs/{run_id}/events", get_run_events)
    app.router.add_get(PREFIX + "/events/stream", stream_events)
