"""LocalArtifactStore: artifacts as files under a root directory."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import shutil
import stat
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import BinaryIO, Final

from tracker.artifacts.base import (
    DEFAULT_CHUNK_SIZE,
    ArtifactEntry,
    ArtifactLocationError,
    ArtifactNotFoundError,
    ArtifactPermissionError,
    ArtifactStore,
    run_to_completion,
)
from tracker.artifacts.files import (
    AtomicFile,
    UploadSource,
    is_temp_name,
    remove_abandoned_temp_files,
)
from tracker.errors import ArtifactError, InvalidInputError

STAGING_DIR: Final = ".tracker-tmp"
"""The directory under the root where unfinished puts are written, outside the listed tree."""


class LocalArtifactStore(ArtifactStore):
    """Artifacts stored as files under `root`, which is created on the first put.

    File I/O runs in worker threads, `chunk_size` bytes at a time. Every path is
    resolved (symlinks included) and must stay inside the resolved root. A put is
    written under `root/.tracker-tmp/` (a name reserved, never listed) and renamed into
    place when complete, so an unfinished put never shows in the tree; the first use of
    a store deletes what puts killed in another process left there (see
    `remove_abandoned_temp_files`).
    """

    def __init__(
        self, root: str | os.PathLike[str], *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        if chunk_size < 1:
            raise InvalidInputError(f"chunk_size must be at least 1, got {chunk_size}")
        self.root = os.path.abspath(os.fspath(root))
        self.chunk_size = chunk_size
        self._swept = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"

    async def _put(
        self, path: str, source: UploadSource, content_type: str, committed: Callable[[], None]
    ) -> None:
        with self._os_errors("put", path):
            target = await asyncio.to_thread(self._create_sync, path)
            try:
                while chunk := await source.read(self.chunk_size):
                    await target.write(chunk)
                await run_to_completion(target.commit(), then=lambda _: committed())
            except BaseException:
                await target.discard()
                raise
            finally:
                await asyncio.shield(asyncio.to_thread(self._tidy_sync))

    async def _open(self, path: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        with self._os_errors("open", path):
            file = await asyncio.to_thread(self._open_sync, path)
        try:
            while True:
                with self._os_errors("read", path):
                    chunk = await asyncio.to_thread(file.read, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            file.close()

    async def _list(self, path: str) -> builtins.list[ArtifactEntry]:
        with self._os_errors("list", path):
            return await asyncio.to_thread(self._list_sync, path)

    async def _delete(self, path: str) -> None:
        with self._os_errors("delete", path):
            await asyncio.to_thread(self._delete_sync, path)

    # -- blocking parts, run in a worker thread ----------------------------------------------

    def _locate(self, path: str) -> str:
        """The file system path for `path`, refused if it resolves outside the root."""
        if path.split("/", 1)[0] == STAGING_DIR:
            raise InvalidInputError(
                f"Invalid artifact path {path!r}: {STAGING_DIR!r} is reserved for unfinished "
                "writes; choose another name"
            )
        root = os.path.realpath(self.root)
        if not self._swept:
            # Once per store, at its first use: what puts killed earlier left behind goes.
            self._swept = True
            remove_abandoned_temp_files(os.path.join(root, STAGING_DIR))
        full = os.path.join(root, *path.split("/")) if path else root
        # realpath resolves every symlink that exists so far, the final component included.
        real = os.path.realpath(full)
        if os.path.commonpath([root, real]) != root:
            raise InvalidInputError(
                f"Invalid artifact path {path!r}: it resolves outside the artifact root "
                f"{self.root!r} through a symbolic link; remove the link or use another path"
            )
        return full

    def _create_sync(self, path: str) -> AtomicFile:
        full = self._locate(path)
        if os.path.isdir(full):
            raise ArtifactError(
                f"Cannot put {path!r}: a directory of that name exists in {self.root!r}; "
                "delete it first or choose another name"
            )
        # The final directories are made at the rename; a file in their way is refused now,
        # before anything is streamed.
        ancestor = os.path.dirname(full)
        while not os.path.lexists(ancestor):
            ancestor = os.path.dirname(ancestor)
        if not os.path.isdir(ancestor):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", ancestor)
        return AtomicFile.create_sync(full, self._staging())

    def _staging(self) -> str:
        return os.path.join(os.path.realpath(self.root), STAGING_DIR)

    def _tidy_sync(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self._staging())  # only once no other put is using it

    def _open_sync(self, path: str) -> BinaryIO:
        full = self._locate(path)
        try:
            return open(full, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise ArtifactNotFoundError(f"No artifact at {path!r} in {self.root!r}") from None
        except IsADirectoryError:
            raise ArtifactNotFoundError(
                f"No file at {path!r} in {self.root!r}: it is a directory; list it instead"
            ) from None

    def _list_sync(self, path: str) -> builtins.list[ArtifactEntry]:
        full = self._locate(path)
        try:
            scan = os.scandir(full)
        except (FileNotFoundError, NotADirectoryError):
            return []
        entries = []
        with scan:
            for item in scan:
                # Temporary names are hidden too: older versions wrote them beside the file.
                if is_temp_name(item.name) or (not path and item.name == STAGING_DIR):
                    continue
                child = f"{path}/{item.name}" if path else item.name
                try:
                    if item.is_dir():
                        entries.append(ArtifactEntry(child, is_dir=True))
                    elif item.is_file():
                        entries.append(ArtifactEntry(child, False, item.stat().st_size))
                except FileNotFoundError:
                    continue  # deleted while listing, or a dangling symlink
        return entries

    def _delete_sync(self, path: str) -> None:
        full = self._locate(path)
        try:
            # lstat, not stat: deleting a symlink removes the link, never what it points to.
            mode = os.lstat(full).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise ArtifactNotFoundError(f"No artifact at {path!r} in {self.root!r}") from None
        if stat.S_ISDIR(mode):
            shutil.rmtree(full)
        else:
            os.unlink(full)
        self._prune_empty_parents(full)

    def _prune_empty_parents(self, full: str) -> None:
        # Directories are implicit, as on S3: one left empty by a delete goes too.
        root = os.path.realpath(self.root)
        parent = os.path.dirname(full)
        while parent != root and os.path.commonpath([root, parent]) == root:
            try:
                os.rmdir(parent)
            except OSError:
                return  # not empty (or already gone): stop here
            parent = os.path.dirname(parent)

    # -- errors --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _os_errors(self, action: str, path: str) -> Iterator[None]:
        """Translate OSError into the ArtifactError that says what to fix."""
        try:
            yield
        except OSError as exc:
            where = f"{path!r} in {self.root!r}"
            if isinstance(exc, PermissionError):
                raise ArtifactPermissionError(
                    f"Permission denied to {action} {where}: {exc.strerror}; check the "
                    "permissions of the artifact directory"
                ) from exc
            if os.path.exists(self.root) and not os.path.isdir(self.root):
                raise ArtifactLocationError(
                    f"The artifact root {self.root!r} is not a directory; point the store at "
                    "a directory"
                ) from exc
            if isinstance(exc, NotADirectoryError | FileExistsError):
                raise ArtifactError(
                    f"Cannot {action} {where}: a parent of it is a file; delete the file or "
                    "choose another path"
                ) from exc
            if exc.errno == errno.ENOSPC:
                raise ArtifactError(f"Cannot {action} {where}: no space left on device") from exc
            raise ArtifactError(f"Could not {action} {where}: {exc}") from exc
