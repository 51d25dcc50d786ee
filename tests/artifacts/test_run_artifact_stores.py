"""RunArtifacts' stores: one S3 client per bucket whatever the runs, a bounded cache, proxied URIs."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.artifacts.helpers import Fifo
from tracker.artifacts import ArtifactEntry, ArtifactError, ArtifactInfo
from tracker.artifacts.runs import RunArtifacts
from tracker.artifacts.s3 import MIN_PART_SIZE, S3ArtifactStore
from tracker.errors import InvalidInputError

WaitUntil = Callable[..., Awaitable[None]]
MiB = 1 << 20


async def new_bucket(s3_client: Any) -> str:
    name = f"runs-{uuid.uuid4().hex[:16]}"
    await s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def client_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How many S3 clients were made: each resolves its credentials once, here through a
    credential_process that counts its runs (the AWS keys move from the environment to it)."""
    calls = tmp_path / "credential-process-calls"
    process = tmp_path / "credential-process"
    process.write_text(
        "#!/bin/sh\n"
        f"echo x >> '{calls}'\n"
        """echo '{"Version": 1, "AccessKeyId": "testing", "SecretAccessKey": "testing"}'\n"""
    )
    process.chmod(0o755)
    config = tmp_path / "aws-config"
    config.write_text(f"[profile counted]\ncredential_process = {process}\nregion = us-east-1\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_PROFILE", "counted")
    return lambda: calls.read_text().count("x") if calls.exists() else 0


async def test_one_client_serves_a_hundred_runs_of_a_bucket(
    moto_endpoint: str, bucket: str, client_count: Callable[[], int]
) -> None:
    """Uploads to 100 runs of one bucket go through one S3 client, and each lands under its
    own run."""
    recorded: list[ArtifactInfo] = []
    artifacts = RunArtifacts(endpoint_url=moto_endpoint)
    runs = [f"s3://{bucket}/1/run{i:03d}/artifacts" for i in range(100)]
    try:
        await asyncio.gather(
            *(artifacts.log_bytes(uri, b"m", "model.txt", recorded.append) for uri in runs)
        )
        assert await artifacts.list(runs[42], None) == [ArtifactEntry("model.txt", False, 1)]
    finally:
        await artifacts.aclose()
    assert client_count() == 1
    assert sorted(info.path for info in recorded) == ["model.txt"] * 100
    for uri in runs[:3]:
        probe = RunArtifacts(endpoint_url=moto_endpoint)
        try:
            assert await probe.list(uri, None) == [ArtifactEntry("model.txt", False, 1)]
        finally:
            await probe.aclose()


async def test_cache_is_bounded_and_closes_what_it_evicts(
    moto_endpoint: str, s3_client: Any, client_count: Callable[[], int]
) -> None:
    """With room for two stores, a third bucket evicts the least recently used store and
    closes it (once the operation holding it is over); a run of it gets a new client."""
    buckets = [await new_bucket(s3_client) for _ in range(3)]
    made_by_setup = client_count()
    runs = [f"s3://{name}/run/artifacts" for name in buckets]
    artifacts = RunArtifacts(max_stores=2, endpoint_url=moto_endpoint)
    try:
        async with artifacts.store(runs[0]) as held:
            await artifacts.log_bytes(runs[1], b"x", "x.txt", lambda _: None)
            await artifacts.log_bytes(runs[2], b"x", "x.txt", lambda _: None)
            # Evicted meanwhile, it stays usable for as long as it is held.
            await held.put_bytes(b"x", "x.txt")
        with pytest.raises(ArtifactError, match="closed"):
            await held.list()
        assert client_count() - made_by_setup == 3
        # The evicted store's runs still work, through a new client.
        assert await artifacts.list(runs[0], None) == [ArtifactEntry("x.txt", False, 1)]
        assert client_count() - made_by_setup == 4
    finally:
        await artifacts.aclose()


async def test_an_upload_in_flight_keeps_its_evicted_store_open(
    moto_endpoint: str, s3_client: Any, fifo: Fifo
) -> None:
    """A multipart upload in flight to a store evicted meanwhile completes, and is recorded."""
    first, second = await new_bucket(s3_client), await new_bucket(s3_client)
    recorded: list[ArtifactInfo] = []
    artifacts = RunArtifacts(max_stores=1, endpoint_url=moto_endpoint, part_size=MIN_PART_SIZE)
    try:
        upload = asyncio.create_task(
            artifacts.log_file(f"s3://{first}/run/artifacts", fifo.path, None, recorded.append)
        )
        await fifo.connect()
        await fifo.feed(os.urandom(MiB))
        await artifacts.log_bytes(f"s3://{second}/run/artifacts", b"y", "y.txt", recorded.append)
        await fifo.feed(os.urandom(MIN_PART_SIZE))
        fifo.close()
        info = await upload
    finally:
        await artifacts.aclose()
    assert info.size == MIN_PART_SIZE + MiB and info in recorded
    head = await s3_client.head_object(Bucket=first, Key=f"run/artifacts/{fifo.path.name}")
    assert head["ContentLength"] == MIN_PART_SIZE + MiB


