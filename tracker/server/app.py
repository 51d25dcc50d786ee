"""The aiohttp application: one Tracker per process, MLflow's REST API, artifacts, health, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from aiohttp import web

from tracker import ui
from tracker.client import Tracker
from tracker.server import artifacts_proxy, mlflow_rest, native, series_api
from tracker.server.artifacts_proxy import ArtifactProxy
from tracker.server.config import ServerConfig
from tracker.server.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    INVALID_PATH,
    RestError,
    answer_for,
)
from tracker.server.metrics import ServerMetrics
from tracker.server.protocol import json_response
from tracker.server.services import SERVICES, Handler, Services, rpc_of

log = logging.getLogger("tracker.server")

_SCHEME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")


class ServerTracker(Tracker):
    """Tracker with the one change the server needs until the core has it.

    TODO(#11): Tracker._artifact_root prefixes `file://` to every root without `://`, which
    turns `mlflow-artifacts:/` into a local path; drop this adapter once roots that already
    carry a scheme are kept as they are.
    """

    def _artifact_root(self) -> str:
        root = self._default_artifact_root
        if root and _SCHEME_RE.match(root) and "://" not in root:
            return root.rstrip("/")
        return super()._artifact_root()


class InFlight:
    """The requests being answered, so that a shutdown can wait for them to finish.

    aiohttp's own graceful shutdown stops reading from open connections at once, which cuts
    off an upload whose body is still arriving (aio-libs/aiohttp#2298); `serve` stops
    accepting, waits here, and only then lets aiohttp close what is left.
    """

    def __init__(self) -> None:
        self.count = 0
        self.stopping = False
        self.idle = asyncio.Event()
        """Set while no request is being answered."""
        self.busy = asyncio.Event()
        """Set while at least one is."""
        self.idle.set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.count += 1
        self.idle.clear()
        self.busy.set()
        try:
            response = await handler(request)
            if self.stopping:
                response.force_close()  # no further requests on this connection
            return response
        finally:
            self.count -= 1
            if self.count == 0:
                self.busy.clear()
                self.idle.set()

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for every request in progress to be answered."""
        self.stopping = True
        try:
            async with asyncio.timeout(timeout):
                await self.idle.wait()
        except TimeoutError:
            log.warning("%d requests still running after %.0fs; cancelling them", self.count,
                        timeout)  # fmt: skip


METRICS: Final = web.AppKey("metrics", ServerMetrics)
IN_FLIGHT: Final = web.AppKey("in_flight", InFlight)


def package_version() -> str:
    try:
        return version("tracker")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def create_app(config: ServerConfig | None = None) -> web.Application:
    """The server's application (start it with `serve`, or aiohttp's test server). Its
    Tracker opens on startup and closes on cleanup, draining its writer into the store."""
    config = config or ServerConfig()
    metrics = ServerMetrics()
    in_flight = InFlight()
    app = web.Application(
        client_max_size=config.max_request_bytes,
        middlewares=[in_flight.middleware, metrics.middleware, _errors_middleware],
    )
    app[METRICS] = metrics
    app[IN_FLIGHT] = in_flight
    app.cleanup_ctx.append(_services(config))
    app.router.add_get("/health", _health)
    app.router.add_get("/version", _version)
    app.router.add_get("/metrics", _metrics)
    mlflow_rest.add_routes(app)
    artifacts_proxy.add_routes(app)
    native.add_routes(app)
    series_api.add_routes(app)
    ui.add_routes(app)  # the web UI at /
    return app


async def serve(
    app: web.Application, sock: socket.socket, shutdown_timeout: float, stop: asyncio.Event
) -> None:
    """Serve `app` on the listening `sock` until `stop` is set; then stop accepting, end the
    open event streams, let the requests in progress finish (up to `shutdown_timeout`), and
    clean up: the Tracker's writer drains into the store before this returns."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()  # opens the Tracker: a store that cannot open raises here
    try:
        site = web.SockSite(runner, sock)
        await site.start()
        await stop.wait()
        await site.stop()
        await native.close_streams(app)  # event streams never end on their own
        await app[IN_FLIGHT].drain(shutdown_timeout)
    finally:
        await runner.cleanup()


def _services(
    config: ServerConfig,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        proxy = (  # made before the Tracker opens: a bad destination then leaves nothing open
            ArtifactProxy(config.artifacts_destination, config.spool_dir)
            if config.serve_artifacts
            else None
        )
        tracker = ServerTracker(
            config.backend_store_uri, default_artifact_root=config.artifact_root
        )
        await tracker.open()
        app[SERVICES] = Services(tracker, proxy, config)
        sampler = asyncio.create_task(app[METRICS].sample_forever(tracker, config.metrics_interval))
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            try:
                await tracker.aclose()
            finally:
                if proxy is not None:
                    await proxy.aclose()

    return ctx


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def _version(request: web.Request) -> web.Response:
    return web.Response(text=package_version())


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    await metrics.sample(request.app[SERVICES].tracker)
    body, content_type = metrics.render()
    # prometheus-client's content type carries parameters aiohttp's content_type= refuses.
    return web.Response(body=body, headers={"Content-Type": content_type})


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error in MLflow's format, never a traceback in a response: tracker's errors by the
    one mapping in errors.py, anything unexpected logged here with an id the answer repeats."""
    try:
        if "#" in request.raw_path:
            # HTTP request targets carry no fragment: what follows '#' was cut off by the
            # parser, so the path or query we were given is not the one that was sent.
            raise RestError(INVALID_PARAMETER_VALUE, INVALID_PATH)
        return await handler(request)
    except web.HTTPNotFound:
        return web.Response(status=404)  # MLflow answers unknown endpoints with a bare 404
    except web.HTTPRequestEntityTooLarge as exc:
        return json_response(
            {
                "error_code": INVALID_PARAMETER_VALUE,
                "message": f"The request body is larger than the server accepts ({exc.text}); "
                "send smaller batches, or raise the server's --max-request-size",
            },
            status=413,
        )
    except web.HTTPException:
        raise
    except Exception as exc:
        answer = answer_for(exc, rpc_of(request))
        if answer is None:
            incident = secrets.token_hex(6)
            log.exception("internal error %s in %s %s", incident, request.method, request.path)
            return json_response(
                {
                    "error_code": INTERNAL_ERROR,
                    "message": f"Internal server error (incident {incident}); the server log "
                    "has the details",
                },
                status=500,
            )
        if answer.status >= 500:
            log.error("%s %s: %s: %s", request.method, request.path, answer.error_code, exc)
        return json_response(
            {"error_code": answer.error_code, "message": answer.message}, status=answer.status
        )
