"""The remote client's outbox: batches of commands kept in a local SQLite file until the server acknowledges them."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import orjson

from tracker import wire
from tracker.commands import Command
from tracker.errors import InvalidStateError

T = TypeVar("T")

SUFFIX: Final = ".outbox"
"""An outbox file's suffix; its lock file adds `.lock`."""
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS batches ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " created REAL NOT NULL,"
    " commands INTEGER NOT NULL,"
    " payload BLOB NOT NULL)"
)


def default_outbox_dir(url: str) -> Path:
    """Where the outbox of a tracking server's URL lives by default:
    `$XDG_STATE_HOME/tracker/outbox/<sha256(url)[:16]>` (`~/.local/state/...` without
    XDG_STATE_HOME). `url` should have its password masked: it only names the directory."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(state) / "tracker" / "outbox" / digest


def encode_batch(commands: Sequence[Command]) -> bytes:
    """A batch as the outbox keeps it: a JSON array of commands as tracker.wire encodes them."""
    return orjson.dumps([wire.encode(c) for c in commands])


def decode_batch(payload: bytes) -> list[Command]:
    """The commands of a batch `encode_batch` wrote."""
    return [wire.decode(item) for item in orjson.loads(payload)]


@dataclass(frozen=True, slots=True)
class Batch:
    """One stored batch: its id (batches are sent in id order), when it was stored
    (time.time()), how many commands it holds, and the JSON array of them."""

    id: int
    created: float
    commands: int
    payload: bytes


class Outbox:
    """One outbox file, used by one process at a time: `open` takes an exclusive lock on
    `<file>.lock` (released when the process dies), so an outbox whose lock can be taken was
    left behind by a process that ended before its server acknowledged everything.

    `add` returns only once the batch is on disk (WAL, synchronous=FULL: it survives a crash
    of the process or the machine); `delete` is for acknowledged batches. Every call runs on
    the outbox's own thread, so the event loop never waits on the disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._read = False
        """Whether the file was opened and read: only then does count=0 mean it is empty."""
        self.count = 0
        """Batches stored and not yet deleted."""
        self.bytes = 0
        """Their payloads' total size."""
        self.oldest: float | None = None
        """time.time() when the oldest of them was stored (None when there are none)."""
        self.last_id = 0
        """The id of the newest batch stored (0 before the first)."""

    @classmethod
    def create(cls, directory: Path) -> Outbox:
        """A new outbox file in `directory` (made if missing); its name sorts after those
        made before it."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        return cls(directory / name)

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._thread is None:
            raise InvalidStateError(f"the outbox {self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def try_lock(self) -> bool:
        """Take the outbox's lock if no live process holds it; whether it was taken."""
        if self._lock_fd is not None:
            return True
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        return True

    async def open(self) -> None:
        """Lock the file (InvalidStateError if a live process holds it), create or open it,
        and read what it holds."""
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        if not await asyncio.to_thread(self.try_lock):
            raise InvalidStateError(f"the outbox {self.path} is in use by another process")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tracker-outbox")
        try:
            await self._call(self._open)
        except BaseException:
            await self.aclose()
            raise

    def _open(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            row = db.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0), min(created), "
                "coalesce(max(id), 0) FROM batches"
            ).fetchone()
            seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batches'").fetchone()
        except BaseException:
            db.close()
            raise
        self._db = db
        self.count, self.bytes, self.oldest = int(row[0]), int(row[1]), row[2]
        self.last_id = max(int(row[3]), int(seq[0]) if seq else 0)
        self._read = True

    async def add(self, payload: bytes, commands: int) -> int:
        """Store a batch durably; its id."""
        now = time.time()

        def insert() -> int:
            assert self._db is not None
            cur = self._db.execute(
                "INSERT INTO batches (created, commands, payload) VALUES (?, ?, ?)",
                (now, commands, payload),
            )
            return int(cur.lastrowid or 0)

        batch_id = await self._call(insert)
        self.count += 1
        self.bytes += len(payload)
        self.oldest = now if self.oldest is None else self.oldest
        self.last_id = max(self.last_id, batch_id)
        return batch_id

    async def batches(self, after: int = 0, *, max_bytes: int, max_commands: int) -> list[Batch]:
        """The oldest batches with ids above `after`, in order, as many as fit in `max_bytes`
        and `max_commands` (always at least one, when there is one)."""

        def select() -> list[Batch]:
            assert self._db is not None
            out: list[Batch] = []
            size = commands = 0
            cursor = self._db.execute(
                "SELECT id, created, commands, payload FROM batches WHERE id > ? ORDER BY id",
                (after,),
            )
            try:
                for row in cursor:
                    batch = Batch(int(row[0]), float(row[1]), int(row[2]), bytes(row[3]))
                    if out and (
                        size + len(batch.payload) > max_bytes
                        or commands + batch.commands > max_commands
                    ):
                        break
                    out.append(batch)
                    size += len(batch.payload)
                    commands += batch.commands
            finally:
                cursor.close()
            return out

        return await self._call(select)

    async def delete(self, ids: Sequence[int]) -> None:
        """Forget acknowledged batches (durably, as `add` stores them)."""
        if not ids:
            return

        def remove() -> tuple[int, int, float | None]:
            assert self._db is not None
            marks = ",".join("?" * len(ids))
            self._db.execute(f"DELETE FROM batches WHERE id IN ({marks})", list(ids))
            row = self._db.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0), min(created) FROM batches"
            ).fetchone()
            return int(row[0]), int(row[1]), row[2]

        self.count, self.bytes, self.oldest = await self._call(remove)

    async def aclose(self, *, remove_if_empty: bool = True) -> None:
        """Close the file, deleting it (and its lock) when it holds nothing; release the lock.
        Idempotent."""
        if self._db is not None:
            db, self._db = self._db, None
            await self._call(db.close)
        if self._thread is not None:
            thread, self._thread = self._thread, None
            thread.shutdown(wait=True)
        if remove_if_empty and self._read and self.count == 0 and self._lock_fd is not None:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path.with_name(self.path.name + ".lock"))
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)


def left_behind(directory: Path, *, exclude: Path | None = None) -> list[Outbox]:
    """The outboxes in `directory` no live process holds, oldest first, each locked for the
    caller (who opens and closes it)."""
    if not directory.is_dir():
        return []
    found: list[Outbox] = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if exclude is not None and path == exclude:
            continue
        box = Outbox(path)
        if box.try_lock():
            found.append(box)
    return found
