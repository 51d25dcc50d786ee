"""What only the local store does: symlinks, atomic renames, file modes, a bad root."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.artifacts.helpers import Fifo
from tracker.artifacts import (
    ArtifactEntry,
    ArtifactError,
    ArtifactLocationError,
    LocalArtifactStore,
    artifact_store_for_uri,
    join_artifact_uri,
    local_artifact_uri,
)
from tracker.artifacts.files import TEMP_FILE_GRACE, remove_abandoned_temp_files, temp_name
from tracker.artifacts.local import STAGING_DIR
from tracker.errors import InvalidInputError

WaitUntil = Callable[..., Awaitable[None]]
REPO_ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


def listdir(path: Path) -> list[str]:
    """The names in `path`, or none if it does not exist."""
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def every_file_under(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, name), root)
        for d, _, names in os.walk(root)
        for name in names
    )


def backdate(path: Path, seconds: float) -> None:
    """Make `path` look last written `seconds` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the store root holding a secret."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_text("do not read")
    return directory


async def test_symlink_escaping_the_root_is_refused(tmp_path: Path, outside: Path) -> None:
    """A symlink inside the root pointing outside cannot be read, listed, written or deleted."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    store = LocalArtifactStore(root)

    with pytest.raises(InvalidInputError, match="resolves outside the artifact root"):
        await anext(store.open("link/secret.txt"))
    with pytest.raises(InvalidInputError, match="outside"):
        await store.list("link")
    with pytest.raises(InvalidInputError, match="outside"):
        await store.put_bytes(b"pwned", "link/new.txt")
    with pytest.raises(InvalidInputError, match="outside"):
        await store.delete("link/secret.txt")
    with pytest.raises(InvalidInputError, match="outside"):
        await store.get_file("link/secret.txt", tmp_path / "stolen.txt")

    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "do not read"
    assert not (tmp_path / "stolen.txt").exists()


async def test_symlinked_file_escaping_the_root_is_refused(tmp_path: Path, outside: Path) -> None:
    """A file symlink to outside the root is refused too, not followed."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "innocent.txt").symlink_to(outside / "secret.txt")
    store = LocalArtifactStore(root)
    with pytest.raises(InvalidInputError, match="outside"):
        await anext(store.open("innocent.txt"))


async def test_symlink_within_the_root_is_followed(tmp_path: Path) -> None:
    """A symlink that stays inside the root works; deleting it removes the link only."""
    store = LocalArtifactStore(tmp_path / "root")
    await store.put_bytes(b"real", "real/file.txt")
    (tmp_path / "root" / "alias").symlink_to(tmp_path / "root" / "real")
    assert b"".join([c async for c in store.open("alias/file.txt")]) == b"real"
    await store.delete("alias")
    assert (tmp_path / "root" / "real" / "file.txt").read_bytes() == b"real"


async def test_root_that_is_a_symlink_is_allowed(tmp_path: Path) -> None:
    """The root itself may be reached through a symlink (e.g. /var -> /private/var)."""
    (tmp_path / "real-root").mkdir()
    (tmp_path / "root-link").symlink_to(tmp_path / "real-root", target_is_directory=True)
    store = LocalArtifactStore(tmp_path / "root-link")
    await store.put_bytes(b"x", "a/b.txt")
    assert (tmp_path / "real-root" / "a" / "b.txt").read_bytes() == b"x"


async def test_cancelled_put_leaves_old_file_and_no_temp_file(
    tmp_path: Path, wait_until: WaitUntil
) -> None:
    """A put cancelled mid-stream keeps the old artifact whole and leaves no temp file."""
    root = tmp_path / "root"
    store = LocalArtifactStore(root, chunk_size=1 << 16)
    await store.put_bytes(b"old version", "model.bin")
    fifo = tmp_path / "slow-source"
    os.mkfifo(fifo)
    release = threading.Event()

    def feed() -> None:
        # One chunk, then the pipe stays open and silent until the test lets go.
        with open(fifo, "wb") as pipe:
            pipe.write(b"n" * (1 << 16))
            pipe.flush()
            release.wait(timeout=30)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        put = asyncio.create_task(store.put_file(fifo, "model.bin"))
        await wait_until(lambda: any(name.endswith(".tmp") for name in listdir(root / STAGING_DIR)))
        put.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await put
    finally:
        release.set()
        feeder.join()
    assert os.listdir(root) == ["model.bin"]
    assert (root / "model.bin").read_bytes() == b"old version"


