"""MLflow's artifact proxy (`/api/2.0/mlflow-artifacts/...`) over the `--artifacts-destination` store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import re
import tempfile
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

from aiohttp import web

from tracker.artifacts import artifact_store_for_uri
from tracker.artifacts.base import (
    ArtifactEntry,
    ArtifactNotFoundError,
    guess_content_type,
    run_to_completion,
)
from tracker.artifacts.paths import validate_artifact_path
from tracker.errors import ArtifactError, InvalidInputError
from tracker.server.errors import (
    INVALID_PARAMETER_VALUE,
    INVALID_PATH,
    MULTIPART_UNSUPPORTED,
    NOT_IMPLEMENTED,
    RestError,
    invalid_parameter,
)
from tracker.server.protocol import Field, Message, json_response, missing_value, parse, read_body
from tracker.server.services import SERVICES, Handler

log = logging.getLogger("tracker.server")

PREFIXES: Final = ("/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts")
_HTTP_ANCHOR: Final = "/api/2.0/mlflow-artifacts/artifacts/"
_CHUNK: Final = 1 << 20
# Served as text/plain whatever else their extension suggests, as MLflow serves them: a
# browser then never runs a script someone logged (MLmodel and MLproject have no extension).
_TEXT_EXTENSIONS: Final = frozenset({
    "txt", "log", "err", "cfg", "conf", "cnf", "cf", "ini", "properties", "prop", "hocon", "toml",
    "yaml", "yml", "xml", "json", "js", "py", "py3", "csv", "tsv", "md", "rst", "ipynb",
    "MLmodel", "MLproject",
})  # fmt: skip
_TOKEN_RE: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# S3's most parts in one upload.
_MAX_PARTS: Final = 10_000
# How long a part's presigned URL stays valid, in seconds: boto's default, as in MLflow.
_PART_URL_TTL: Final = 3600
_DISABLED: Final = (
    "Endpoint: {route} disabled due to the mlflow server running with `--no-serve-artifacts`. "
    "To enable artifacts server functionality, run `mlflow server` with `--serve-artifacts`"
)


def content_type(path: str) -> str:
    name = posixpath.basename(path)
    extension = posixpath.splitext(name)[1].lstrip(".") or name
    return "text/plain" if extension in _TEXT_EXTENSIONS else guess_content_type(name)


def content_disposition(name: str) -> str:
    """`attachment` with the file name, as RFC 6266 allows: a token or a quoted string, and
    for a non-ASCII name an ASCII fallback beside the UTF-8 `filename*`."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    fallback = ascii_name or "download"
    if not _TOKEN_RE.match(fallback):
        fallback = '"' + fallback.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if ascii_name == name:
        return f"attachment; filename={fallback}"
    return f"attachment; filename={fallback}; filename*=UTF-8''{quote(name, safe='')}"


def safe_path(path: str | None) -> str | None:
    """A request's artifact path made safe, or MLflow's exact 400 "Invalid path"."""
    if path is None or path == "":
        return None
    try:
        return validate_artifact_path(path)
    except InvalidInputError:
        raise RestError(INVALID_PARAMETER_VALUE, INVALID_PATH) from None


def proxied_prefix(artifact_uri: str) -> str | None:
    """Where under the destination a proxied run artifact URI points: the path of an
    `mlflow-artifacts:` URI, or what follows the artifacts route in an http(s) URI; None for
    URIs the client writes to directly (file, s3)."""
    parts = urlsplit(artifact_uri)
    if parts.scheme == "mlflow-artifacts":
        return parts.path.strip("/")
    if parts.scheme in ("http", "https") and _HTTP_ANCHOR in parts.path:
        return parts.path.split(_HTTP_ANCHOR, 1)[1].strip("/")
    return None


