"""Fixtures for the artifact stores: moto's S3 server, fresh buckets, one store per backend."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.artifacts.helpers import Fifo, MotoProcess, TcpProxy, raw_s3_client
from tracker.artifacts import ArtifactStore, LocalArtifactStore

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    # moto's listing pages hold 100 keys instead of S3's 1000, so that a few hundred
    # objects are enough to make listing and deleting go through several pages.
    "MOTO_S3_DEFAULT_MAX_KEYS": "100",
}
# Anything here would steer the client away from moto or to real credentials.
UNSET_AWS_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "MLFLOW_S3_ENDPOINT_URL",
)


def _missing_backend(reason: str) -> None:
    # On a laptop a missing backend skips; in CI it must fail the run.
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Fake credentials and no stray endpoint or profile settings, for the whole session."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)
        for name in UNSET_AWS_ENV:
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def moto_endpoint(aws_env: None) -> Iterator[str]:
    """URL of moto's threaded S3 server on a free loopback port, shared by the session."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        _missing_backend(f"moto[server] is not installed ({exc}): pip install 'tracker[dev]'")
    # A port picked by the OS (older moto cannot report one it was given as 0).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
async def moto_process(aws_env: None) -> AsyncIterator[MotoProcess]:
    """A moto S3 server of this test's own, in its own process: `await moto_process.start()`."""
    created = MotoProcess()
    yield created
    await created.aclose()


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Fifo]:
    """A named pipe under tmp_path, closed after the test."""
    created = Fifo(tmp_path / "source.fifo")
    yield created
    created.close()


WaitUntil = Callable[..., Awaitable[None]]


@pytest.fixture
def wait_until() -> WaitUntil:
    """`await wait_until(condition, timeout=10)`: poll a (sync or async) condition until true."""

    async def wait(condition: Callable[[], object], timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"condition not met within {timeout} s")
            await asyncio.sleep(0.005)

    return wait


@pytest.fixture(scope="session")
def botocore_loader() -> Any:
    """botocore's service-model loader, shared so that each test's client is quick to make."""
    from aiobotocore.session import get_session

    return get_session().get_component("data_loader")


@pytest.fixture
async def s3_client(moto_endpoint: str, botocore_loader: Any) -> AsyncIterator[Any]:
    """A raw aiobotocore client on moto, to set up and inspect what the store did."""
    async with raw_s3_client(moto_endpoint, botocore_loader) as client:
        yield client


@pytest.fixture
async def bucket(s3_client: Any) -> str:
    """A fresh, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    await s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def local_store(tmp_path: Path) -> AsyncIterator[LocalArtifactStore]:
    """A LocalArtifactStore rooted at a directory that does not exist yet."""
    async with LocalArtifactStore(tmp_path / "artifacts") as created:
        yield created


@pytest.fixture
async def s3_store(moto_endpoint: str, bucket: str) -> AsyncIterator[ArtifactStore]:
    """An S3ArtifactStore under a run-like key prefix of a fresh moto bucket."""
    from tracker.artifacts.s3 import S3ArtifactStore

    async with S3ArtifactStore(
        f"s3://{bucket}/1/run-id/artifacts", endpoint_url=moto_endpoint
    ) as created:
        yield created


@pytest.fixture(params=["local", "s3"])
def artifact_store(request: pytest.FixtureRequest) -> ArtifactStore:
    """Each real backend in turn, rooted at an empty location."""
    created: ArtifactStore = request.getfixturevalue(f"{request.param}_store")
    return created


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[TcpProxy]:
    """A cuttable TCP proxy in front of moto; `await proxy.start()` gives its URL."""
    created = TcpProxy(int(moto_endpoint.rsplit(":", 1)[1]))
    yield created
    await created.aclose()