async def test_unfinished_temp_files_are_not_listed(tmp_path: Path) -> None:
    """A temp file from a put in progress (or a crash) never shows up in a listing."""
    store = LocalArtifactStore(tmp_path / "root")
    await store.put_bytes(b"x", "dir/a.txt")
    (tmp_path / "root" / "dir" / ".tracker-0123456789abcdef.tmp").write_bytes(b"partial")
    assert await store.list("dir") == [ArtifactEntry("dir/a.txt", False, 1)]


async def test_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """Stored files get 0666 minus the umask, like any new file, not a temp file's 0600."""
    umask = os.umask(0o022)
    os.umask(umask)
    store = LocalArtifactStore(tmp_path / "root")
    await store.put_bytes(b"x", "a.txt")
    assert (tmp_path / "root" / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


async def test_root_that_is_a_file_is_a_location_error(tmp_path: Path) -> None:
    """A root path that is a regular file gives ArtifactLocationError naming the root."""
    (tmp_path / "root").write_text("not a directory")
    store = LocalArtifactStore(tmp_path / "root")
    with pytest.raises(ArtifactLocationError, match="is not a directory"):
        await store.put_bytes(b"x", "a.txt")


async def test_put_under_a_file_is_refused(tmp_path: Path) -> None:
    """Putting `a.txt/b` when `a.txt` is a file raises ArtifactError and keeps `a.txt`."""
    store = LocalArtifactStore(tmp_path / "root")
    await store.put_bytes(b"file", "a.txt")
    with pytest.raises(ArtifactError, match="a parent of it is a file"):
        await store.put_bytes(b"x", "a.txt/b")
    assert (tmp_path / "root" / "a.txt").read_bytes() == b"file"


async def test_put_over_a_directory_is_refused(tmp_path: Path) -> None:
    """Putting a file where a directory is raises ArtifactError and keeps the directory."""
    store = LocalArtifactStore(tmp_path / "root")
    await store.put_bytes(b"x", "d/inner.txt")
    with pytest.raises(ArtifactError, match="a directory of that name exists"):
        await store.put_bytes(b"x", "d")
    assert await store.list("d") == [ArtifactEntry("d/inner.txt", False, 1)]


async def test_file_uris_pick_the_local_store(tmp_path: Path) -> None:
    """`file://` URIs and plain paths give a LocalArtifactStore at that directory."""
    for uri in (tmp_path.as_uri(), str(tmp_path), f"file:{tmp_path}"):
        store = artifact_store_for_uri(uri)
        assert isinstance(store, LocalArtifactStore)
        assert store.root == str(tmp_path)


@pytest.mark.parametrize("name", ["run #1", "100%25 done", "100% done", "what?", "a b", "données"])
async def test_awkward_directory_names_work_end_to_end(tmp_path: Path, name: str) -> None:
    """Under a directory named with spaces, '#', '%', '%25', '?' or unicode, artifacts land in
    that directory and come back: put, list and get through the run's built URI."""
    experiment_dir = tmp_path / name / "1"
    uri = join_artifact_uri(local_artifact_uri(experiment_dir), "abc123", "artifacts")
    async with artifact_store_for_uri(uri) as store:
        await store.put_bytes(b"weights", "model/w.bin")
        assert await store.list() == [ArtifactEntry("model", True)]
        assert await store.list("model") == [ArtifactEntry("model/w.bin", False, 7)]
        got = await store.get_file("model/w.bin", tmp_path / "back.bin")
    assert got.size == 7 and (tmp_path / "back.bin").read_bytes() == b"weights"
    on_disk = experiment_dir / "abc123" / "artifacts" / "model" / "w.bin"
    assert on_disk.read_bytes() == b"weights"
    assert sorted(os.listdir(tmp_path)) == sorted([name, "back.bin"])  # nothing went elsewhere


# -- unfinished puts: kept out of the tree, swept after a crash -------------------------------


class PutProcess:
    """A real process putting a FIFO, fed by the test, into a LocalArtifactStore at `root`."""

    def __init__(self, root: Path, fifo: Fifo, dest: str) -> None:
        self.root, self.fifo, self.dest = root, fifo, dest
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("local_put_worker.py")),
            str(self.root),
            str(self.fifo.path),
            self.dest,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        await self.fifo.connect()

    async def wait(self) -> tuple[int, str]:
        assert self.process is not None
        _, err = await asyncio.wait_for(self.process.communicate(), timeout=30)
        assert self.process.returncode is not None
        return self.process.returncode, err.decode()

    def temp_files(self) -> list[Path]:
        return [self.root / STAGING_DIR / name for name in listdir(self.root / STAGING_DIR)]

    async def aclose(self) -> None:
        self.fifo.close()
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.fixture
async def put_process(tmp_path: Path, fifo: Fifo) -> AsyncIterator[PutProcess]:
    """A put of `ckpt/model.bin` in another process, streaming what the test feeds it."""
    created = PutProcess(tmp_path / "root", fifo, "ckpt/model.bin")
    yield created
    await created.aclose()


