"""Prometheus metrics: requests by route and status, latency, and the writer's statistics."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from tracker.client import Tracker
from tracker.server.config import MULTIPROC_ENV
from tracker.server.services import Handler

log = logging.getLogger("tracker.server")

_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                           5.0, 10.0, 30.0, 60.0)  # fmt: skip
_HEAD_TIMEOUT: Final = 5.0
_UNMATCHED: Final = "<unmatched>"


class ServerMetrics:
    """The server's metrics, in a registry of their own (several apps can live in one test
    process). With several workers, prometheus-client's multiprocess mode (its directory in
    $PROMETHEUS_MULTIPROC_DIR, set by `tracker server`) adds every worker's values up, so a
    scrape answered by any worker reports the whole server."""

    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        # In multiprocess mode values live in files, and a scrape reads them all.
        registry = None if self.multiprocess_dir else CollectorRegistry()
        self.registry = registry
        self.requests = Counter(
            "tracker_http_requests", "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "tracker_http_request_duration_seconds", "Time to answer a request, by route.",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "tracker_http_requests_in_flight", "Requests being answered.",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.queue_depth = self._gauge(
            "tracker_writer_queue_depth", "Items waiting in the writers' in-memory queues."
        )
        self.spilled = self._gauge(
            "tracker_writer_spilled_pending", "Points waiting in the writers' spill files."
        )
        self.lag = self._gauge(
            "tracker_projector_lag_events",
            "Log positions not yet applied to this worker's views.",
            "livemax",
        )
        self.position = self._gauge("tracker_log_position", "The head of the event log.", "livemax")
        self.batch_size = self._gauge(
            "tracker_writer_batch_size",
            "Events and points per batch committed during the last sampling interval.",
            "livemax",
        )
        self.batches = self._counter("tracker_writer_batches", "Batches the writers committed.")
        self.events = self._counter("tracker_writer_events", "Events the writers appended.")
        self.points = self._counter("tracker_writer_points", "Metric points the writers appended.")
        self.retries = self._counter("tracker_writer_retries", "Store writes the writers retried.")
        self.errors = self._counter("tracker_writer_errors", "Store writes that failed.")
        self._last = (0, 0, 0, 0, 0)

    def _gauge(self, name: str, doc: str, mode: str = "livesum") -> Gauge:
        return Gauge(name, doc, registry=self.registry, multiprocess_mode=mode)  # type: ignore[arg-type]

    def _counter(self, name: str, doc: str) -> Counter:
        return Counter(name, doc, registry=self.registry)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = _route(request)
        started = time.perf_counter()
        status = 500
        self.in_flight.inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.in_flight.dec()
            self.requests.labels(route, request.method, str(status)).inc()
            self.latency.labels(route, request.method).observe(time.perf_counter() - started)

    async def sample(self, tracker: Tracker) -> None:
        """Copy the writer's statistics (and the log's head) into the metrics."""
        stats = tracker.statistics()
        try:
            async with asyncio.timeout(_HEAD_TIMEOUT):
                head = await tracker.log.head()
        except Exception as exc:  # a sample is skipped, the store's trouble shows elsewhere
            log.debug("metrics: could not read the log head: %s", exc)
            head = max(stats.position, stats.projected_position)
        self.queue_depth.set(stats.queue_depth)
        self.spilled.set(stats.spilled_pending)
        self.position.set(head)
        self.lag.set(max(0, head - stats.projected_position))
        now = (stats.batches, stats.events_written, stats.points_written, stats.retries,
               stats.errors)  # fmt: skip
        deltas = [max(0, n - last) for n, last in zip(now, self._last, strict=True)]
        self._last = now
        for counter, delta in zip(
            (self.batches, self.events, self.points, self.retries, self.errors), deltas, strict=True
        ):
            if delta:
                counter.inc(delta)
        if deltas[0]:
            self.batch_size.set((deltas[1] + deltas[2]) / deltas[0])

    async def sample_forever(self, tracker: Tracker, interval: float) -> None:
        while True:
            await self.sample(tracker)
            await asyncio.sleep(interval)

    def render(self) -> tuple[bytes, str]:
        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


def _route(request: web.Request) -> str:
    # The route's pattern, never the raw path: arbitrary paths must not make new series.
    resource = request.match_info.route.resource
    if resource is None or request.match_info.http_exception is not None:
        return _UNMATCHED
    return resource.canonical
