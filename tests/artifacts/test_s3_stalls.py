"""A stalled or killed S3 endpoint: moto in its own process, SIGSTOPped or killed mid-request."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.artifacts.helpers import Fifo, MotoProcess, raw_s3_client
from tracker.artifacts import ArtifactEntry, ArtifactUnavailableError
from tracker.artifacts.s3 import MIN_PART_SIZE, S3ArtifactStore

MiB = 1 << 20
WaitUntil = Callable[..., Awaitable[None]]
BUCKET = "stalls"
# The options of the report (which hung for 300 s and more), with a short deadline.
OPTIONS: dict[str, Any] = {
    "max_attempts": 2,
    "read_timeout": 5,
    "request_timeout": 1.0,
    "abort_attempts": 2,
}
# The deadline, the aborts and their backoff, with room for a busy machine.
BOUND = 15.0
# Larger than the loopback socket buffers, so that sending a part to a stopped server blocks.
BIG_PART = 16 * MiB


@pytest.fixture
async def endpoint(moto_process: MotoProcess) -> str:
    """moto started in its own process, with the test bucket."""
    return await moto_process.start()


@pytest.fixture
async def raw(endpoint: str, botocore_loader: Any) -> AsyncIterator[Any]:
    """A raw client on that moto, to inspect what is left there (only while it runs)."""
    async with raw_s3_client(endpoint, botocore_loader) as client:
        await client.create_bucket(Bucket=BUCKET)
        yield client


async def uploads_in_progress(raw: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await raw.list_multipart_uploads(Bucket=BUCKET)).get(
        "Uploads", []
    )
    return found


async def objects(raw: Any) -> list[str]:
    listed = await raw.list_objects_v2(Bucket=BUCKET)
    return [item["Key"] for item in listed.get("Contents", [])]


async def parts_stored(raw: Any) -> int:
    uploads = await uploads_in_progress(raw)
    if not uploads:
        return 0
    listed = await raw.list_parts(
        Bucket=BUCKET, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
    )
    return len(listed.get("Parts", []))


def notes(error: BaseException) -> str:
    return "\n".join(getattr(error, "__notes__", []))


async def failure_of(work: Awaitable[object]) -> tuple[BaseException, float]:
    """The error `work` raises and how long it took; a guard turns a hang into a failure."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ArtifactUnavailableError) as caught:
        async with asyncio.timeout(60):
            await work
    return caught.value, loop.time() - started


async def streaming_put(store: S3ArtifactStore, fifo: Fifo, first: int) -> asyncio.Task[Any]:
    """A put of the pipe `fifo`, fed `first` bytes and waiting for more."""
    put = asyncio.create_task(store.put_file(fifo.path, "ckpt.bin"))
    await fifo.connect()
    await fifo.feed(os.urandom(first))
    return put


async def works_again(store: S3ArtifactStore, tmp_path: Path) -> None:
    """A small put, a multipart put and a download all succeed."""
    await store.put_bytes(b"after", "after.txt")
    big = os.urandom(MIN_PART_SIZE + MiB)
    (tmp_path / "big.bin").write_bytes(big)
    await store.put_file(tmp_path / "big.bin", "big.bin")
    got = await store.get_file("big.bin", tmp_path / "back.bin")
    assert got.sha256 == hashlib.sha256(big).hexdigest()


