"""Local file I/O for the artifact stores: hashed chunked reads and atomic writes, off the loop."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
import sys
import threading
import time
from typing import BinaryIO, Final

from tracker.errors import InvalidInputError

if sys.platform != "win32":
    import fcntl

# Below this, hashing on the loop is cheaper than a hop to a thread.
_INLINE_HASH_LIMIT: Final = 1 << 16
_TEMP_NAME_RE: Final = re.compile(r"\.tracker-[0-9a-f]{16}\.tmp")
# A temporary file's writer holds an exclusive lock on it until the rename, and the kernel
# drops that lock when the writer dies, even by SIGKILL: an unlocked temporary file is
# abandoned. The lock is taken just after the file is created, so a file younger than this
# may be one whose writer has not locked it yet; it is left for a later sweep. (An age
# threshold alone would either delete a slow upload still in progress, say a checkpoint
# streamed from a pipe for an hour, or keep a killed upload's file for that long.)
TEMP_FILE_GRACE: Final = 60.0


def temp_name() -> str:
    """A fresh name for an unfinished write, one that `is_temp_name` recognises."""
    return f".tracker-{secrets.token_hex(8)}.tmp"


def is_temp_name(name: str) -> bool:
    """Whether `name` is an unfinished write made by `AtomicFile` (hidden from listings)."""
    return _TEMP_NAME_RE.fullmatch(name) is not None


class UploadSource(abc.ABC):
    """Bytes to upload, read in order; counts and hashes what it hands out.

    `read(n)` returns exactly `n` bytes except at the end, then `b""`. `size_hint`
    is the expected total when known in advance (a regular file), else `None`.
    """

    size_hint: int | None

    def __init__(self) -> None:
        self.size = 0
        self._sha256 = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @abc.abstractmethod
    async def read(self, n: int) -> bytes:
        """The next `n` bytes, fewer only at the end, `b""` after it."""

    async def aclose(self) -> None:
        """Release the source; reading afterwards is an error."""


class BytesSource(UploadSource):
    """An in-memory upload source; parts are slices of the caller's bytes."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = data
        self.size_hint = len(data)

    async def read(self, n: int) -> bytes:
        start = self.size
        chunk = self._data if start == 0 and len(self._data) <= n else self._data[start : start + n]
        if len(chunk) > _INLINE_HASH_LIMIT:
            await asyncio.to_thread(self._sha256.update, chunk)
        else:
            self._sha256.update(chunk)
        self.size += len(chunk)
        return chunk


