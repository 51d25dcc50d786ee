"""The mlflow-artifacts proxy over raw HTTP: upload, download, list, delete, MLflow's shapes
and headers, path traversal, multipart and the --no-serve-artifacts answer."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.server.conftest import app_config
from tracker.server import create_app
from tracker.server.app import IN_FLIGHT

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MPU = "/api/2.0/mlflow-artifacts/mpu"
Client = TestClient[Any, Any]
INVALID_PATH = {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid path"}

# Paths that must never reach the store, sent raw (aiohttp keeps them as written).
TRAVERSALS = [
    "../x", "a/../../x", "..%2f..%2fetc/passwd", "%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e%252fetc", "//etc/passwd", "a%5c..%5cb", "a#b", "a%00b", "C:/Windows",
]  # fmt: skip


async def put(http: Client, path: str, data: bytes, status: int = 200) -> None:
    # A BytesIO body: aiohttp warns that a large raw bytes body is sent from the loop.
    response = await http.put(f"{ARTIFACTS}/{path}", data=io.BytesIO(data))
    assert response.status == status, await response.text()


async def test_roundtrip_in_the_destination(http: Client, tmp_path: Path) -> None:
    """A PUT lands under the destination at its path; GET streams it back with MLflow's
    headers; the listing has MLflow's exact shape; DELETE removes it (and again is fine)."""
    payload = secrets.token_bytes((3 << 20) + 17)
    await put(http, "1/run/artifacts/dir/big.bin", payload)
    await put(http, "1/run/artifacts/a.txt", b"x")
    assert (tmp_path / "artifacts" / "1/run/artifacts/dir/big.bin").read_bytes() == payload
    response = await http.get(f"{ARTIFACTS}/1/run/artifacts/dir/big.bin")
    assert response.status == 200 and await response.read() == payload
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"] == "attachment; filename=big.bin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    listing = await http.get(ARTIFACTS, params={"path": "1/run/artifacts"})
    assert await listing.json() == {"files": [
        {"path": "a.txt", "is_dir": False, "file_size": 1}, {"path": "dir", "is_dir": True},
    ]}  # fmt: skip
    assert await (await http.get(ARTIFACTS, params={"path": "nowhere"})).json() == {}
    root = await (await http.get(ARTIFACTS)).json()
    assert root == {"files": [{"path": "1", "is_dir": True}]}
    for _ in range(2):
        response = await http.delete(f"{ARTIFACTS}/1/run/artifacts/a.txt")
        assert response.status == 200 and await response.json() == {}
    assert not (tmp_path / "artifacts" / "1/run/artifacts/a.txt").exists()


async def test_served_types(http: Client) -> None:
    """Text-like files are served as text/plain whatever the uploader claimed, others by
    extension; non-ASCII names get an RFC 5987 filename* beside an ASCII fallback."""
    cases = {"log.txt": "text/plain", "MLmodel": "text/plain", "conf.yaml": "text/plain",
             "page.html": "text/html", "pic.png": "image/png", "blob": "application/octet-stream"}  # fmt: skip
    for name, expected in cases.items():
        response = await http.put(f"{ARTIFACTS}/t/{name}", data=b"<b>x</b>",
                                  headers={"Content-Type": "text/html"})  # fmt: skip
        assert response.status == 200
        got = await http.get(f"{ARTIFACTS}/t/{name}")
        assert got.headers["Content-Type"].split(";")[0] == expected, name
    await put(http, "t/résumé.txt", b"cv")
    got = await http.get(f"{ARTIFACTS}/t/résumé.txt")
    assert got.headers["Content-Disposition"] == (
        "attachment; filename=resume.txt; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"
    )


