"""What only the S3 store does: multipart, key prefixes, configuration, and real failures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import socket
import sys
import threading
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.artifacts.helpers import TcpProxy
from tracker.artifacts import (
    ArtifactEntry,
    ArtifactLocationError,
    ArtifactNotFoundError,
    ArtifactPermissionError,
    ArtifactUnavailableError,
    artifact_store_for_uri,
)
from tracker.artifacts.s3 import MIN_PART_SIZE, S3ArtifactStore
from tracker.errors import InvalidInputError

MiB = 1 << 20
WaitUntil = Callable[..., Awaitable[None]]
REPO_ROOT = Path(__file__).resolve().parents[2]


def write_random_file(path: Path, size: int, seed: int = 0) -> str:
    """Write `size` pseudo-random bytes a MiB at a time; return their SHA-256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        for offset in range(0, size, MiB):
            chunk = rng.randbytes(min(MiB, size - offset))
            digest.update(chunk)
            file.write(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


async def multipart_uploads(s3_client: Any, bucket: str) -> list[dict[str, Any]]:
    response = await s3_client.list_multipart_uploads(Bucket=bucket)
    uploads: list[dict[str, Any]] = response.get("Uploads", [])
    return uploads


async def object_keys(s3_client: Any, bucket: str) -> list[str]:
    response = await s3_client.list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in response.get("Contents", [])]


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def set_moto_auth(endpoint: str, enforced: bool) -> None:
    """Turn moto's IAM checks on (every request) or off, through its own admin API."""
    body = b"0" if enforced else b"inf"
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=body,
        method="POST",
        headers={"Content-Type": "text/plain"},  # not a form, or the body is parsed away
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


# -- multipart uploads -----------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_multipart_upload_keeps_parts_in_flight_up_to_concurrency(
    proxy: TcpProxy, bucket: str, s3_client: Any, tmp_path: Path, concurrency: int
) -> None:
    """A 23 MiB file goes up as five 5 MiB parts, `concurrency` at once, and comes back intact."""
    endpoint = await proxy.start()
    source = tmp_path / "big.json"
    expected = write_random_file(source, 23 * MiB)
    store = S3ArtifactStore(
        f"s3://{bucket}/run/artifacts",
        endpoint_url=endpoint,
        part_size=MIN_PART_SIZE,
        concurrency=concurrency,
    )
    async with store:
        info = await store.put_file(source, "model/big.json")
        assert (info.size, info.sha256) == (23 * MiB, expected)
        # Each part in flight has its own connection; idle ones are reused.
        if concurrency == 1:
            assert proxy.peak_connections == 1
        else:
            assert 2 <= proxy.peak_connections <= concurrency

        head = await s3_client.head_object(Bucket=bucket, Key="run/artifacts/model/big.json")
        assert head["ContentLength"] == 23 * MiB
        assert head["ETag"].strip('"').endswith("-5")  # S3's mark of a 5-part upload
        assert head["ContentType"] == "application/json"

        fetched = await store.get_file("model/big.json", tmp_path / "back.json")
        assert fetched.sha256 == expected == sha256_of(tmp_path / "back.json")
    assert await multipart_uploads(s3_client, bucket) == []


