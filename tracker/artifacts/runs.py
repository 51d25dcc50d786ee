"""A run's artifacts: upload files and trees under the run's artifact URI, list, download."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

from tracker.artifacts import artifact_store_for_uri
from tracker.artifacts.base import (
    ArtifactEntry,
    ArtifactInfo,
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactUploadCancelledError,
    StoredCallback,
)
from tracker.artifacts.local import LocalArtifactStore
from tracker.artifacts.paths import (
    PROXIED_SCHEME,
    join_artifact_uri,
    parse_artifact_uri,
    validate_artifact_path,
)
from tracker.errors import ArtifactError, InvalidInputError, InvalidStateError

if TYPE_CHECKING:
    from tracker.artifacts.s3 import S3ArtifactStore

log = logging.getLogger(__name__)

DEFAULT_TRANSFERS: Final = 8
DEFAULT_MAX_STORES: Final = 64
# Ended runs remembered, so that their uploads are refused; the oldest are forgotten past it.
MAX_ENDED_RUNS: Final = 10_000

Recorder = Callable[[ArtifactInfo], None]
"""Called once an artifact's bytes are stored: appends its ArtifactLogged event."""

Put = Callable[[ArtifactStore, StoredCallback], Awaitable[ArtifactInfo]]


def _join(artifact_path: str | None, name: str) -> str:
    return validate_artifact_path(posixpath.join(artifact_path, name) if artifact_path else name)


def _tree(local_dir: Path) -> list[tuple[Path, str]]:
    """(file, relative POSIX path) for every file under `local_dir`, refusing any symlink
    that leads outside it; symlinked directories are not followed."""
    root = local_dir.resolve()
    out = []
    for dirpath, _dirs, files in os.walk(local_dir, followlinks=False):
        for name in sorted(files):
            path = Path(dirpath) / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    raise InvalidInputError(
                        f"{path} is a symlink to {target}, outside {local_dir}; copy the file "
                        "in, or log it with log_artifact"
                    )
            out.append((path, path.relative_to(local_dir).as_posix()))
    return sorted(out, key=lambda p: p[1])


def encode_dict(obj: Any, path: str) -> bytes:
    """A dict as JSON or YAML, chosen by the artifact path's extension."""
    ext = posixpath.splitext(path)[1].lower()
    if ext == ".json":
        return orjson.dumps(obj, option=orjson.OPT_INDENT_2)
    if ext in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError as exc:
            raise InvalidInputError("YAML artifacts need PyYAML: pip install pyyaml") from exc
        return str(yaml.safe_dump(obj, sort_keys=False)).encode()
    raise InvalidInputError(f"log_dict writes .json, .yaml or .yml files, not {path!r}")


@dataclass(frozen=True, slots=True)
class Drained:
    """What `RunArtifacts.drain` found in flight, by how each upload ended: stored and
    recorded, failed on its own (its caller gets the error), or cancelled."""

    finished: int = 0
    failed: int = 0
    cancelled: int = 0

    def __add__(self, other: Drained) -> Drained:
        return Drained(
            self.finished + other.finished,
            self.failed + other.failed,
            self.cancelled + other.cancelled,
        )


class _Entry:
    """A cached store, the operations using it now, and whether it has left the cache."""

    __slots__ = ("evicted", "store", "users")

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.users = 0
        self.evicted = False


class _Upload:
    """One upload in flight: its task, where it goes, and whether `drain` cancelled it."""

    __slots__ = ("cancelled_by_drain", "dest", "task")

    def __init__(self, dest: str, task: asyncio.Task[ArtifactInfo]) -> None:
        self.dest = dest
        self.task = task
        self.cancelled_by_drain = False