class ArtifactProxy:
    """The destination store, plus what streaming through an HTTP request needs.

    TODO(#11): uploads are spooled to a temporary file and then put, because ArtifactStore
    has no public put from a stream; a streaming put would save the copy.
    """

    def __init__(self, destination: str, spool_dir: str | None = None) -> None:
        self.destination = destination
        self.store = artifact_store_for_uri(destination)
        self.spool_dir = spool_dir

    async def aclose(self) -> None:
        await self.store.aclose()

    async def put_stream(
        self, path: str, read: Callable[[], Awaitable[bytes]], idle_timeout: float
    ) -> None:
        """Store what `read` yields (until b"") at `path`; each read may wait `idle_timeout`."""
        # Created on the loop: made in a thread, a spool file would outlive an upload cancelled
        # while the thread ran, with nobody left to delete it.
        fd, spool = tempfile.mkstemp(".upload", "tracker-", self.spool_dir)
        file = os.fdopen(fd, "wb")
        try:
            buffer = bytearray()
            while True:
                async with asyncio.timeout(idle_timeout):
                    chunk = await read()
                buffer += chunk
                if buffer and (len(buffer) >= _CHUNK or not chunk):
                    await asyncio.to_thread(file.write, bytes(buffer))
                    buffer.clear()
                if not chunk:
                    break
            file.close()
            await self.store.put_file(spool, path)
        finally:
            # On the loop, not in a thread: an upload cancelled mid-way must not end before its
            # spool file is gone. The buffered file's lock makes close() wait for a write still
            # running in a thread whose awaiter was cancelled.
            file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spool)

    async def list_under(self, prefix: str, path: str | None) -> list[tuple[str, ArtifactEntry]]:
        """One level under `prefix/path`, each entry named relative to `prefix` (a run's
        artifact root), as MLflow's listArtifacts names them."""
        where = posixpath.join(prefix, path) if path else prefix
        entries = await self.store.list(where or None)
        out = []
        for entry in entries:
            name = posixpath.basename(entry.path)
            out.append((posixpath.join(path, name) if path else name, entry))
        return out


def _proxy(request: web.Request) -> ArtifactProxy:
    proxy = request.app[SERVICES].proxy
    if proxy is None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        raise web.HTTPServiceUnavailable(text=_DISABLED.format(route=route))
    return proxy


def _path(request: web.Request) -> str:
    path = safe_path(request.match_info.get("path", ""))
    if path is None:
        raise RestError(INVALID_PARAMETER_VALUE, INVALID_PATH)
    return path


async def upload(request: web.Request) -> web.StreamResponse:
    proxy = _proxy(request)
    path = _path(request)
    timeout = request.app[SERVICES].config.request_timeout
    try:
        await proxy.put_stream(path, request.content.readany, timeout)
    except ConnectionError:
        # The client went away mid-upload: nothing was stored (puts are atomic), and there
        # is nobody to answer.
        log.info("upload of %r abandoned by the client; nothing stored", path)
        raise web.HTTPBadRequest(text="the upload was cut off before its end") from None
    return json_response({})


async def download(request: web.Request) -> web.StreamResponse:
    proxy = _proxy(request)
    path = _path(request)
    timeout = request.app[SERVICES].config.request_timeout
    async with contextlib.aclosing(proxy.store.open(path, chunk_size=_CHUNK)) as chunks:
        async with asyncio.timeout(timeout):
            # The first read finds a missing file while an error can still be answered.
            chunk = await anext(chunks, b"")
        name = posixpath.basename(path)
        response = web.StreamResponse(
            headers={
                "Content-Type": content_type(path),
                "Content-Disposition": content_disposition(name),
                "X-Content-Type-Options": "nosniff",
            }
        )
        await response.prepare(request)
        while chunk:
            await response.write(chunk)
            async with asyncio.timeout(timeout):
                chunk = await anext(chunks, b"")
        await response.write_eof()
        return response


async def list_artifacts(request: web.Request) -> web.StreamResponse:
    proxy = _proxy(request)
    path = safe_path(request.query.get("path"))
    entries = await proxy.store.list(path)
    files = []
    for entry in entries:
        item: dict[str, object] = {"path": posixpath.basename(entry.path), "is_dir": entry.is_dir}
        if not entry.is_dir and entry.size is not None:
            item["file_size"] = entry.size
        files.append(item)
    return json_response({"files": files} if files else {})


async def delete(request: web.Request) -> web.StreamResponse:
    proxy = _proxy(request)
    path = _path(request)
    # Deleting what is not there succeeds, as on MLflow's local and S3 repositories.
    with contextlib.suppress(ArtifactNotFoundError):
        await proxy.store.delete(path)
    return json_response({})


_MPU_SCHEMAS: Final = {
    "create": (Field("path", required=True), Field("num_parts", "int64")),
    "complete": (Field("path", required=True), Field("upload_id"),
                 Field("parts", "message", repeated=True, required=True, fields=(
                     Field("part_number", "int64"), Field("etag"), Field("url")))),
    "abort": (Field("path", required=True), Field("upload_id")),
}  # fmt: skip