async def test_exact_multiple_of_part_size_round_trips(
    moto_endpoint: str, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    """A file of exactly two parts uploads as two parts, with no empty third one."""
    source = tmp_path / "two-parts.bin"
    expected = write_random_file(source, 2 * MIN_PART_SIZE)
    async with S3ArtifactStore(
        f"s3://{bucket}", endpoint_url=moto_endpoint, part_size=MIN_PART_SIZE
    ) as store:
        await store.put_file(source, "two-parts.bin")
        head = await s3_client.head_object(Bucket=bucket, Key="two-parts.bin")
        assert head["ETag"].strip('"').endswith("-2")
        fetched = await store.get_file("two-parts.bin", tmp_path / "back.bin")
    assert fetched.sha256 == expected


async def test_put_bytes_larger_than_a_part_uses_multipart(
    moto_endpoint: str, bucket: str, s3_client: Any
) -> None:
    """In-memory data bigger than a part is uploaded in parts too."""
    data = random.Random(1).randbytes(11 * MiB)
    async with S3ArtifactStore(
        f"s3://{bucket}", endpoint_url=moto_endpoint, part_size=MIN_PART_SIZE
    ) as store:
        info = await store.put_bytes(data, "blob.bin")
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        head = await s3_client.head_object(Bucket=bucket, Key="blob.bin")
        assert head["ETag"].strip('"').endswith("-3")
        assert b"".join([chunk async for chunk in store.open("blob.bin")]) == data


@pytest.mark.slow
async def test_256_mib_file_round_trips_with_bounded_memory(
    moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    """256 MiB goes up in 8 MiB parts, 4 at a time, and back intact, in about 4 parts' memory."""
    size, part_size, concurrency = 256 * MiB, 8 * MiB, 4
    source, back = tmp_path / "big.bin", tmp_path / "back.bin"
    expected = write_random_file(source, size, seed=256)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("s3_memory_probe.py")),
        f"--endpoint={moto_endpoint}",
        f"--uri=s3://{bucket}/memory",
        f"--src={source}",
        f"--dst={back}",
        f"--part-size={part_size}",
        f"--concurrency={concurrency}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])},
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    result = json.loads(out)
    print(result)  # figures for whoever reads the log with -s

    assert result["put_size"] == result["get_size"] == size
    assert result["put_sha256"] == result["get_sha256"] == expected == sha256_of(back)
    source.unlink()  # pytest keeps the last few tmp_paths; half a GiB each is too much
    back.unlink()
    # The parts in flight (4 x 8 MiB = 32 MiB), with room for small buffers but not for a
    # second copy of each part.
    assert result["put_peak_bytes"] < 1.5 * concurrency * part_size
    assert result["get_peak_bytes"] < 16 * MiB
    assert result["rss_growth_bytes"] < size // 3


# -- where objects go ------------------------------------------------------------------------


async def test_keys_live_under_the_uri_prefix_only(
    moto_endpoint: str, bucket: str, s3_client: Any
) -> None:
    """Artifacts land under the URI's prefix, and neighbours of that prefix are invisible."""
    await s3_client.put_object(Bucket=bucket, Key="exp/run/artifactsX/other.txt", Body=b"o")
    await s3_client.put_object(Bucket=bucket, Key="exp/outside.txt", Body=b"o")
    async with S3ArtifactStore(
        f"s3://{bucket}/exp/run/artifacts/", endpoint_url=moto_endpoint
    ) as store:
        await store.put_bytes(b"mine", "a.txt")
        assert await store.list() == [ArtifactEntry("a.txt", False, 4)]
        await store.delete("a.txt")
    assert sorted(await object_keys(s3_client, bucket)) == [
        "exp/outside.txt",
        "exp/run/artifactsX/other.txt",
    ]


async def test_store_at_bucket_root_works(moto_endpoint: str, bucket: str, s3_client: Any) -> None:
    """`s3://bucket` with no prefix stores keys at the bucket's top level."""
    async with S3ArtifactStore(f"s3://{bucket}", endpoint_url=moto_endpoint) as store:
        await store.put_bytes(b"x", "top/a.txt")
        assert await store.list() == [ArtifactEntry("top", True)]
    assert await object_keys(s3_client, bucket) == ["top/a.txt"]


async def test_directory_markers_made_by_other_tools_are_skipped(
    moto_endpoint: str, bucket: str, s3_client: Any
) -> None:
    """An empty `dir/` marker object (as consoles create) is not listed as a file."""
    await s3_client.put_object(Bucket=bucket, Key="p/dir/", Body=b"")
    await s3_client.put_object(Bucket=bucket, Key="p/dir/a.txt", Body=b"a")
    async with S3ArtifactStore(f"s3://{bucket}/p", endpoint_url=moto_endpoint) as store:
        assert await store.list("dir") == [ArtifactEntry("dir/a.txt", False, 1)]


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"])
async def test_endpoint_comes_from_the_environment(
    moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """With no endpoint_url argument, MLflow's and AWS's endpoint variables are honoured."""
    monkeypatch.setenv(variable, moto_endpoint)
    async with S3ArtifactStore(f"s3://{bucket}/p") as store:
        assert store.endpoint_url == moto_endpoint
        await store.put_bytes(b"x", "a.txt")
        assert await store.list() == [ArtifactEntry("a.txt", False, 1)]


async def test_uri_factory_passes_options_to_the_s3_store(moto_endpoint: str, bucket: str) -> None:
    """`artifact_store_for_uri('s3://...')` builds an S3ArtifactStore with the given options."""
    store = artifact_store_for_uri(
        f"s3://{bucket}/x", endpoint_url=moto_endpoint, part_size=6 * MiB, concurrency=2
    )
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix, store.part_size, store.concurrency) == (
        bucket,
        "x",
        6 * MiB,
        2,
    )
    async with store:
        await store.put_bytes(b"x", "a.txt")


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"part_size": MIN_PART_SIZE - 1}, "part_size must be between"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"request_timeout": 0}, "request_timeout must be a positive number of seconds"),
        ({"abort_attempts": 0}, "abort_attempts must be at least 1"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], complaint: str) -> None:
    """Parts under S3's 5 MiB minimum, zero concurrency, attempts or deadline are refused."""
    with pytest.raises(InvalidInputError, match=complaint):
        S3ArtifactStore("s3://bucket/p", **kwargs)


