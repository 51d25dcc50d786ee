"""What only the local store does: symlinks, atomic renames, file modes, a bad root."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tracker.artifacts import (
    ArtifactEntry,
    ArtifactError,
    ArtifactLocationError,
    LocalArtifactStore,
    artifact_store_for_uri,
    join_artifact_uri,
    local_artifact_uri,
)
from tracker.errors import InvalidInputError

WaitUntil = Callable[..., Awaitable[None]]


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
        await wait_until(lambda: any(name.endswith(".tmp") for name in os.listdir(root)))
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