@runtime_checkable
class MultipartStore(Protocol):
    """A destination store whose multipart uploads the client sends itself, part by part, to
    presigned URLs (S3ArtifactStore's methods of these names)."""

    async def create_multipart(self, path: str) -> str: ...

    async def presign_part(
        self, path: str, upload_id: str, part_number: int, expires: int = ...
    ) -> str: ...

    async def complete_multipart(
        self, path: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None: ...

    async def abort_multipart(self, path: str, upload_id: str) -> bool: ...


def multipart_store(proxy: ArtifactProxy) -> MultipartStore | None:
    """The destination store if it takes multipart uploads sent to presigned URLs (S3),
    else None: what MLflow's server-info reports as `multipart_uploads_enabled`."""
    return proxy.store if isinstance(proxy.store, MultipartStore) else None


async def _multipart_target(
    request: web.Request, action: str
) -> tuple[MultipartStore, str, Message]:
    """The store, the artifact's path and the request, checked in MLflow's order: the URL's
    path, the body, then whether the destination takes multipart uploads."""
    proxy = _proxy(request)
    directory = _path(request)
    message = parse(await read_body(request), _MPU_SCHEMAS[action])
    store = multipart_store(proxy)
    if store is None:
        # MLflow's own answer, on which its clients fall back to a streamed PUT.
        raise RestError(NOT_IMPLEMENTED, MULTIPART_UNSUPPORTED)
    # `path` is the client's local file: as in MLflow, only its name is kept, under the URL's
    # directory. Split on both separators, since a Windows client sends its own kind.
    name = re.split(r"[\\/]", message.text("path"))[-1]
    if not name:
        raise invalid_parameter(
            f"'path' must end with the name of the file uploaded; got {message.text('path')!r}"
        )
    path = safe_path(posixpath.join(directory, name))
    assert path is not None
    if action != "create" and not message.string("upload_id"):
        raise missing_value("upload_id")
    return store, path, message


async def create_multipart(request: web.Request) -> web.StreamResponse:
    store, path, message = await _multipart_target(request, "create")
    num_parts = message.whole("num_parts")
    if not 1 <= num_parts <= _MAX_PARTS:
        raise invalid_parameter(
            f"num_parts must be between 1 and {_MAX_PARTS} (S3's limit); got {num_parts}"
        )
    upload_id = await store.create_multipart(path)
    try:
        credentials = []
        for number in range(1, num_parts + 1):
            url = await store.presign_part(path, upload_id, number, _PART_URL_TTL)
            # MLflow's JSON leaves out the empty `headers` map, as protobuf does.
            credentials.append({"url": url, "part_number": number})
            if number % 100 == 0:
                await asyncio.sleep(0)  # signing is CPU work: let other requests in
    except BaseException as exc:
        # Nobody else knows the upload's id: abort it, or its parts would be billed forever.
        try:
            await run_to_completion(store.abort_multipart(path, upload_id))
        except ArtifactError as abort_error:
            exc.add_note(f"and aborting the multipart upload {upload_id!r} failed: {abort_error}")
        raise
    return json_response({"upload_id": upload_id, "credentials": credentials})


async def complete_multipart(request: web.Request) -> web.StreamResponse:
    store, path, message = await _multipart_target(request, "complete")
    parts = [
        (part.whole("part_number"), part.string("etag") or "") for part in message.messages("parts")
    ]
    await store.complete_multipart(path, message.text("upload_id"), parts)
    return json_response({})


async def abort_multipart(request: web.Request) -> web.StreamResponse:
    store, path, message = await _multipart_target(request, "abort")
    # An upload no longer in progress is as good as aborted, as a delete of nothing succeeds.
    await store.abort_multipart(path, message.text("upload_id"))
    return json_response({})


_MULTIPART_HANDLERS: Final[dict[str, Handler]] = {
    "create": create_multipart,
    "complete": complete_multipart,
    "abort": abort_multipart,
}


def add_routes(app: web.Application) -> None:
    for prefix in PREFIXES:
        files = f"{prefix}/artifacts/{{path:.*}}"
        app.router.add_put(files, upload)
        app.router.add_get(files, download)
        app.router.add_delete(files, delete)
        app.router.add_get(f"{prefix}/artifacts", list_artifacts)
        for action, handler in _MULTIPART_HANDLERS.items():
            app.router.add_post(f"{prefix}/mpu/{action}/{{path:.*}}", handler)