def test_non_s3_uri_is_refused() -> None:
    """S3ArtifactStore given a local path says it needs an s3:// URI."""
    with pytest.raises(InvalidInputError, match="needs an 's3://bucket/prefix' URI"):
        S3ArtifactStore("/tmp/artifacts")


# -- failures, as they really happen --------------------------------------------------------


async def test_missing_bucket_is_a_location_error(moto_endpoint: str) -> None:
    """A bucket that does not exist gives ArtifactLocationError naming it, for every method."""
    async with S3ArtifactStore("s3://no-such-bucket-here/p", endpoint_url=moto_endpoint) as store:
        with pytest.raises(ArtifactLocationError, match="'no-such-bucket-here' does not exist"):
            await store.put_bytes(b"x", "a.txt")
        with pytest.raises(ArtifactLocationError, match="create it or fix the artifact URI"):
            await store.list()
        with pytest.raises(ArtifactLocationError):
            await anext(store.open("a.txt"))
        with pytest.raises(ArtifactLocationError):
            await store.delete("a.txt")


async def test_missing_bucket_fails_a_multipart_upload_cleanly(
    moto_endpoint: str, tmp_path: Path
) -> None:
    """A large upload to a missing bucket fails with ArtifactLocationError, not a traceback soup."""
    source = tmp_path / "big.bin"
    write_random_file(source, 6 * MiB)
    async with S3ArtifactStore(
        "s3://no-such-bucket-here/p", endpoint_url=moto_endpoint, part_size=MIN_PART_SIZE
    ) as store:
        with pytest.raises(ArtifactLocationError, match="does not exist"):
            await store.put_file(source, "big.bin")


async def test_unknown_access_key_is_a_permission_error(moto_endpoint: str, bucket: str) -> None:
    """With IAM checks on, a key moto does not know gives ArtifactPermissionError with a fix."""
    async with S3ArtifactStore(f"s3://{bucket}/p", endpoint_url=moto_endpoint) as store:
        await asyncio.to_thread(set_moto_auth, moto_endpoint, True)
        try:
            with pytest.raises(ArtifactPermissionError, match="InvalidAccessKeyId") as caught:
                await store.put_bytes(b"x", "a.txt")
            with pytest.raises(ArtifactPermissionError):
                await store.list()
        finally:
            await asyncio.to_thread(set_moto_auth, moto_endpoint, False)
    assert "AWS_ACCESS_KEY_ID" in str(caught.value)


