"""Ending a run with uploads in flight: drain waits for them or cancels them cleanly, then refuses more."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.artifacts.helpers import Fifo
from tracker.artifacts import ArtifactEntry, ArtifactError, ArtifactInfo
from tracker.artifacts.base import ArtifactUploadCancelledError
from tracker.artifacts.local import STAGING_DIR
from tracker.artifacts.runs import Drained, RunArtifacts
from tracker.artifacts.s3 import MIN_PART_SIZE
from tracker.errors import InvalidStateError

WaitUntil = Callable[..., Awaitable[None]]
MiB = 1 << 20
FIRST = MIN_PART_SIZE + MiB  # a whole part and more: on S3 a multipart upload is under way


class Backend:
    """Where a run's artifacts go, and how to see what is there, in progress or stored."""

    def __init__(self, name: str, uri: str, tmp_path: Path, s3_client: Any, bucket: str) -> None:
        self.name, self.uri = name, uri
        self._tmp_path, self._s3, self._bucket = tmp_path, s3_client, bucket

    async def in_progress(self) -> int:
        """Bytes of unfinished uploads: temp files locally, stored parts on S3."""
        if self.name == "local":
            staging = Path(self.uri) / STAGING_DIR
            return sum(p.stat().st_size for p in staging.iterdir()) if staging.exists() else 0
        uploads = (await self._s3.list_multipart_uploads(Bucket=self._bucket)).get("Uploads", [])
        total = 0
        for upload in uploads:
            parts = await self._s3.list_parts(
                Bucket=self._bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            total += sum(part["Size"] for part in parts.get("Parts", []))
        return total

    async def nothing_left(self) -> bool:
        """No unfinished upload at all: no temp file or staging dir, no multipart upload."""
        if self.name == "local":
            return not (Path(self.uri) / STAGING_DIR).exists()
        listed = await self._s3.list_multipart_uploads(Bucket=self._bucket)
        return not listed.get("Uploads")


@pytest.fixture(params=["local", "s3"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, moto_endpoint: str, s3_client: Any, bucket: str
) -> Backend:
    """A run's artifact URI on local disk or in a fresh moto bucket."""
    if request.param == "local":
        uri = str(tmp_path / "exp" / "run" / "artifacts")
    else:
        uri = f"s3://{bucket}/exp/run/artifacts"
    return Backend(request.param, uri, tmp_path, s3_client, bucket)


@pytest.fixture
async def artifacts(moto_endpoint: str) -> AsyncIterator[RunArtifacts]:
    """RunArtifacts with 5 MiB parts, S3 options pointing at moto (local ignores them)."""
    created = RunArtifacts(endpoint_url=moto_endpoint, part_size=MIN_PART_SIZE)
    yield created
    await created.aclose()


async def start_streaming_upload(
    artifacts: RunArtifacts,
    backend: Backend,
    fifo: Fifo,
    recorded: list[ArtifactInfo],
    wait_until: WaitUntil,
) -> asyncio.Task[ArtifactInfo]:
    """`asyncio.create_task(log_artifact(...))` of a pipe, fed `FIRST` bytes and waiting for
    more, with those bytes already on their way to the store."""
    upload = asyncio.create_task(
        artifacts.log_file(backend.uri, fifo.path, "ckpt", recorded.append)
    )
    await fifo.connect()
    await fifo.feed(os.urandom(FIRST))
    expected = MIN_PART_SIZE if backend.name == "s3" else FIRST
    await wait_until(lambda: _at_least(backend.in_progress(), expected), timeout=30)
    return upload


async def _at_least(amount: Awaitable[int], expected: int) -> bool:
    return await amount >= expected


async def test_drain_waits_for_uploads_in_flight_and_they_are_recorded(
    artifacts: RunArtifacts,
    backend: Backend,
    fifo: Fifo,
    wait_until: WaitUntil,
) -> None:
    """The README's create_task(log_artifact) then end(): drain returns only once the upload
    is stored and recorded, and the task returns its info."""
    recorded: list[ArtifactInfo] = []
    upload = await start_streaming_upload(artifacts, backend, fifo, recorded, wait_until)
    drain = asyncio.create_task(artifacts.drain(backend.uri))
    await asyncio.sleep(0)  # let it start: it must now be waiting on the upload
    assert not drain.done() and recorded == []
    await fifo.feed(os.urandom(MiB))
    fifo.close()

    assert await drain == Drained(finished=1)
    assert [info.path for info in recorded] == [f"ckpt/{fifo.path.name}"]
    assert upload.done() and await upload == recorded[0]
    assert recorded[0].size == FIRST + MiB
    assert await artifacts.list(backend.uri, "ckpt") == [
        ArtifactEntry(f"ckpt/{fifo.path.name}", False, FIRST + MiB)
    ]
    assert await backend.nothing_left()


async def test_drain_with_cancel_leaves_nothing_and_the_upload_says_why(
    artifacts: RunArtifacts,
    backend: Backend,
    fifo: Fifo,
    wait_until: WaitUntil,
) -> None:
    """drain(cancel=True) mid-upload: no partial file or object, no multipart upload left,
    nothing recorded, and the upload's task raises ArtifactUploadCancelledError."""
    recorded: list[ArtifactInfo] = []
    upload = await start_streaming_upload(artifacts, backend, fifo, recorded, wait_until)

    # Cancelled while blocked reading the pipe, with more to come: it must not wait for it.
    assert await artifacts.drain(backend.uri, cancel=True) == Drained(cancelled=1)
    with pytest.raises(ArtifactUploadCancelledError, match="cancelled because its run ended"):
        await upload
    assert recorded == []
    assert await artifacts.list(backend.uri, None) == []
    assert await backend.nothing_left()


async def test_drain_timeout_cancels_what_is_still_in_flight(
    artifacts: RunArtifacts, backend: Backend, fifo: Fifo, wait_until: WaitUntil
) -> None:
    """Past drain's timeout, the uploads still running are cancelled as with cancel=True."""
    recorded: list[ArtifactInfo] = []
    upload = await start_streaming_upload(artifacts, backend, fifo, recorded, wait_until)
    # The upload waits for more of the pipe, which never comes: only the timeout ends it.
    assert await artifacts.drain(backend.uri, timeout=0.5) == Drained(cancelled=1)
    with pytest.raises(ArtifactUploadCancelledError):
        await upload
    assert recorded == [] and await backend.nothing_left()
    fifo.close()


async def test_uploads_after_drain_are_refused(
    artifacts: RunArtifacts, backend: Backend, tmp_path: Path
) -> None:
    """Once drained, every kind of upload to that run raises InvalidStateError saying the run
    has ended; other runs are unaffected, and reads still work."""
    await artifacts.log_bytes(backend.uri, b"before", "before.txt", lambda _: None)
    assert await artifacts.drain(backend.uri) == Drained()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    for upload in (
        artifacts.log_bytes(backend.uri, b"x", "x.txt", lambda _: None),
        artifacts.log_file(backend.uri, tmp_path / "src" / "a.txt", None, lambda _: None),
        artifacts.log_dir(backend.uri, tmp_path / "src", None, lambda _: None),
    ):
        with pytest.raises(InvalidStateError, match="The run has ended"):
            await upload
    assert await artifacts.list(backend.uri, None) == [ArtifactEntry("before.txt", False, 6)]
    other = backend.uri.replace("/run/", "/other-run/")
    await artifacts.log_bytes(other, b"y", "y.txt", lambda _: None)
    assert await artifacts.list(other, None) == [ArtifactEntry("y.txt", False, 1)]


async def test_a_directory_upload_is_drained_whole(
    artifacts: RunArtifacts, backend: Backend, tmp_path: Path, wait_until: WaitUntil
) -> None:
    """log_artifacts of a tree, the run drained while one file (a pipe) is still streaming:
    drain returns once every file is stored and recorded."""
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    for i in range(39):
        (src / ("sub" if i % 2 else "") / f"f{i:02d}.bin").write_bytes(os.urandom(50_000))
    stream = Fifo(src / "sub" / "stream.bin")
    recorded: list[ArtifactInfo] = []
    try:
        upload = asyncio.create_task(artifacts.log_dir(backend.uri, src, "tree", recorded.append))
        await stream.connect()
        await wait_until(lambda: len(recorded) == 39)
        drain = asyncio.create_task(artifacts.drain(backend.uri))
        await asyncio.sleep(0)  # let it start: it must now be waiting on the pipe's upload
        assert not drain.done()
        await stream.feed(b"streamed")
    finally:
        stream.close()
    drained = await drain
    # The pipe's upload, and any that had recorded but not yet returned when drain began.
    assert drained.finished >= 1 and drained.failed == drained.cancelled == 0
    assert len(recorded) == 40 and len(await upload) == 40
    assert {info.path: info.size for info in recorded}["tree/sub/stream.bin"] == 8


async def test_cancelling_the_caller_cancels_the_upload_cleanly(
    artifacts: RunArtifacts, backend: Backend, fifo: Fifo, wait_until: WaitUntil
) -> None:
    """Cancelling the task awaiting an upload cancels the upload: plain CancelledError, and
    nothing stored or left in progress."""
    recorded: list[ArtifactInfo] = []
    upload = await start_streaming_upload(artifacts, backend, fifo, recorded, wait_until)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert recorded == [] and await backend.nothing_left()
    assert await artifacts.list(backend.uri, None) == []
    assert await artifacts.drain(backend.uri) == Drained()


async def test_aclose_cancels_uploads_in_flight_and_refuses_more(
    moto_endpoint: str, backend: Backend, fifo: Fifo, wait_until: WaitUntil
) -> None:
    """Closing RunArtifacts cancels what is in flight as drain(cancel=True) does; afterwards
    it refuses every operation."""
    artifacts = RunArtifacts(endpoint_url=moto_endpoint, part_size=MIN_PART_SIZE)
    recorded: list[ArtifactInfo] = []
    upload = await start_streaming_upload(artifacts, backend, fifo, recorded, wait_until)
    await artifacts.aclose()
    with pytest.raises(ArtifactUploadCancelledError):
        await upload
    assert recorded == [] and await backend.nothing_left()
    with pytest.raises(ArtifactError, match="closed"):
        await artifacts.log_bytes(backend.uri, b"x", "x.txt", lambda _: None)
    with pytest.raises(ArtifactError, match="closed"):
        await artifacts.list(backend.uri, None)