def _close_opened(opening: asyncio.Future[FileSource]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close_nowait()


class FileSource(UploadSource):
    """A local file read in a worker thread, hashed in that thread too."""

    def __init__(self, file: BinaryIO, size_hint: int | None) -> None:
        super().__init__()
        self._file = file
        self.size_hint = size_hint

    @classmethod
    async def open(cls, local_path: str | os.PathLike[str]) -> FileSource:
        """Open `local_path` for reading, or raise `InvalidInputError` saying why not."""
        opening = asyncio.get_running_loop().run_in_executor(None, cls._open_sync, local_path)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Opening a pipe blocks until its writer comes: if that happens after the caller
            # gave up, the file it opens is closed, not left to the garbage collector.
            opening.add_done_callback(_close_opened)
            raise

    @classmethod
    def _open_sync(cls, local_path: str | os.PathLike[str]) -> FileSource:
        try:
            file = open(local_path, "rb")  # noqa: SIM115 - closed by aclose()
        except FileNotFoundError:
            raise InvalidInputError(
                f"Local file {os.fspath(local_path)!r} does not exist; check the path"
            ) from None
        except IsADirectoryError:
            raise InvalidInputError(
                f"Local path {os.fspath(local_path)!r} is a directory; put each file in it "
                "with put_file"
            ) from None
        except OSError as exc:
            raise InvalidInputError(
                f"Local file {os.fspath(local_path)!r} cannot be read: {exc.strerror}"
            ) from exc
        st = os.fstat(file.fileno())
        # A pipe or device has no size to plan parts with; stream it all the same.
        return cls(file, st.st_size if stat.S_ISREG(st.st_mode) else None)

    def _read_sync(self, n: int) -> bytes:
        # A buffered reader returns exactly n bytes before the end, even from a pipe.
        chunk = self._file.read(n)
        self._sha256.update(chunk)
        return chunk

    async def read(self, n: int) -> bytes:
        try:
            chunk = await asyncio.to_thread(self._read_sync, n)
        except OSError as exc:
            raise InvalidInputError(
                f"Local file {self._file.name!r} could not be read: {exc.strerror}"
            ) from exc
        self.size += len(chunk)
        return chunk

    async def aclose(self) -> None:
        # In a thread: closing waits for a read still blocked on a pipe whose awaiter was
        # cancelled, and that wait must not stall the loop.
        await asyncio.shield(asyncio.to_thread(self._file.close))

    def close_nowait(self) -> None:
        """Close the file in the background, once any read still running is over.

        On a thread of its own rather than the loop's executor: the read it waits for may
        outlive the event loop (a pipe whose writer is slow to close), and the file must be
        closed all the same instead of being left to the garbage collector."""
        threading.Thread(target=self._file.close, name="tracker-close", daemon=True).start()


class AtomicFile:
    """A file written under a temporary name, renamed into place once complete.

    The temporary file is made in `temp_dir` (which must be on the same file system as
    `final_path`), else next to `final_path`, and locked while it is written (see
    `TEMP_FILE_GRACE`). `commit()` fsyncs and renames, creating the final directory
    only then, so a reader or a crash never sees a partial file under the final name
    nor, with `temp_dir`, a directory holding only unfinished writes; `discard()`
    removes the temporary file. Writes go through a buffered file object, whose lock
    makes a close wait for a write still running in a thread whose awaiter was
    cancelled.
    """

    def __init__(self, final_path: str, file: BinaryIO, temp_path: str) -> None:
        self.final_path = final_path
        self.temp_path = temp_path
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.committed = False
        self._file = file

    @classmethod
    def create_sync(cls, final_path: str, temp_dir: str | None = None) -> AtomicFile:
        """Create and lock the temporary file, creating its directory as needed."""
        if os.path.isdir(final_path):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", final_path)
        directory = temp_dir or os.path.dirname(final_path) or "."
        for _ in range(3):
            os.makedirs(directory, exist_ok=True)
            temp_path = os.path.join(directory, temp_name())
            try:
                # os.open with 0o666 lets the umask decide, as for any other new file.
                fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileNotFoundError:
                continue  # a concurrent delete or sweep removed the directory; make it again
            _lock(fd)
            return cls(final_path, os.fdopen(fd, "wb"), temp_path)
        raise FileNotFoundError(f"directory {directory!r} keeps disappearing")

    def _write_sync(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.sha256.update(chunk)

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._write_sync, chunk)
        self.size += len(chunk)

    def _commit_sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        # Renamed before it is closed: closing drops the lock, and an unlocked temporary
        # file is fair game for a sweep.
        directory = os.path.dirname(self.final_path) or "."
        for attempt in range(3):
            os.makedirs(directory, exist_ok=True)
            try:
                os.replace(self.temp_path, self.final_path)
                break
            except FileNotFoundError:
                if attempt == 2 or not os.path.exists(self.temp_path):
                    raise
                # else a concurrent delete pruned the final directory; make it again
        self.committed = True
        self._file.close()

    async def commit(self) -> None:
        await asyncio.to_thread(self._commit_sync)

    def _discard_sync(self) -> None:
        try:
            if not self.committed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.temp_path)
        finally:
            self._file.close()

    async def discard(self) -> None:
        # Shielded: on cancellation the temporary file must still go.
        await asyncio.shield(asyncio.to_thread(self._discard_sync))


def remove_abandoned_temp_files(directory: str, grace: float = TEMP_FILE_GRACE) -> int:
    """Delete the temporary files in `directory` whose writers are gone; return how many.

    A temporary file is abandoned when no process holds its lock and it is older than
    `grace` seconds. `directory` itself is removed if that leaves it empty.
    """
    try:
        scan = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    with scan:
        for item in scan:
            if is_temp_name(item.name) and _remove_if_abandoned(item.path, grace):
                removed += 1
    with contextlib.suppress(OSError):
        os.rmdir(directory)  # fails while anything is still in it, as it should
    return removed


def _remove_if_abandoned(path: str, grace: float) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False  # gone already, or not ours to open
    try:
        if not _try_lock(fd):
            return False  # its writer is alive
        opened = os.fstat(fd)
        if time.time() - opened.st_mtime < grace:
            return False
        try:
            current = os.lstat(path)
        except FileNotFoundError:
            return False
        if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            return False  # renamed into place meanwhile, and something new took the name
        try:
            os.unlink(path)
        except OSError:
            return False  # removed by another sweep, or not ours to remove
        return True
    finally:
        os.close(fd)


if sys.platform != "win32":

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

else:
    # No flock on Windows: temporary files are never swept there, rather than risk deleting
    # one whose writer is alive.

    def _lock(fd: int) -> None:
        pass

    def _try_lock(fd: int) -> bool:
        return False