async def test_no_credentials_at_all_is_a_permission_error(
    moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no key in the environment or config files, the error says which variables to set."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    async with S3ArtifactStore(f"s3://{bucket}/p", endpoint_url=moto_endpoint) as store:
        with pytest.raises(ArtifactPermissionError, match="No usable AWS credentials") as caught:
            await store.put_bytes(b"x", "a.txt")
    assert "AWS_ACCESS_KEY_ID" in str(caught.value)


async def test_nothing_listening_is_unavailable(bucket: str) -> None:
    """An endpoint where nothing listens gives ArtifactUnavailableError naming the endpoint."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    async with S3ArtifactStore(f"s3://{bucket}/p", endpoint_url=endpoint, max_attempts=1) as store:
        with pytest.raises(ArtifactUnavailableError, match="check the endpoint URL") as caught:
            await store.put_bytes(b"x", "a.txt")
    assert endpoint in str(caught.value)


async def test_server_gone_mid_upload_says_what_is_left_and_aborts_it_once_back(
    proxy: TcpProxy, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    """The server vanishing mid-multipart gives ArtifactUnavailableError naming the upload it
    could not abort; once the server is back, the store's next request aborts it."""
    endpoint = await proxy.start()
    source = tmp_path / "big.bin"
    expected = write_random_file(source, 16 * MiB)
    proxy.cut_at, proxy.stop_on_cut = [7 * MiB], True  # during the second part
    store = S3ArtifactStore(
        f"s3://{bucket}/p",
        endpoint_url=endpoint,
        part_size=MIN_PART_SIZE,
        concurrency=2,
        max_attempts=1,
        abort_attempts=2,
    )
    async with store:
        with pytest.raises(ArtifactUnavailableError, match=endpoint) as caught:
            await store.put_file(source, "big.bin")
        assert proxy.cuts == 1

        # The abort could not reach the server either: the error says so and names the upload.
        uploads = await multipart_uploads(s3_client, bucket)
        assert [upload["Key"] for upload in uploads] == ["p/big.bin"]
        notes = "\n".join(getattr(caught.value, "__notes__", []))
        assert f"multipart upload {uploads[0]['UploadId']!r}" in notes
        assert "could not be aborted" in notes
        assert await object_keys(s3_client, bucket) == []

        await proxy.start(port=int(endpoint.rsplit(":", 1)[1]))  # the server is back
        info = await store.put_file(source, "big.bin")
        assert info.sha256 == expected
        # The old upload is aborted first; the new one of the same key is left to complete.
        assert await multipart_uploads(s3_client, bucket) == []
        head = await s3_client.head_object(Bucket=bucket, Key="p/big.bin")
        assert head["ContentLength"] == 16 * MiB


async def test_dropped_connection_mid_upload_aborts_the_upload(
    proxy: TcpProxy, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    """A part whose connection keeps dropping (no retries left) fails; the upload is aborted."""
    endpoint = await proxy.start()
    source = tmp_path / "big.bin"
    write_random_file(source, 16 * MiB)
    # Cut during the second part, and again during the retry aiohttp itself makes of an
    # idempotent PUT on a dropped keep-alive connection; the server stays up.
    proxy.cut_at = [7 * MiB, 8 * MiB]
    store = S3ArtifactStore(
        f"s3://{bucket}/p",
        endpoint_url=endpoint,
        part_size=MIN_PART_SIZE,
        concurrency=1,
        max_attempts=1,
    )
    async with store:
        with pytest.raises(
            ArtifactUnavailableError, match="Lost or could not open the connection"
        ) as caught:
            await store.put_file(source, "big.bin")
        with pytest.raises(ArtifactNotFoundError):
            await anext(store.open("big.bin"))
    assert "The multipart upload" in caught.value.__notes__[-1]
    assert caught.value.__notes__[-1].endswith("was aborted")
    assert proxy.cuts == 2
    assert await multipart_uploads(s3_client, bucket) == []
    assert await object_keys(s3_client, bucket) == []


async def test_dropped_connection_is_retried(
    proxy: TcpProxy, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    """With retries on (the default), a connection reset mid-part is survived."""
    endpoint = await proxy.start()
    source = tmp_path / "big.bin"
    expected = write_random_file(source, 16 * MiB)
    proxy.cut_at = [7 * MiB]
    async with S3ArtifactStore(
        f"s3://{bucket}/p", endpoint_url=endpoint, part_size=MIN_PART_SIZE
    ) as store:
        info = await store.put_file(source, "big.bin")
        fetched = await store.get_file("big.bin", tmp_path / "back.bin")
    assert proxy.cuts == 1
    assert info.sha256 == fetched.sha256 == expected
    assert await multipart_uploads(s3_client, bucket) == []


async def test_cancelled_upload_is_aborted(
    moto_endpoint: str, bucket: str, s3_client: Any, tmp_path: Path, wait_until: WaitUntil
) -> None:
    """Cancelling a put mid-multipart aborts the upload: no parts and no object remain."""
    fifo = tmp_path / "slow-source"
    os.mkfifo(fifo)
    release = threading.Event()

    def feed() -> None:
        # Two parts and a bit, then the pipe stays open and silent until the test lets go.
        with open(fifo, "wb") as pipe:
            pipe.write(random.Random(2).randbytes(2 * MIN_PART_SIZE + MiB))
            pipe.flush()
            release.wait(timeout=30)

    async def two_parts_stored() -> bool:
        uploads = await multipart_uploads(s3_client, bucket)
        if not uploads:
            return False
        parts = await s3_client.list_parts(
            Bucket=bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
        )
        return len(parts.get("Parts", [])) == 2

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        async with S3ArtifactStore(
            f"s3://{bucket}/p", endpoint_url=moto_endpoint, part_size=MIN_PART_SIZE
        ) as store:
            put = asyncio.create_task(store.put_file(fifo, "streamed.bin"))
            await wait_until(two_parts_stored)
            put.cancel()
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await put
    finally:
        release.set()
        feeder.join()
    assert await multipart_uploads(s3_client, bucket) == []
    assert await object_keys(s3_client, bucket) == []
