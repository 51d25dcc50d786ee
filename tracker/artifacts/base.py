"""The ArtifactStore contract, its value objects and its errors."""

from __future__ import annotations

import abc
import asyncio
import builtins
import mimetypes
import os
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from tracker.artifacts.files import AtomicFile, BytesSource, FileSource, UploadSource
from tracker.artifacts.paths import validate_artifact_path
from tracker.errors import ArtifactError, InvalidInputError, InvalidStateError, NotFoundError

# The errors every backend raises, whatever its driver says:
#
#   ArtifactError (tracker.errors)
#   ├── ArtifactNotFoundError         nothing at that path (also a NotFoundError)
#   ├── ArtifactLocationError         the root itself is unusable: no such bucket, root is a file
#   ├── ArtifactPermissionError       credentials missing, invalid or not allowed to do this
#   ├── ArtifactUnavailableError      the store could not be reached, stalled, or dropped the
#   │                                 connection
#   └── ArtifactUploadCancelledError  the run ended and its upload was cancelled (also an
#                                     InvalidStateError; raised by RunArtifacts)
#
# Refused paths raise InvalidInputError before any I/O.

DEFAULT_CHUNK_SIZE: Final = 1 << 20
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"

T = TypeVar("T")

StoredCallback = Callable[["ArtifactInfo"], object]
"""Told the moment an artifact is in place: see `ArtifactStore.put_file`."""


class ArtifactNotFoundError(ArtifactError, NotFoundError):
    """No artifact exists at the path."""


class ArtifactLocationError(ArtifactError):
    """The store's root is unusable: the bucket does not exist, the root is not a directory."""


class ArtifactPermissionError(ArtifactError):
    """Credentials are missing or invalid, or they do not allow the operation."""


class ArtifactUnavailableError(ArtifactError):
    """The store could not be reached or the connection was lost; retrying may succeed."""


class ArtifactUploadCancelledError(ArtifactError, InvalidStateError):
    """The run ended while the upload was in flight, and it was cancelled: nothing is stored."""


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """What was stored or fetched: its path in the store, size in bytes and SHA-256 (hex)."""

    path: str
    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True, slots=True)
class ArtifactEntry:
    """One listed item: `path` relative to the store root, `size` in bytes (`None` for dirs)."""

    path: str
    is_dir: bool
    size: int | None = None


def guess_content_type(path: str) -> str:
    """The MIME type suggested by `path`'s extension, else `application/octet-stream`."""
    return mimetypes.guess_type(path, strict=False)[0] or DEFAULT_CONTENT_TYPE


