"""The web UI: the app shell and its static assets, plus the few reads it needs beyond the APIs."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from tracker.artifacts import artifact_store_for_uri
from tracker.server.artifacts_proxy import (
    content_disposition,
    content_type,
    proxied_prefix,
    safe_path,
)
from tracker.server.entities import metric_json, run_json
from tracker.server.errors import (
    INVALID_PARAMETER_VALUE,
    INVALID_PATH,
    RESOURCE_DOES_NOT_EXIST,
    RestError,
)
from tracker.server.protocol import json_response
from tracker.server.series_api import PREFIX
from tracker.server.services import SERVICES

STATIC: Final = Path(__file__).resolve().parent / "static"
"""The UI's assets, shipped as package data: served as they are, no build step."""
_CHUNK: Final = 1 << 20

__all__ = ["STATIC", "add_routes"]


async def index(request: web.Request) -> web.StreamResponse:
    """The app shell; every page is a hash route (`#/experiments`, `#/run/ID`...) in app.js."""
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def log_head(request: web.Request) -> web.StreamResponse:
    """GET {PREFIX}/log/head: `{"position": N}`, the log's last position now, so that a page
    can follow the event stream from here on (`?after=N`) without replaying what it read."""
    services = request.app[SERVICES]
    async with asyncio.timeout(services.config.request_timeout):
        return json_response({"position": await services.tracker.log.head()})


async def run_state(request: web.Request) -> web.StreamResponse:
    """GET {PREFIX}/runs/{run_id}/state?at=POS: the run as it was at log position POS
    (Tracker.run_state_at), as `{"run": <MLflow Run>, "latest": [<Metric with step and
    timestamp>...], "at": POS}`; an unknown run, or one created after POS, is a 404."""
    services = request.app[SERVICES]
    raw = request.query.get("at", "")
    try:
        at = int(raw)
    except ValueError:
        at = -1
    if at < 0:
        raise RestError(
            INVALID_PARAMETER_VALUE,
            f"Invalid value {raw[:40]!r} for parameter 'at' supplied: give a log position, "
            "an integer from 0 up",
        )
    async with asyncio.timeout(services.config.request_timeout):
        view = await services.tracker.run_state_at(request.match_info["run_id"], at)
    body: dict[str, Any] = {
        "run": run_json(view, outputs=False),
        "latest": [metric_json(m) for m in view.data.latest.values()],
        "at": at,
    }
    return json_response(body)


async def artifact(request: web.Request) -> web.StreamResponse:
    """GET {PREFIX}/runs/{run_id}/artifacts/{path}: one artifact file of a run, wherever its
    artifact URI points (through the proxy's destination for `mlflow-artifacts:` URIs, else the
    URI's own store). Inline by default, `?download=1` for an attachment. Served with
    `nosniff` and a sandboxing CSP, so a logged HTML or SVG file never runs script here."""
    services = request.app[SERVICES]
    path = safe_path(request.match_info["path"])
    if path is None:
        raise RestError(INVALID_PARAMETER_VALUE, INVALID_PATH)
    timeout = services.config.request_timeout
    async with asyncio.timeout(timeout):
        run = await services.tracker.get_run(request.match_info["run_id"])
    uri = run.info.artifact_uri
    prefix = proxied_prefix(uri)
    name = posixpath.basename(path)
    headers = {
        "Content-Type": content_type(path),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "Cache-Control": "no-cache",
    }
    if services.proxy is not None and prefix is None:
        # A server that proxies artifacts serves only what is under its destination: an
        # experiment's location is a client's to choose, and must not open the server's files.
        raise RestError(
            RESOURCE_DOES_NOT_EXIST,
            f"Run {run.info.run_id}'s artifacts are not stored through this server",
        )
    if request.query.get("download") not in (None, "", "0", "false"):
        headers["Content-Disposition"] = content_disposition(name)
    async with contextlib.AsyncExitStack() as stack:
        if prefix is not None and services.proxy is not None:  # the server's destination
            store = services.proxy.store
            path = posixpath.join(prefix, path) if prefix else path
        else:
            store = await stack.enter_async_context(artifact_store_for_uri(uri))
        chunks = await stack.enter_async_context(
            contextlib.aclosing(store.open(path, chunk_size=_CHUNK))
        )
        async with asyncio.timeout(timeout):
            # The first read finds a missing file while an error can still be answered.
            chunk = await anext(chunks, b"")
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        while chunk:
            await response.write(chunk)
            async with asyncio.timeout(timeout):
                chunk = await anext(chunks, b"")
        await response.write_eof()
        return response
    raise AssertionError("unreachable")  # pragma: no cover - the block always returns


def add_routes(app: web.Application) -> None:
    """`/` (the app shell), `/static/...` (its assets; aiohttp's static route refuses paths
    that leave the folder) and the UI's reads under PREFIX."""
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.router.add_get(PREFIX + "/log/head", log_head)
    app.router.add_get(PREFIX + "/runs/{run_id}/state", run_state)
    app.router.add_get(PREFIX + "/runs/{run_id}/artifacts/{path:.+}", artifact)