class RunArtifacts:
    """The artifact stores of runs, shared, bounded and closed together; each run's uploads
    tracked so that ending the run can wait for them (`drain`).

    Stores are keyed by their root, and runs addressed by prefix within it: one S3
    client serves every run of a bucket (per endpoint, bucket and credentials), and a
    LocalArtifactStore serves each run directory. At most `max_stores` are kept; the
    least recently used is closed when another is needed, once no operation is using
    it. `transfers` bounds the files uploading or downloading at once, across all runs;
    `store_options` go to the S3 stores (`part_size`, `concurrency` of parts in flight
    per file, `request_timeout`, ...).

    `proxy_root` is the destination (a local path, `file:` or `s3://` URI) that
    `mlflow-artifacts:/<path>` URIs resolve to, as a tracking server's
    `--artifacts-destination`; without it such URIs raise `ArtifactError`.
    """

    def __init__(
        self,
        *,
        transfers: int = DEFAULT_TRANSFERS,
        proxy_root: str | None = None,
        max_stores: int = DEFAULT_MAX_STORES,
        **store_options: Any,
    ) -> None:
        if transfers < 1:
            raise InvalidInputError(f"transfers must be at least 1, got {transfers}")
        if max_stores < 1:
            raise InvalidInputError(f"max_stores must be at least 1, got {max_stores}")
        if proxy_root is not None and parse_artifact_uri(proxy_root).scheme == PROXIED_SCHEME:
            raise InvalidInputError(
                f"proxy_root {proxy_root!r} is itself proxied; give the directory or "
                "s3://bucket/prefix where proxied artifacts are stored"
            )
        self._proxy_root = proxy_root
        self._max_stores = max_stores
        self._options = store_options
        self._limit = asyncio.Semaphore(transfers)
        self._stores: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._uploads: dict[str, set[_Upload]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._closed = False

    # -- stores ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def store(self, artifact_uri: str) -> AsyncIterator[ArtifactStore]:
        """The store for a run's artifact URI, kept open while the block runs."""
        if self._closed:
            raise ArtifactError("RunArtifacts is closed; create another to keep using artifacts")
        key, make, prefix = self._locate(artifact_uri)
        entry = self._stores.get(key)
        if entry is None:
            entry = self._stores[key] = _Entry(make())
        else:
            self._stores.move_to_end(key)
        entry.users += 1
        try:
            await self._evict()
            yield cast("S3ArtifactStore", entry.store).at(prefix) if prefix else entry.store
        finally:
            entry.users -= 1
            if entry.evicted and not entry.users:
                await self._close(entry)

    def _locate(self, uri: str) -> tuple[Hashable, Callable[[], ArtifactStore], str]:
        """The cache key of the store serving `uri`, how to make it, and the run's prefix."""
        parsed = parse_artifact_uri(uri)
        if parsed.scheme == PROXIED_SCHEME:
            if self._proxy_root is None:
                raise ArtifactError(
                    f"{uri!r} is a proxied artifact URI: proxied artifacts are stored through "
                    "a tracking server; log them through it, or give RunArtifacts its "
                    "artifacts destination as proxy_root"
                )
            segments = parsed.path.split("/") if parsed.path else []
            parsed = parse_artifact_uri(join_artifact_uri(self._proxy_root, *segments))
        if parsed.scheme == "s3":
            # Cheap to make: it opens nothing until used, and is dropped if one is cached.
            root = cast(
                "S3ArtifactStore", artifact_store_for_uri(f"s3://{parsed.bucket}", **self._options)
            )
            return ("s3", root.client_key), lambda: root, parsed.path
        directory = os.path.abspath(parsed.path)
        return ("file", directory), lambda: LocalArtifactStore(directory), ""

    async def _evict(self) -> None:
        while len(self._stores) > self._max_stores:
            _, entry = self._stores.popitem(last=False)
            entry.evicted = True
            if not entry.users:
                await self._close(entry)

    async def _close(self, entry: _Entry) -> None:
        try:
            await entry.store.aclose()
        except Exception:
            # Closing a store another run no longer needs must not fail this run's call.
            log.warning("Could not close the artifact store %r", entry.store, exc_info=True)

    # -- uploads -----------------------------------------------------------------------------

    async def log_file(
        self,
        uri: str,
        local_path: str | os.PathLike[str],
        artifact_path: str | None,
        record: Recorder,
    ) -> ArtifactInfo:
        dest = _join(artifact_path, Path(local_path).name)
        self._refuse_if_ended(uri)

        async def put(store: ArtifactStore, stored: StoredCallback) -> ArtifactInfo:
            # Checked inside the tracked upload, so that it is in flight (and end() waits for
            # it) from the call on. A missing or unreadable file is refused by the store,
            # before it is touched; a pipe is streamed like any file.
            if await asyncio.to_thread(Path(local_path).is_dir):
                raise InvalidInputError(
                    f"{local_path} is a directory; use log_artifacts to upload a directory"
                )
            return await store.put_file(local_path, dest, on_stored=stored)

        return await self._finish(self._start(uri, dest, put, record))

    async def log_dir(
        self,
        uri: str,
        local_dir: str | os.PathLike[str],
        artifact_path: str | None,
        record: Recorder,
    ) -> list[ArtifactInfo]:
        root = Path(local_dir)
        self._refuse_if_ended(uri)
        if not await asyncio.to_thread(root.is_dir):
            raise InvalidInputError(f"{local_dir} is not a directory")
        tree = await asyncio.to_thread(_tree, root)
        files = [(path, _join(artifact_path, rel)) for path, rel in tree]  # all checked first

        def put_one(path: Path, dest: str) -> Put:
            def put(store: ArtifactStore, stored: StoredCallback) -> Awaitable[ArtifactInfo]:
                return store.put_file(path, dest, on_stored=stored)

            return put

        # Started together, with no await between, so that a drain sees all or none.
        self._refuse_if_ended(uri)
        uploads = [self._start(uri, dest, put_one(path, dest), record) for path, dest in files]
        return list(await asyncio.gather(*(self._finish(upload) for upload in uploads)))

    async def log_bytes(self, uri: str, data: bytes, path: str, record: Recorder) -> ArtifactInfo:
        dest = validate_artifact_path(path)

        def put(store: ArtifactStore, stored: StoredCallback) -> Awaitable[ArtifactInfo]:
            return store.put_bytes(data, dest, on_stored=stored)

        return await self._finish(self._start(uri, dest, put, record))

    def _refuse_if_ended(self, uri: str) -> None:
        if self._closed:
            raise ArtifactError("RunArtifacts is closed; create another to keep using artifacts")
        if uri in self._ended:
            raise InvalidStateError(
                f"The run has ended: no more artifacts can be logged to {uri}; start a new run "
                "to log more"
            )

    def _start(self, uri: str, dest: str, put: Put, record: Recorder) -> _Upload:
        """Start an upload in a task of its own, tracked under `uri` until it is over."""
        self._refuse_if_ended(uri)
        upload = _Upload(dest, asyncio.ensure_future(self._store_and_record(uri, put, record)))
        self._uploads.setdefault(uri, set()).add(upload)
        upload.task.add_done_callback(lambda _: self._forget(uri, upload))
        return upload

    def _forget(self, uri: str, upload: _Upload) -> None:
        in_flight = self._uploads.get(uri)
        if in_flight is not None:
            in_flight.discard(upload)
            if not in_flight:
                del self._uploads[uri]

    async def _store_and_record(self, uri: str, put: Put, record: Recorder) -> ArtifactInfo:
        stored: list[ArtifactInfo] = []

        def on_stored(info: ArtifactInfo) -> None:
            stored.append(info)
            record(info)

        try:
            async with self._limit, self.store(uri) as store:
                return await put(store, on_stored)
        except asyncio.CancelledError:
            if stored:
                # In place and recorded before the cancellation took effect: it is logged.
                return stored[0]
            raise

    async def _finish(self, upload: _Upload) -> ArtifactInfo:
        """The upload's result; awaiting it here, cancelling the caller cancels the upload."""
        try:
            return await upload.task
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if upload.cancelled_by_drain and not (caller is not None and caller.cancelling()):
                raise ArtifactUploadCancelledError(
                    f"The upload of {upload.dest!r} was cancelled because its run ended while "
                    "it was in flight; nothing of it was stored. To keep such uploads, end the "
                    "run without cancelling them (it then waits for them)"
                ) from None
            raise

    # -- the end of a run --------------------------------------------------------------------

    async def drain(
        self, uri: str, *, cancel: bool = False, timeout: float | None = None
    ) -> Drained:
        """Wait for every upload in flight to the run at `uri` to be stored and recorded.

        From this call on, a new upload to `uri` raises `InvalidStateError` ("the run
        has ended"). With `cancel`, the uploads in flight are cancelled instead: each
        leaves nothing behind (no partial file or object, no multipart upload) and its
        caller gets `ArtifactUploadCancelledError`, except one already past storing its
        bytes, which is recorded and returns as usual. `timeout` bounds the wait: what
        is still in flight then is cancelled as with `cancel`. A cancellation waits for
        the upload's cleanup, which the stores bound (every S3 request has a deadline).
        Failed uploads raise to their own callers; the result counts how each ended.
        """
        self._ended[uri] = None
        self._ended.move_to_end(uri)
        while len(self._ended) > MAX_ENDED_RUNS:
            self._ended.popitem(last=False)
        uploads = list(self._uploads.get(uri, ()))
        if not uploads:
            return Drained()
        if cancel:
            self._cancel(uploads)
        _, pending = await asyncio.wait([u.task for u in uploads], timeout=timeout)
        if pending:
            self._cancel([u for u in uploads if u.task in pending])
            await asyncio.wait(pending)
        cancelled = sum(u.task.cancelled() for u in uploads)
        failed = sum(not u.task.cancelled() and u.task.exception() is not None for u in uploads)
        return Drained(len(uploads) - cancelled - failed, failed, cancelled)

    async def drain_all(self, *, cancel: bool = False, timeout: float | None = None) -> Drained:
        """`drain` every run with uploads in flight, all at once."""
        results = await asyncio.gather(
            *(self.drain(uri, cancel=cancel, timeout=timeout) for uri in list(self._uploads))
        )
        return sum(results, Drained())

    @staticmethod
    def _cancel(uploads: list[_Upload]) -> None:
        for upload in uploads:
            upload.cancelled_by_drain = True
            upload.task.cancel()

    async def aclose(self) -> None:
        """Cancel the uploads still in flight (as `drain` does), then close every store.

        Drain the runs first to keep their uploads. Idempotent; afterwards every
        operation raises `ArtifactError`.
        """
        if self._closed:
            return
        self._closed = True
        await self.drain_all(cancel=True)
        entries = list(self._stores.values())
        self._stores.clear()
        for entry in entries:
            entry.evicted = True
            if not entry.users:
                await self._close(entry)

    # -- reading -----------------------------------------------------------------------------

    async def list(self, uri: str, path: str | None) -> list[ArtifactEntry]:
        async with self.store(uri) as store:
            return await store.list(validate_artifact_path(path) if path else None)

    async def download(self, uri: str, path: str, dst: str | os.PathLike[str]) -> Path:
        """Download the file or tree at `path` into the directory `dst`; returns the local
        path of what was downloaded (`dst/<basename of path>`)."""
        path = validate_artifact_path(path)
        target = Path(dst) / posixpath.basename(path)
        async with self.store(uri) as store:
            siblings = {e.path: e for e in await store.list(posixpath.dirname(path) or None)}
            entry = siblings.get(path)
            if entry is None:
                raise ArtifactNotFoundError(f"no artifact at {path!r} in {uri}")
            if not entry.is_dir:
                async with self._limit:
                    await store.get_file(path, target)
                return target
            files: list[str] = []
            stack = [path]
            while stack:  # one listing per directory level
                for e in await store.list(stack.pop()):
                    (stack if e.is_dir else files).append(e.path)

            async def fetch(file: str) -> None:
                async with self._limit:
                    await store.get_file(file, target / posixpath.relpath(file, path))

            await asyncio.gather(*(fetch(f) for f in files))
        return target
