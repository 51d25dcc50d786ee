"""The ArtifactStore contract, run against every real backend."""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import aclosing
from pathlib import Path

import pytest

from tests.artifacts.helpers import Fifo
from tracker.artifacts import (
    ArtifactEntry,
    ArtifactError,
    ArtifactInfo,
    ArtifactNotFoundError,
    ArtifactStore,
)
from tracker.artifacts.base import run_to_completion
from tracker.errors import InvalidInputError, NotFoundError


async def read_all(artifact_store: ArtifactStore, path: str, chunk_size: int = 1 << 20) -> bytes:
    return b"".join([chunk async for chunk in artifact_store.open(path, chunk_size=chunk_size)])


async def test_put_bytes_then_open_round_trips(artifact_store: ArtifactStore) -> None:
    """Bytes put are the bytes opened, and the info has their size, SHA-256 and MIME type."""
    data = b"hello artifacts\n" * 100
    info = await artifact_store.put_bytes(data, "notes/hello.txt")
    assert info.path == "notes/hello.txt"
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.content_type == "text/plain"
    assert await read_all(artifact_store, "notes/hello.txt") == data


async def test_put_file_then_get_file_round_trips(
    artifact_store: ArtifactStore, tmp_path: Path
) -> None:
    """A 3 MiB file put and fetched back is byte-identical, with matching hashes."""
    data = os.urandom(3 << 20)
    source = tmp_path / "weights.bin"
    source.write_bytes(data)
    put = await artifact_store.put_file(source, "model/weights.bin")
    assert (put.size, put.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert put.content_type == "application/octet-stream"

    fetched = await artifact_store.get_file(
        "model/weights.bin", tmp_path / "out" / "deep" / "w.bin"
    )
    assert (tmp_path / "out" / "deep" / "w.bin").read_bytes() == data
    assert (fetched.size, fetched.sha256) == (put.size, put.sha256)


async def test_open_streams_in_chunks_of_the_requested_size(artifact_store: ArtifactStore) -> None:
    """Opening streams chunks no bigger than asked, whose concatenation is the artifact."""
    data = os.urandom((1 << 20) * 2 + 12345)
    await artifact_store.put_bytes(data, "big.bin")
    chunks = [chunk async for chunk in artifact_store.open("big.bin", chunk_size=1 << 19)]
    assert len(chunks) >= 5
    assert all(0 < len(chunk) <= 1 << 19 for chunk in chunks)
    assert b"".join(chunks) == data


async def test_closing_open_early_leaves_store_usable(artifact_store: ArtifactStore) -> None:
    """Stopping after the first chunk releases the stream; the store keeps working."""
    await artifact_store.put_bytes(os.urandom(3 << 20), "big.bin")
    for _ in range(3):
        async with aclosing(artifact_store.open("big.bin", chunk_size=1 << 16)) as chunks:
            async for _chunk in chunks:
                break
    await artifact_store.put_bytes(b"after", "after.txt")
    assert await read_all(artifact_store, "after.txt") == b"after"


async def test_empty_artifact_round_trips(artifact_store: ArtifactStore) -> None:
    """A zero-byte artifact is stored, listed with size 0 and opens to nothing."""
    info = await artifact_store.put_bytes(b"", "empty.txt")
    assert info.size == 0 and info.sha256 == hashlib.sha256(b"").hexdigest()
    assert await read_all(artifact_store, "empty.txt") == b""
    assert await artifact_store.list() == [ArtifactEntry("empty.txt", False, 0)]


async def test_nested_directories_list_one_level_at_a_time(artifact_store: ArtifactStore) -> None:
    """Listing shows one level, dirs without size, paths relative to the root, sorted."""
    await artifact_store.put_bytes(b"1", "a/b/c.txt")
    await artifact_store.put_bytes(b"22", "a/b/d/e.txt")
    await artifact_store.put_bytes(b"333", "a/f.txt")
    await artifact_store.put_bytes(b"4444", "z.txt")

    assert await artifact_store.list() == [
        ArtifactEntry("a", True),
        ArtifactEntry("z.txt", False, 4),
    ]
    assert await artifact_store.list("a") == [
        ArtifactEntry("a/b", True),
        ArtifactEntry("a/f.txt", False, 3),
    ]
    assert await artifact_store.list("a/b/") == [
        ArtifactEntry("a/b/c.txt", False, 1),
        ArtifactEntry("a/b/d", True),
    ]
    assert await artifact_store.list("a/b/d") == [ArtifactEntry("a/b/d/e.txt", False, 2)]
    assert await artifact_store.list("") == await artifact_store.list()


async def test_listing_reports_sizes(artifact_store: ArtifactStore) -> None:
    """Each listed file carries its size in bytes."""
    sizes = {"s0.bin": 0, "s1.bin": 1, "s2.bin": 4096, "s3.bin": 100_000}
    for name, size in sizes.items():
        await artifact_store.put_bytes(b"x" * size, f"sizes/{name}")
    listed = await artifact_store.list("sizes")
    assert {entry.path: entry.size for entry in listed} == {
        f"sizes/{n}": s for n, s in sizes.items()
    }
    assert not any(entry.is_dir for entry in listed)


async def test_missing_or_file_prefix_lists_empty(artifact_store: ArtifactStore) -> None:
    """Listing a missing directory, or a file, gives [] (as MLflow does)."""
    assert await artifact_store.list() == []
    assert await artifact_store.list("nope") == []
    await artifact_store.put_bytes(b"x", "file.txt")
    assert await artifact_store.list("file.txt") == []


async def test_overwrite_replaces_content_and_size(artifact_store: ArtifactStore) -> None:
    """Putting again at the same path replaces the artifact; listings show the new size."""
    await artifact_store.put_bytes(b"first version, longer", "v.txt")
    info = await artifact_store.put_bytes(b"second", "v.txt")
    assert await read_all(artifact_store, "v.txt") == b"second"
    assert info.size == 6
    assert await artifact_store.list() == [ArtifactEntry("v.txt", False, 6)]


async def test_equivalent_spellings_name_one_artifact(artifact_store: ArtifactStore) -> None:
    """`a//./b.txt` and `a/b.txt` are the same artifact on every backend."""
    info = await artifact_store.put_bytes(b"same", "a//./b.txt")
    assert info.path == "a/b.txt"
    assert await read_all(artifact_store, "a/b.txt") == b"same"
    assert await artifact_store.list("a") == [ArtifactEntry("a/b.txt", False, 4)]


async def test_open_missing_raises_not_found(artifact_store: ArtifactStore) -> None:
    """Opening a missing artifact raises ArtifactNotFoundError (a NotFoundError) on iteration."""
    chunks = artifact_store.open("missing/file.txt")
    with pytest.raises(ArtifactNotFoundError, match=r"missing/file\.txt") as caught:
        await anext(chunks)
    assert isinstance(caught.value, NotFoundError)


async def test_open_directory_raises_not_found(artifact_store: ArtifactStore) -> None:
    """A directory is not a file: opening one raises ArtifactNotFoundError."""
    await artifact_store.put_bytes(b"x", "dir/file.txt")
    with pytest.raises(ArtifactNotFoundError):
        await read_all(artifact_store, "dir")


async def test_get_file_missing_raises_and_creates_nothing(
    artifact_store: ArtifactStore, tmp_path: Path
) -> None:
    """Fetching a missing artifact raises and leaves no file or directory behind locally."""
    with pytest.raises(ArtifactNotFoundError):
        await artifact_store.get_file("missing.bin", tmp_path / "dl" / "missing.bin")
    assert not (tmp_path / "dl").exists()


async def test_get_file_into_a_directory_is_refused(
    artifact_store: ArtifactStore, tmp_path: Path
) -> None:
    """A local destination that is a directory is refused with InvalidInputError."""
    await artifact_store.put_bytes(b"x", "x.txt")
    with pytest.raises(InvalidInputError, match="is a directory"):
        await artifact_store.get_file("x.txt", tmp_path)


async def test_put_file_of_missing_local_file_is_refused(
    artifact_store: ArtifactStore, tmp_path: Path
) -> None:
    """A missing local file is InvalidInputError, and nothing is stored."""
    with pytest.raises(InvalidInputError, match="does not exist"):
        await artifact_store.put_file(tmp_path / "nope.bin", "nope.bin")
    assert await artifact_store.list() == []


async def test_delete_file(artifact_store: ArtifactStore) -> None:
    """Deleting a file removes it and the directories it alone kept alive."""
    await artifact_store.put_bytes(b"x", "only/child/file.txt")
    await artifact_store.put_bytes(b"y", "keep.txt")
    await artifact_store.delete("only/child/file.txt")
    with pytest.raises(ArtifactNotFoundError):
        await read_all(artifact_store, "only/child/file.txt")
    assert await artifact_store.list() == [ArtifactEntry("keep.txt", False, 1)]


async def test_delete_directory_removes_everything_under_it(artifact_store: ArtifactStore) -> None:
    """Deleting `dir` removes `dir/...` at every depth, but not the sibling `dir2`."""
    for path in ("dir/a.txt", "dir/sub/b.txt", "dir/sub/deeper/c.txt", "dir2/d.txt", "dir.txt"):
        await artifact_store.put_bytes(b"data", path)
    await artifact_store.delete("dir")
    assert await artifact_store.list() == [
        ArtifactEntry("dir.txt", False, 4),
        ArtifactEntry("dir2", True),
    ]
    assert await read_all(artifact_store, "dir2/d.txt") == b"data"


async def test_list_and_delete_span_many_listing_pages(artifact_store: ArtifactStore) -> None:
    """250 files (several listing pages on moto) all list, and all go with their directory."""
    names = [f"many/{i:03}.txt" for i in range(240)] + [f"many/sub{i}/x.txt" for i in range(10)]
    await asyncio.gather(*(artifact_store.put_bytes(b"x", name) for name in names))
    listed = await artifact_store.list("many")
    assert len(listed) == 250
    assert [entry.path for entry in listed if entry.is_dir] == [f"many/sub{i}" for i in range(10)]
    await artifact_store.delete("many")
    assert await artifact_store.list() == []


async def test_delete_missing_raises_not_found(artifact_store: ArtifactStore) -> None:
    """Deleting where nothing exists raises ArtifactNotFoundError."""
    await artifact_store.put_bytes(b"x", "dirx/file.txt")
    with pytest.raises(ArtifactNotFoundError):
        await artifact_store.delete("dir")
    with pytest.raises(ArtifactNotFoundError):
        await artifact_store.delete("dirx/file.txt/child")


async def test_concurrent_puts_all_land(artifact_store: ArtifactStore) -> None:
    """Twenty puts in parallel all land with their own content."""
    await asyncio.gather(
        *(artifact_store.put_bytes(b"%d" % i, f"par/{i:02}.txt") for i in range(20))
    )
    listed = await artifact_store.list("par")
    assert [entry.path for entry in listed] == [f"par/{i:02}.txt" for i in range(20)]
    assert await read_all(artifact_store, "par/07.txt") == b"7"


@pytest.mark.parametrize("path", ["../escape.txt", "%2e%2e/escape.txt", "/etc/passwd", "a#b"])
async def test_unsafe_paths_are_refused_before_any_io(
    artifact_store: ArtifactStore, path: str
) -> None:
    """Every method refuses an unsafe path with InvalidInputError and stores nothing."""
    with pytest.raises(InvalidInputError):
        await artifact_store.put_bytes(b"x", path)
    with pytest.raises(InvalidInputError):
        artifact_store.open(path)
    with pytest.raises(InvalidInputError):
        await artifact_store.list(path)
    with pytest.raises(InvalidInputError):
        await artifact_store.delete(path)
    assert await artifact_store.list() == []


async def test_closed_store_refuses_work(artifact_store: ArtifactStore) -> None:
    """After aclose(), methods raise ArtifactError instead of half-working."""
    await artifact_store.put_bytes(b"x", "x.txt")
    await artifact_store.aclose()
    await artifact_store.aclose()  # idempotent
    with pytest.raises(ArtifactError, match="closed"):
        await artifact_store.put_bytes(b"x", "y.txt")
    with pytest.raises(ArtifactError, match="closed"):
        await artifact_store.list()


async def test_on_stored_is_told_once_with_what_was_stored(
    artifact_store: ArtifactStore, tmp_path: Path
) -> None:
    """`on_stored` gets the put's info exactly once, by the time the put returns."""
    told: list[ArtifactInfo] = []
    from_bytes = await artifact_store.put_bytes(b"abc", "a.txt", on_stored=told.append)
    (tmp_path / "b.bin").write_bytes(os.urandom(6 << 20))
    from_file = await artifact_store.put_file(tmp_path / "b.bin", "b.bin", on_stored=told.append)
    assert told == [from_bytes, from_file]


async def test_put_cancelled_while_a_pipe_is_silent_ends_at_once_storing_nothing(
    artifact_store: ArtifactStore, fifo: Fifo
) -> None:
    """Cancelling a put blocked reading a pipe that has more to come raises at once (it does
    not wait for the pipe), tells nobody it stored anything, and leaves nothing listed."""
    told: list[ArtifactInfo] = []
    put = asyncio.create_task(artifact_store.put_file(fifo.path, "p.bin", on_stored=told.append))
    await fifo.connect()
    await fifo.feed(os.urandom(6 << 20))  # more than a part: on S3 an upload is under way
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(30):  # a guard: before, this waited for the pipe forever
            await put
    fifo.close()
    assert told == []
    assert await artifact_store.list() == []


async def test_a_step_run_to_completion_outlives_a_cancellation() -> None:
    """A commit step cancelled half-way still finishes and reports its result, then the
    cancellation is raised: what was stored is always known."""
    release = asyncio.Event()
    seen: list[str] = []

    async def commit() -> str:
        await release.wait()
        return "stored"

    task = asyncio.create_task(run_to_completion(commit(), then=seen.append))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    assert not task.done()  # still waiting for the step
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["stored"]
