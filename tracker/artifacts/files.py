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
from typing import BinaryIO, Final

from tracker.errors import InvalidInputError

# Below this, hashing on the loop is cheaper than a hop to a thread.
_INLINE_HASH_LIMIT: Final = 1 << 16
_TEMP_NAME_RE: Final = re.compile(r"\.tracker-[0-9a-f]{16}\.tmp")


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


class FileSource(UploadSource):
    """A local file read in a worker thread, hashed in that thread too."""

    def __init__(self, file: BinaryIO, size_hint: int | None) -> None:
        super().__init__()
        self._file = file
        self.size_hint = size_hint

    @classmethod
    async def open(cls, local_path: str | os.PathLike[str]) -> FileSource:
        """Open `local_path` for reading, or raise `InvalidInputError` saying why not."""
        return await asyncio.to_thread(cls._open_sync, local_path)

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


class AtomicFile:
    """A file written under a temporary name in its final directory, renamed into place.

    `commit()` fsyncs and renames, so a reader or a crash never sees a partial file
    under the final name; `discard()` removes the temporary file. Writes go through a
    buffered file object, whose lock makes a close wait for a write still running in a
    thread whose awaiter was cancelled.
    """

    def __init__(self, final_path: str, file: BinaryIO, temp_path: str) -> None:
        self.final_path = final_path
        self.temp_path = temp_path
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._file = file

    @classmethod
    def create_sync(cls, final_path: str) -> AtomicFile:
        """Create the temporary file next to `final_path`, creating directories as needed."""
        if os.path.isdir(final_path):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", final_path)
        directory = os.path.dirname(final_path) or "."
        for _ in range(3):
            os.makedirs(directory, exist_ok=True)
            temp_path = os.path.join(directory, temp_name())
            try:
                # os.open with 0o666 lets the umask decide, as for any other new file.
                fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileNotFoundError:
                continue  # a concurrent delete pruned the directory; make it again
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
        self._file.close()
        os.replace(self.temp_path, self.final_path)

    async def commit(self) -> None:
        await asyncio.to_thread(self._commit_sync)

    def _discard_sync(self) -> None:
        try:
            self._file.close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp_path)

    async def discard(self) -> None:
        # Shielded: on cancellation the temporary file must still go.
        await asyncio.shield(asyncio.to_thread(self._discard_sync))
