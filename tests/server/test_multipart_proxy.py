"""MLflow's multipart upload endpoints of the artifact proxy, on an s3:// destination (moto)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer

from tests.artifacts.conftest import FAKE_AWS_ENV, UNSET_AWS_ENV
from tests.artifacts.helpers import raw_s3_client
from tests.server.conftest import app_config, server_env, start_server
from tests.server.test_artifacts_proxy import TRAVERSALS, raw_request
from tracker.server import create_app

MPU = "/api/2.0/mlflow-artifacts/mpu"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MiB = 1 << 20
Client = TestClient[Any, Any]
# Bounds every request the test itself makes to moto's presigned URLs or the server.
HTTP_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's threaded S3 server on a free loopback port, with fake credentials in the
    environment (and no endpoint or profile that would steer clients elsewhere)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"moto[server] is not installed ({exc}): pip install 'tracker[dev]'")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)
        for name in UNSET_AWS_ENV:
            patch.delenv(name, raising=False)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture
async def s3(moto_endpoint: str) -> AsyncIterator[Any]:
    """A raw S3 client on moto, to make buckets and look at what the proxy did."""
    async with raw_s3_client(moto_endpoint, _loader()) as client:
        yield client


def _loader() -> Any:
    from aiobotocore.session import get_session

    return get_session().get_component("data_loader")


@pytest.fixture
async def bucket(s3: Any) -> str:
    name = f"mpu-{uuid.uuid4().hex[:20]}"
    await s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def http(
    tmp_path: Path, moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Client]:
    """The app in-process with `s3://<bucket>/dest` as its artifacts destination."""
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_endpoint)
    config = dataclasses.replace(app_config(tmp_path), artifacts_destination=f"s3://{bucket}/dest")
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def create(http: Client, directory: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"{MPU}/create/{directory}", json=body)
    assert response.status == 200, await response.text()
    created: dict[str, Any] = await response.json()
    return created


def put_part(url: str, data: bytes) -> str:
    """PUT one part to its presigned URL, as MLflow's client does; the ETag S3 answered."""
    response = requests.put(url, data=data, timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    return response.headers["ETag"]


async def uploads(s3: Any, bucket: str) -> list[tuple[str, str]]:
    listed = await s3.list_multipart_uploads(Bucket=bucket)
    return [(u["Key"], u["UploadId"]) for u in listed.get("Uploads", ())]


async def test_create_put_parts_complete_then_download(http: Client, s3: Any, bucket: str) -> None:
    """create presigns one URL per part under the URL's directory and the local file's name;
    parts PUT there and completed with their ETags make the object, served by the proxy."""
    chunks = [secrets.token_bytes(5 * MiB), secrets.token_bytes(5 * MiB), b"tail" * 1000]
    created = await create(
        http, "1/run/artifacts/model", {"path": "/home/me/big.bin", "num_parts": 3}
    )
    assert set(created) == {"upload_id", "credentials"}
    assert [c["part_number"] for c in created["credentials"]] == [1, 2, 3]
    assert all(set(c) == {"url", "part_number"} for c in created["credentials"])
    key = "dest/1/run/artifacts/model/big.bin"
    assert await uploads(s3, bucket) == [(key, created["upload_id"])]

    etags = [
        await asyncio.to_thread(put_part, c["url"], chunk)
        for c, chunk in zip(created["credentials"], chunks, strict=True)
    ]
    parts = [
        {"part_number": c["part_number"], "etag": etag, "url": c["url"]}
        for c, etag in zip(created["credentials"], etags, strict=True)
    ]
    body = {"path": "/home/me/big.bin", "upload_id": created["upload_id"], "parts": parts}
    response = await http.post(f"{MPU}/complete/1/run/artifacts/model", json=body)
    assert response.status == 200, await response.text()
    assert await response.json() == {}

    assert await uploads(s3, bucket) == []
    head = await s3.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # made of the three parts sent
    got = await http.get(f"{ARTIFACTS}/1/run/artifacts/model/big.bin")
    assert got.status == 200
    assert hashlib.sha256(await got.read()).digest() == hashlib.sha256(b"".join(chunks)).digest()


async def test_abort_leaves_no_upload(http: Client, s3: Any, bucket: str) -> None:
    """abort drops the upload and the part sent; aborting it again still answers {}."""
    created = await create(http, "1/run/artifacts", {"path": "big.bin", "num_parts": 2})
    await asyncio.to_thread(put_part, created["credentials"][0]["url"], b"x" * (5 * MiB))
    body = {"path": "big.bin", "upload_id": created["upload_id"]}
    for _ in range(2):
        response = await http.post(f"{MPU}/abort/1/run/artifacts", json=body)
        assert response.status == 200, await response.text()
        assert await response.json() == {}
    assert await uploads(s3, bucket) == []
    listed = await s3.list_objects_v2(Bucket=bucket)
    assert listed.get("Contents", []) == []


async def test_bad_completions_are_clear_errors(http: Client, s3: Any, bucket: str) -> None:
    """A wrong ETag is INVALID_PARAMETER_VALUE naming the fix, and leaves the upload to abort.
    (An unknown upload id is not tried: moto answers it with a 500 of its own, S3 NoSuchUpload.)"""
    created = await create(http, "1/run/artifacts", {"path": "big.bin", "num_parts": 1})
    await asyncio.to_thread(put_part, created["credentials"][0]["url"], b"abc")
    body = {"path": "big.bin", "upload_id": created["upload_id"],
            "parts": [{"part_number": 1, "etag": '"0123456789abcdef0123456789abcdef"'}]}  # fmt: skip
    response = await http.post(f"{MPU}/complete/1/run/artifacts", json=body)
    assert response.status == 400, await response.text()
    payload = await response.json()
    assert payload["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "ETag" in payload["message"]
    assert await uploads(s3, bucket) == [("dest/1/run/artifacts/big.bin", created["upload_id"])]


async def test_paths_and_bodies_are_checked(http: Client, s3: Any, bucket: str) -> None:
    """A traversal in the URL or in the file's name is MLflow's "Invalid path"; num_parts
    outside S3's 1..10000 and a missing upload_id are refused; none of them starts an upload."""
    invalid_path = {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid path"}
    for directory in TRAVERSALS:
        for action in ("create", "complete", "abort"):
            body = {"path": "big.bin", "num_parts": 1, "upload_id": "u", "parts": [{}]}
            status, payload = await raw_request(
                http, "POST", f"{MPU}/{action}/{directory}", json.dumps(body).encode()
            )
            assert status == 400, (action, directory, payload)
            assert json.loads(payload) == invalid_path, (action, directory)
    for name in ("..", "C:\\tmp\\..", "a\x00b"):
        response = await http.post(f"{MPU}/create/run", json={"path": name, "num_parts": 1})
        assert response.status == 400, name
        assert await response.json() == invalid_path, name
    response = await http.post(f"{MPU}/create/run", json={"path": "dir/", "num_parts": 1})
    assert response.status == 400
    assert "name of the file" in (await response.json())["message"]
    for num_parts in (0, 10_001):
        response = await http.post(f"{MPU}/create/run", json={"path": "a", "num_parts": num_parts})
        assert response.status == 400
        assert "num_parts" in (await response.json())["message"]
    response = await http.post(f"{MPU}/abort/run", json={"path": "a"})
    assert response.status == 400
    assert "'upload_id'" in (await response.json())["message"]
    assert await uploads(s3, bucket) == []


async def test_windows_path_keeps_the_file_name(http: Client, s3: Any, bucket: str) -> None:
    """A Windows client's local path names the file after its last backslash."""
    created = await create(http, "run", {"path": "C:\\Users\\me\\w.bin", "num_parts": 1})
    assert await uploads(s3, bucket) == [("dest/run/w.bin", created["upload_id"])]


async def test_server_info_offers_multipart_uploads_only_on_s3(
    http: Client, tmp_path: Path
) -> None:
    """As MLflow's server: server-info says multipart uploads are on when the proxy stores on
    S3 (MLflow's client then uploads large files in parts by itself), off on a local one."""
    info = await (await http.get("/api/3.0/mlflow/server-info")).json()
    assert info["multipart_uploads_enabled"] is True
    assert info["multipart_downloads_enabled"] is False
    async with TestClient(TestServer(create_app(app_config(tmp_path / "local")))) as local:
        info = await (await local.get("/api/3.0/mlflow/server-info")).json()
    assert info["multipart_uploads_enabled"] is False


async def test_local_destination_answers_mlflows_501(tmp_path: Path) -> None:
    """On a local destination the three endpoints answer MLflow's NOT_IMPLEMENTED, on which
    its client falls back to a streamed PUT."""
    async with TestClient(TestServer(create_app(app_config(tmp_path)))) as http:
        for action, body in [("create", {"path": "big.bin", "num_parts": 2}),
                             ("complete", {"path": "big.bin", "upload_id": "u", "parts": []}),
                             ("abort", {"path": "big.bin", "upload_id": "u"})]:  # fmt: skip
            response = await http.post(f"{MPU}/{action}/1/run/artifacts", json=body)
            assert response.status == 501
            assert await response.json() == {
                "error_code": "NOT_IMPLEMENTED",
                "message": "Multipart upload is not supported for the current artifact repository",
            }


async def test_mlflow_client_uploads_in_parts(
    tmp_path: Path,
    moto_endpoint: str,
    s3: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLflow's client, told to use proxied multipart uploads, sends a 12 MiB artifact in
    three parts straight to S3 through our server's presigned URLs, and reads it back."""
    from mlflow import MlflowClient

    destination = f"s3://{bucket}/dest"
    server = await asyncio.to_thread(
        start_server,
        tmp_path,
        "--artifacts-destination",
        destination,
        env=server_env(MLFLOW_S3_ENDPOINT_URL=moto_endpoint),
    )
    try:
        monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
        monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(MiB))
        monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(5 * MiB))
        local = tmp_path / "weights.bin"
        local.write_bytes(secrets.token_bytes(12 * MiB))

        def roundtrip() -> tuple[str, str, Path]:
            client = MlflowClient(tracking_uri=server.url)
            exp_id = client.create_experiment(f"mpu-{uuid.uuid4().hex[:8]}")
            run_id = client.create_run(exp_id).info.run_id
            client.log_artifact(run_id, str(local), artifact_path="model")
            out = client.download_artifacts(run_id, "model/weights.bin", str(tmp_path / "out"))
            return exp_id, run_id, Path(out)

        # The client's own part PUTs have no timeout: bound the whole exchange instead.
        exp_id, run_id, out = await asyncio.wait_for(asyncio.to_thread(roundtrip), 300)
        assert out.read_bytes() == local.read_bytes()
        key = f"dest/{exp_id}/{run_id}/artifacts/model/weights.bin"
        head = await s3.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == 12 * MiB
        assert head["ETag"].strip('"').endswith("-3"), "not sent as a multipart upload"
        assert await uploads(s3, bucket) == []
    finally:
        assert await asyncio.to_thread(server.stop) == 0, server.log