async def test_missing_file_is_404(http: Client) -> None:
    """Downloading nothing is 404 RESOURCE_DOES_NOT_EXIST, in MLflow's format."""
    response = await http.get(f"{ARTIFACTS}/1/none.txt")
    assert response.status == 404
    assert (await response.json())["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def files_holding(root: Path, data: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


async def raw_request(
    http: Client, method: str, target: str, body: bytes = b""
) -> tuple[int, bytes]:
    """Send `target` exactly as written (HTTP clients would normalise `..` and cut `#`)."""
    reader, writer = await asyncio.open_connection(http.host, http.port)
    try:
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        async with asyncio.timeout(30):
            reply = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_path_traversal_is_exactly_invalid_path(
    http: Client, tmp_path: Path, path: str
) -> None:
    """Every route that takes a path answers a traversal attempt with exactly MLflow's
    400 {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid path"}, and writes
    nothing."""
    requests = [
        ("PUT", f"{ARTIFACTS}/{path}"),
        ("GET", f"{ARTIFACTS}/{path}"),
        ("DELETE", f"{ARTIFACTS}/{path}"),
        ("POST", f"{MPU}/create/{path}"),
        ("GET", f"{ARTIFACTS}?path={path}"),
        ("GET", f"/api/2.0/mlflow/artifacts/list?run_id=r&path={path}"),
    ]
    for method, target in requests:
        status, payload = await raw_request(http, method, target, b"evil")
        assert status == 400, (method, target, payload)
        assert json.loads(payload) == INVALID_PATH, (method, target)
    assert await asyncio.to_thread(files_holding, tmp_path, b"evil") == []


async def test_multipart_is_mlflows_not_implemented(http: Client) -> None:
    """create/complete/abort answer MLflow's own 501 (its clients then fall back to a PUT),
    after checking the path and the body."""
    for action, body in [("create", {"path": "big.bin", "num_parts": 2}),
                         ("complete", {"path": "big.bin", "upload_id": "u", "parts": []}),
                         ("abort", {"path": "big.bin", "upload_id": "u"})]:  # fmt: skip
        response = await http.post(f"{MPU}/{action}/1/run/artifacts", json=body)
        assert response.status == 501
        assert await response.json() == {
            "error_code": "NOT_IMPLEMENTED",
            "message": "Multipart upload is not supported for the current artifact repository",
        }
    response = await http.post(f"{MPU}/create/1/run/artifacts", json={})
    assert response.status == 400
    assert "'path'" in (await response.json())["message"]


async def test_tracking_list_for_a_proxied_run(http: Client) -> None:
    """artifacts/list on a run with an mlflow-artifacts: root lists the destination, with
    paths relative to the run and the run's root_uri."""
    created = await http.post("/api/2.0/mlflow/runs/create", json={"experiment_id": "0"})
    info = (await created.json())["run"]["info"]
    prefix = f"0/{info['run_id']}/artifacts"
    await put(http, f"{prefix}/model/w.bin", b"123")
    await put(http, f"{prefix}/top.txt", b"1")
    params = {"run_id": info["run_id"]}
    listing = await (await http.get("/api/2.0/mlflow/artifacts/list", params=params)).json()
    assert listing == {"root_uri": info["artifact_uri"], "files": [
        {"path": "model", "is_dir": True}, {"path": "top.txt", "is_dir": False, "file_size": 1},
    ]}  # fmt: skip
    inner = await http.get("/api/2.0/mlflow/artifacts/list", params={**params, "path": "model"})
    assert (await inner.json())["files"] == [
        {"path": "model/w.bin", "is_dir": False, "file_size": 3}
    ]


async def test_without_serving_artifacts(tmp_path: Path) -> None:
    """With --no-serve-artifacts the proxy answers MLflow's 503 text, and new experiments keep
    their artifacts in the store's own root instead of mlflow-artifacts:."""
    app = create_app(app_config(tmp_path, serve_artifacts=False))
    async with TestClient(TestServer(app)) as http:
        response = await http.put(f"{ARTIFACTS}/a.txt", data=b"x")
        assert response.status == 503
        assert "--no-serve-artifacts" in await response.text()
        created = await http.post("/api/2.0/mlflow/experiments/create", json={"name": "local"})
        exp_id = (await created.json())["experiment_id"]
        got = await http.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": exp_id})
        location = (await got.json())["experiment"]["artifact_location"]
        assert location.startswith("file://") and location.endswith(f"/{exp_id}")


async def test_explicit_default_artifact_root(tmp_path: Path) -> None:
    """--default-artifact-root wins over the proxy root for new experiments and their runs."""
    root = (tmp_path / "shared").as_uri()
    app = create_app(app_config(tmp_path, default_artifact_root=root))
    async with TestClient(TestServer(app)) as http:
        created = await http.post("/api/2.0/mlflow/experiments/create", json={"name": "x"})
        exp_id = (await created.json())["experiment_id"]
        run = await http.post("/api/2.0/mlflow/runs/create", json={"experiment_id": exp_id})
        uri = (await run.json())["run"]["info"]["artifact_uri"]
        assert uri.startswith(f"{root}/{exp_id}/") and uri.endswith("/artifacts")


async def test_upload_cut_off_stores_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that disconnects mid-upload leaves nothing in the destination and no spooled
    file behind, is not logged as a server error, and the server goes on serving."""
    spool = tmp_path / "spool"
    spool.mkdir()
    app = create_app(app_config(tmp_path, spool_dir=str(spool)))
    async with TestClient(TestServer(app)) as http:
        _, writer = await asyncio.open_connection(http.host, http.port)
        writer.write(
            f"PUT {ARTIFACTS}/1/cut.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
            .encode() + b"a" * 1000
        )  # fmt: skip
        await writer.drain()
        in_flight = app[IN_FLIGHT]
        async with asyncio.timeout(30):
            await in_flight.busy.wait()
            writer.close()
            await writer.wait_closed()
            await in_flight.idle.wait()
        assert not (tmp_path / "artifacts" / "1" / "cut.bin").exists()
        assert await asyncio.to_thread(lambda: list(spool.iterdir())) == []
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        await put(http, "1/after.bin", b"ok")


async def test_stalled_upload_meets_its_deadline(tmp_path: Path) -> None:
    """An upload that stops sending is answered 504 DEADLINE_EXCEEDED after the request
    timeout, and stores nothing."""
    app = create_app(app_config(tmp_path, request_timeout=0.5))
    async with TestClient(TestServer(app)) as http:
        reader, writer = await asyncio.open_connection(http.host, http.port)
        try:
            writer.write(
                f"PUT {ARTIFACTS}/1/stalled.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n"
                "\r\n".encode() + b"a" * 100
            )  # fmt: skip
            await writer.drain()
            async with asyncio.timeout(30):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
        finally:
            writer.close()
            await writer.wait_closed()
        assert head.startswith(b"HTTP/1.1 504")
        assert json.loads(body)["error_code"] == "DEADLINE_EXCEEDED"
        assert not (tmp_path / "artifacts" / "1" / "stalled.bin").exists()