async def test_stall_mid_part_fails_in_bounded_time_and_is_cleaned_up_when_s3_returns(
    endpoint: str,
    raw: Any,
    moto_process: MotoProcess,
    fifo: Fifo,
    tmp_path: Path,
    wait_until: WaitUntil,
) -> None:
    """S3 stopped mid-part: the put fails within the deadlines, saying which request stalled
    and that the upload could not be aborted (naming it); once S3 answers again, the next
    request aborts it, and puts work again."""
    store = S3ArtifactStore(
        f"s3://{BUCKET}/run", endpoint_url=endpoint, part_size=BIG_PART, concurrency=1, **OPTIONS
    )
    async with store:
        put = await streaming_put(store, fifo, BIG_PART)
        await wait_until(lambda: parts_stored(raw), timeout=30)
        (upload,) = await uploads_in_progress(raw)
        moto_process.stop()
        await fifo.feed(os.urandom(BIG_PART // 2))
        fifo.close()

        error, elapsed = await failure_of(put)
        assert elapsed < BOUND
        assert "did not answer upload_part" in str(error) and endpoint in str(error)
        assert f"s3://{BUCKET}/run/ckpt.bin" in str(error)
        assert f"multipart upload {upload['UploadId']!r}" in notes(error)
        assert "could not be aborted" in notes(error)
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing of it still running

        moto_process.resume()
        assert await store.list() == []
        assert await uploads_in_progress(raw) == []
        assert await objects(raw) == []
        await works_again(store, tmp_path)
        assert await uploads_in_progress(raw) == []


async def test_stall_at_the_start_of_a_multipart_upload_leaves_no_upload_behind(
    endpoint: str,
    raw: Any,
    moto_process: MotoProcess,
    fifo: Fifo,
    tmp_path: Path,
    wait_until: WaitUntil,
) -> None:
    """S3 stopped as a multipart upload starts: the put fails within the deadline; the upload
    S3 starts on resuming, from the request it was sent while stopped, is found and aborted
    before the next request."""
    store = S3ArtifactStore(
        f"s3://{BUCKET}/run", endpoint_url=endpoint, part_size=MIN_PART_SIZE, **OPTIONS
    )
    async with store:
        # More than a pipe holds: this returns once the put reads, past its listing of uploads.
        put = await streaming_put(store, fifo, MiB)
        moto_process.stop()
        await fifo.feed(os.urandom(MIN_PART_SIZE - MiB))  # the rest of a part: the upload starts
        fifo.close()

        error, elapsed = await failure_of(put)
        assert elapsed < BOUND
        assert "did not answer create_multipart_upload" in str(error)
        assert "could not be looked for" in notes(error)

        moto_process.resume()
        # What S3 was sent while stopped, it works through now: the upload appears after all.
        await wait_until(lambda: uploads_in_progress(raw), timeout=30)
        assert await store.list() == []
        assert await uploads_in_progress(raw) == []
        await works_again(store, tmp_path)


async def test_stall_mid_download_fails_in_bounded_time(
    endpoint: str, raw: Any, moto_process: MotoProcess, tmp_path: Path
) -> None:
    """S3 stopped while a download streams: the read fails within the deadline, naming it;
    after S3 resumes the download works."""
    data = os.urandom(48 * MiB)  # more than the socket buffers hold
    await raw.put_object(Bucket=BUCKET, Key="run/big.bin", Body=data)
    async with S3ArtifactStore(f"s3://{BUCKET}/run", endpoint_url=endpoint, **OPTIONS) as store:
        chunks = store.open("big.bin")
        await anext(chunks)
        moto_process.stop()

        async def read_the_rest() -> None:
            async for _ in chunks:
                pass

        error, elapsed = await failure_of(read_the_rest())
        assert elapsed < BOUND
        assert "did not answer a read of the get_object body" in str(error)
        await chunks.aclose()

        moto_process.resume()
        got = await store.get_file("big.bin", tmp_path / "back.bin")
        assert got.sha256 == hashlib.sha256(data).hexdigest()


async def test_every_request_has_a_deadline(
    endpoint: str, raw: Any, moto_process: MotoProcess, tmp_path: Path
) -> None:
    """With S3 stopped, a small put, a listing, an open and a delete each fail within the
    deadline, naming the request; they work again once S3 resumes."""
    await raw.put_object(Bucket=BUCKET, Key="run/old.txt", Body=b"old")
    async with S3ArtifactStore(f"s3://{BUCKET}/run", endpoint_url=endpoint, **OPTIONS) as store:
        moto_process.stop()
        for request, work in [
            ("put_object", store.put_bytes(b"x", "a.txt")),
            ("list_objects_v2", store.list()),
            ("get_object", anext(store.open("old.txt"))),
            ("list_objects_v2", store.delete("old.txt")),
        ]:
            error, elapsed = await failure_of(work)
            assert elapsed < BOUND
            assert f"did not answer {request}" in str(error)
        moto_process.resume()
        await store.put_bytes(b"x", "a.txt")
        assert await store.list() == [
            ArtifactEntry("a.txt", False, 1),
            ArtifactEntry("old.txt", False, 3),
        ]
        assert b"".join([c async for c in store.open("old.txt")]) == b"old"
        await store.delete("old.txt")
        await works_again(store, tmp_path)


async def test_killed_endpoint_mid_upload_fails_fast_and_a_new_one_is_used(
    endpoint: str,
    raw: Any,
    moto_process: MotoProcess,
    fifo: Fifo,
    tmp_path: Path,
    wait_until: WaitUntil,
    botocore_loader: Any,
) -> None:
    """S3 killed mid-upload: the put fails at once, saying the upload could not be aborted;
    an S3 started again at the same address serves the same store."""
    store = S3ArtifactStore(
        f"s3://{BUCKET}/run", endpoint_url=endpoint, part_size=MIN_PART_SIZE, **OPTIONS
    )
    async with store:
        put = await streaming_put(store, fifo, MIN_PART_SIZE)
        await wait_until(lambda: parts_stored(raw), timeout=30)
        await moto_process.kill()
        await fifo.feed(os.urandom(MIN_PART_SIZE))
        fifo.close()

        error, elapsed = await failure_of(put)
        assert elapsed < BOUND
        assert "could not be aborted" in notes(error)

        # moto keeps everything in memory: the new one starts empty, bucket and all.
        await moto_process.start(port=moto_process.port)
        async with raw_s3_client(endpoint, botocore_loader) as fresh:
            await fresh.create_bucket(Bucket=BUCKET)
            await works_again(store, tmp_path)
            assert await uploads_in_progress(fresh) == []