class ArtifactStore(abc.ABC):
    """A tree of artifacts under one root: a store puts, opens, lists and deletes.

    Paths are relative POSIX paths checked by `validate_artifact_path` before any
    I/O; a refused path raises `InvalidInputError`, and `a//./b` names the same
    artifact as `a/b`. Directories are implicit: they exist while a file is under
    them, as S3 prefixes do. Failures raise `ArtifactError` subclasses, the same ones
    on every backend. A put is atomic: readers see the old artifact or the new one,
    never a partial one, and a failed or cancelled put leaves nothing behind under
    the destination name. Nothing is held in memory whole: files stream in chunks.
    A store is used from one event loop; `aclose()` ends its use.
    """

    _closed: bool = False

    # -- the contract ------------------------------------------------------------------------

    async def put_file(
        self,
        local_path: str | os.PathLike[str],
        dest_path: str,
        *,
        on_stored: StoredCallback | None = None,
    ) -> ArtifactInfo:
        """Store the local file at `dest_path`, replacing any artifact there.

        The file is streamed, never read into memory whole; size and SHA-256 are
        computed from the bytes actually sent and the content type is guessed from
        `dest_path`. A missing or unreadable local file raises `InvalidInputError`
        before the store is touched.

        `on_stored(info)` is called once, as soon as the artifact is in place: before
        the put returns, and also if it is cancelled after that point (it then raises
        `CancelledError` all the same). A cancellation that arrives during the final
        step (the rename, the request that completes the object) waits for that step,
        so that what is stored is always known: record artifacts in `on_stored`.
        """
        path = self._check(dest_path)
        source = await FileSource.open(local_path)
        try:
            info = await self._put_source(path, source, on_stored)
        except asyncio.CancelledError:
            # Not waited for: a read blocked on a pipe would hold the cancellation until the
            # pipe's writer writes or closes.
            source.close_nowait()
            raise
        except BaseException:
            await source.aclose()
            raise
        await source.aclose()
        return info

    async def put_bytes(
        self, data: bytes, dest_path: str, *, on_stored: StoredCallback | None = None
    ) -> ArtifactInfo:
        """Store `data` at `dest_path`, replacing any artifact there; as `put_file`."""
        path = self._check(dest_path)
        return await self._put_source(path, BytesSource(bytes(data)), on_stored)

    def open(
        self, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """Stream the file at `path` as chunks of at most `chunk_size` bytes.

        The path is checked at the call; the store is first read on the first
        iteration, which raises `ArtifactNotFoundError` if nothing is there (a
        directory is not a file). Iterate to the end, or close the iterator early
        (`contextlib.aclosing`) to release the file or connection at once.
        """
        checked = self._check(path)
        if chunk_size < 1:
            raise InvalidInputError(f"chunk_size must be at least 1, got {chunk_size}")
        return self._open(checked, chunk_size)

    async def get_file(self, path: str, local_dst: str | os.PathLike[str]) -> ArtifactInfo:
        """Download the file at `path` to the local file `local_dst`, replacing it.

        Parent directories are created. The download is written under a temporary
        name and renamed, so `local_dst` never holds a partial download; size and
        SHA-256 are those of the bytes written.
        """
        checked = self._check(path)
        dst = os.fspath(local_dst)
        async with aclosing(self._open(checked, DEFAULT_CHUNK_SIZE)) as chunks:
            # The first read raises ArtifactNotFoundError before anything local is made.
            chunk = await anext(chunks, b"")
            try:
                target = await asyncio.to_thread(AtomicFile.create_sync, dst)
            except IsADirectoryError:
                raise InvalidInputError(
                    f"Local destination {dst!r} is a directory; give the path of the file to write"
                ) from None
            except OSError as exc:
                raise ArtifactError(f"Could not create {dst!r}: {exc}") from exc
            try:
                while chunk:
                    await target.write(chunk)
                    chunk = await anext(chunks, b"")
                await target.commit()
            except BaseException as exc:
                await target.discard()
                if isinstance(exc, OSError):
                    raise ArtifactError(f"Could not write the download to {dst!r}: {exc}") from exc
                raise
        sha256 = target.sha256.hexdigest()
        return ArtifactInfo(checked, target.size, sha256, guess_content_type(checked))

    async def list(self, prefix: str | None = None) -> builtins.list[ArtifactEntry]:
        """List the files and directories directly under `prefix` (the root if `None` or `""`).

        One level, like MLflow's `list_artifacts`: entry paths are relative to the
        root (`dir/a.txt`, not `a.txt`), sorted by path. A prefix that is missing or
        is a file lists as `[]`, since object stores cannot tell an empty directory
        from a missing one.
        """
        self._check_open()
        checked = self._check(prefix) if prefix else ""
        return sorted(await self._list(checked), key=lambda entry: entry.path)

    async def delete(self, path: str) -> None:
        """Delete the file at `path`, or everything under the directory `path`.

        `dir` deletes `dir` and `dir/...` but never `dir2`. Raises
        `ArtifactNotFoundError` if nothing was there. The root cannot be deleted
        through this method. Deleting a large directory is not atomic: a failure
        part-way leaves the rest in place, and deleting again finishes the job.
        """
        await self._delete(self._check(path))

    async def aclose(self) -> None:
        """Release connections and other resources; the store cannot be used afterwards.

        Idempotent. Other methods called after it raise `ArtifactError`.
        """
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- what each backend provides ----------------------------------------------------------

    @abc.abstractmethod
    async def _put(
        self, path: str, source: UploadSource, content_type: str, committed: Callable[[], None]
    ) -> None:
        """Store all of `source` at the checked `path` atomically, reading it to the end.

        Call `committed()` the moment the artifact is in place, before any later await:
        run the final step with `run_to_completion(step, then=...)`.
        """

    @abc.abstractmethod
    def _open(self, path: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        """Stream the file at the checked `path` (an async generator)."""

    @abc.abstractmethod
    async def _list(self, path: str) -> builtins.list[ArtifactEntry]:
        """Entries one level under the checked `path`; `""` is the root; any order."""

    @abc.abstractmethod
    async def _delete(self, path: str) -> None:
        """Delete the file or tree at the checked `path`."""

    # -- shared plumbing ---------------------------------------------------------------------

    def _check(self, path: str) -> str:
        self._check_open()
        return validate_artifact_path(path)

    def _check_open(self) -> None:
        if self._closed:
            raise ArtifactError(
                f"{type(self).__name__} is closed; create a new store to keep using it"
            )

    async def _put_source(
        self, path: str, source: UploadSource, on_stored: StoredCallback | None
    ) -> ArtifactInfo:
        content_type = guess_content_type(path)
        in_place = False

        def committed() -> None:
            nonlocal in_place
            in_place = True

        try:
            await self._put(path, source, content_type, committed)
        except asyncio.CancelledError:
            if in_place and on_stored is not None:
                on_stored(ArtifactInfo(path, source.size, source.sha256, content_type))
            raise
        info = ArtifactInfo(path, source.size, source.sha256, content_type)
        if on_stored is not None:
            on_stored(info)
        return info


async def run_to_completion(
    step: Coroutine[Any, Any, T], then: Callable[[T], object] | None = None
) -> T:
    """Await `step` to its end even if the caller is cancelled meanwhile, then `then(result)`.

    A cancellation that arrived is raised once that is done. Only for bounded steps (a
    commit, or a cleanup whose every request has a deadline) whose outcome must be
    known rather than abandoned half-way.
    """
    task = asyncio.ensure_future(step)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError as exc:
            cancelled = exc
    try:
        result = task.result()
    except BaseException as exc:
        if cancelled is not None:
            raise cancelled from exc
        raise
    if then is not None:
        then(result)
    if cancelled is not None:
        raise cancelled
    return result