async def test_local_runs_are_cached_within_the_bound(tmp_path: Path) -> None:
    """Many local runs work through a small cache, each in its own directory."""
    artifacts = RunArtifacts(max_stores=3)
    try:
        for i in range(10):
            await artifacts.log_bytes(str(tmp_path / f"run{i}"), b"z", "z.txt", lambda _: None)
        for i in range(10):
            assert await artifacts.list(str(tmp_path / f"run{i}"), None) == [
                ArtifactEntry("z.txt", False, 1)
            ]
    finally:
        await artifacts.aclose()
    assert sorted(os.listdir(tmp_path)) == [f"run{i}" for i in range(10)]


# -- proxied artifact URIs ----------------------------------------------------------------------


async def test_proxied_uris_resolve_against_a_local_destination(tmp_path: Path) -> None:
    """`mlflow-artifacts:/<exp>/<run>/artifacts` goes under proxy_root, as a server's
    --artifacts-destination: put, list and download."""
    destination = tmp_path / "mlartifacts"
    uri = "mlflow-artifacts:/1/abc/artifacts"
    artifacts = RunArtifacts(proxy_root=str(destination))
    try:
        await artifacts.log_bytes(uri, b"weights", "model/w.bin", lambda _: None)
        assert await artifacts.list(uri, "model") == [ArtifactEntry("model/w.bin", False, 7)]
        got = await artifacts.download(uri, "model", tmp_path / "out")
    finally:
        await artifacts.aclose()
    assert (destination / "1" / "abc" / "artifacts" / "model" / "w.bin").read_bytes() == b"weights"
    assert (got / "w.bin").read_bytes() == b"weights"


async def test_proxied_uris_resolve_against_an_s3_destination(
    moto_endpoint: str, bucket: str, s3_client: Any
) -> None:
    """With `s3://bucket/prefix` as proxy_root, proxied artifacts are objects under it."""
    artifacts = RunArtifacts(proxy_root=f"s3://{bucket}/mlartifacts", endpoint_url=moto_endpoint)
    try:
        await artifacts.log_bytes("mlflow-artifacts:/1/abc/artifacts", b"m", "m.txt", print)
    finally:
        await artifacts.aclose()
    head = await s3_client.head_object(Bucket=bucket, Key="mlartifacts/1/abc/artifacts/m.txt")
    assert head["ContentLength"] == 1


async def test_proxied_uri_without_a_destination_is_refused(tmp_path: Path) -> None:
    """Without proxy_root, a proxied URI is an ArtifactError saying a tracking server stores
    such artifacts; nothing is written anywhere."""
    artifacts = RunArtifacts()
    try:
        with pytest.raises(ArtifactError, match="stored through a tracking server"):
            await artifacts.log_bytes("mlflow-artifacts:/1/abc/artifacts", b"x", "x", print)
        with pytest.raises(ArtifactError, match="proxy_root"):
            await artifacts.list("mlflow-artifacts:/1/abc/artifacts", None)
    finally:
        await artifacts.aclose()


@pytest.mark.parametrize(
    "uri", ["mlflow-artifacts:/1/../../etc", "mlflow-artifacts:/%2e%2e/x", "mlflow-artifacts:/a#b"]
)
async def test_proxied_uris_cannot_leave_the_destination(tmp_path: Path, uri: str) -> None:
    """A proxied URI with `..` (raw or encoded) or a fragment is refused before any I/O."""
    artifacts = RunArtifacts(proxy_root=str(tmp_path / "dest"))
    try:
        with pytest.raises(InvalidInputError):
            await artifacts.log_bytes(uri, b"x", "x.txt", print)
    finally:
        await artifacts.aclose()
    assert os.listdir(tmp_path) == []


def test_bad_options_are_refused() -> None:
    """A proxied proxy_root, a zero bound or zero transfers is refused with what to fix."""
    with pytest.raises(InvalidInputError, match="is itself proxied"):
        RunArtifacts(proxy_root="mlflow-artifacts:/x")
    with pytest.raises(InvalidInputError, match="max_stores must be at least 1"):
        RunArtifacts(max_stores=0)
    with pytest.raises(InvalidInputError, match="transfers must be at least 1"):
        RunArtifacts(transfers=0)


async def test_s3_options_reach_the_s3_stores(moto_endpoint: str, bucket: str) -> None:
    """The README's artifact_options (part_size, concurrency) configure the S3 stores, and a
    bad one is refused when the first S3 store is made."""
    artifacts = RunArtifacts(endpoint_url=moto_endpoint, part_size=6 * MiB, concurrency=2)
    try:
        async with artifacts.store(f"s3://{bucket}/1/run/artifacts") as store:
            assert isinstance(store, S3ArtifactStore)
            assert (store.part_size, store.concurrency, store.prefix) == (
                6 * MiB,
                2,
                "1/run/artifacts",
            )
    finally:
        await artifacts.aclose()
    refusing = RunArtifacts(endpoint_url=moto_endpoint, concurrency=0)
    try:
        with pytest.raises(InvalidInputError, match="concurrency must be at least 1"):
            await refusing.log_bytes(f"s3://{bucket}/run", b"x", "x.txt", print)
    finally:
        await refusing.aclose()