async def test_killed_put_leaves_nothing_once_the_store_is_opened_again(
    put_process: PutProcess, wait_until: WaitUntil
) -> None:
    """A put SIGKILLed mid-stream is never listed, and its temp file goes at the next open."""
    await put_process.start()
    await put_process.fifo.feed(os.urandom(4 * MiB))
    await wait_until(
        lambda: any(p.stat().st_size >= 4 * MiB for p in put_process.temp_files()), timeout=30
    )
    # While it is in flight, nothing of it shows: no file, and no empty directory either.
    async with LocalArtifactStore(put_process.root) as watcher:
        assert await watcher.list() == []

    assert put_process.process is not None
    put_process.process.send_signal(signal.SIGKILL)
    returncode, _ = await put_process.wait()
    assert returncode == -signal.SIGKILL
    (left,) = put_process.temp_files()
    # The next open comes later than the grace that covers a writer not holding its lock yet.
    backdate(left, TEMP_FILE_GRACE + 1)

    async with LocalArtifactStore(put_process.root) as reopened:
        assert await reopened.list() == []
        assert await reopened.list("ckpt") == []
    assert every_file_under(put_process.root) == []
    assert listdir(put_process.root) == []


async def test_reopening_spares_the_temp_file_of_a_live_put(
    put_process: PutProcess, wait_until: WaitUntil
) -> None:
    """Opening the store while another process is mid-put keeps that put's temp file; it ends
    with the whole file in place."""
    await put_process.start()
    first, rest = os.urandom(2 * MiB), os.urandom(3 * MiB)
    await put_process.fifo.feed(first)
    await wait_until(
        lambda: any(p.stat().st_size == 2 * MiB for p in put_process.temp_files()), timeout=30
    )
    (live,) = put_process.temp_files()
    backdate(live, TEMP_FILE_GRACE + 1)  # old enough to go, if its writer's lock did not stop it

    async with LocalArtifactStore(put_process.root) as other:
        await other.put_bytes(b"x", "other.txt")  # the first use sweeps
        assert live.exists()
        await put_process.fifo.feed(rest)
        put_process.fifo.close()
        returncode, err = await put_process.wait()
        assert returncode == 0, err
        assert await other.list() == [
            ArtifactEntry("ckpt", True),
            ArtifactEntry("other.txt", False, 1),
        ]
    assert (put_process.root / "ckpt" / "model.bin").read_bytes() == first + rest
    assert every_file_under(put_process.root) == ["ckpt/model.bin", "other.txt"]


def test_sweep_keeps_young_and_locked_temp_files(tmp_path: Path) -> None:
    """An unlocked temp file younger than the grace (its writer may not have locked it yet) is
    kept; an old unlocked one goes, other names are never touched, and so does the empty dir."""
    staging = tmp_path / STAGING_DIR
    staging.mkdir()
    young, old = staging / temp_name(), staging / temp_name()
    young.write_bytes(b"y")
    old.write_bytes(b"o")
    backdate(old, TEMP_FILE_GRACE + 1)
    stranger = staging / "not-a-temp-file.txt"
    stranger.write_bytes(b"s")
    backdate(stranger, TEMP_FILE_GRACE + 1)

    assert remove_abandoned_temp_files(str(staging)) == 1
    assert listdir(staging) == sorted([young.name, stranger.name])
    stranger.unlink()
    backdate(young, TEMP_FILE_GRACE + 1)
    assert remove_abandoned_temp_files(str(staging)) == 1
    assert not staging.exists()
    assert remove_abandoned_temp_files(str(staging)) == 0  # a missing directory is fine


async def test_staging_directory_is_reserved(tmp_path: Path) -> None:
    """Nobody can put, read, list or delete under the staging directory's name."""
    store = LocalArtifactStore(tmp_path / "root")
    for call in (
        store.put_bytes(b"x", f"{STAGING_DIR}/a.txt"),
        store.list(STAGING_DIR),
        store.delete(STAGING_DIR),
        anext(store.open(f"{STAGING_DIR}/a.txt")),
    ):
        with pytest.raises(InvalidInputError, match="reserved for unfinished writes"):
            await call
    assert listdir(tmp_path / "root") == []
