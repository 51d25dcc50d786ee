"""Artifact store throughput: upload and download MB/s, local disk vs S3 (moto on loopback)."""

# Usage: python benchmarks/artifacts.py [--size-mb 256] [--repeat 3] [--concurrency 1,4]
#
# moto runs in its own process, so that client and server do not share one GIL; it keeps
# objects in memory, so each object is deleted after its run. MB here is 10**6 bytes.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracker.artifacts import ArtifactStore, LocalArtifactStore

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class Case:
    backend: str
    concurrency: int | None
    part_size: int | None


@dataclass(frozen=True, slots=True)
class Timing:
    upload_s: float
    download_s: float


def write_source(path: Path, size: int) -> str:
    rng = random.Random(0)
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        for offset in range(0, size, MiB):
            chunk = rng.randbytes(min(MiB, size - offset))
            digest.update(chunk)
            file.write(chunk)
    return digest.hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    """moto's S3 server in a child process on a free loopback port; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def run_once(store: ArtifactStore, source: Path, target: Path, expected: str) -> Timing:
    started = time.perf_counter()
    put = await store.put_file(source, "bench/big.bin")
    upload = time.perf_counter() - started
    started = time.perf_counter()
    got = await store.get_file("bench/big.bin", target)
    download = time.perf_counter() - started
    if not put.sha256 == got.sha256 == expected:
        raise RuntimeError(f"round trip changed the bytes: {put.sha256} {got.sha256}")
    await store.delete("bench")  # moto keeps objects in memory
    return Timing(upload, download)


async def run_case(
    case: Case, work: Path, source: Path, expected: str, repeat: int, endpoint: str | None
) -> list[Timing]:
    if case.backend == "local":
        store: ArtifactStore = LocalArtifactStore(work / "local-store")
    else:
        from tracker.artifacts.s3 import S3ArtifactStore

        assert endpoint and case.concurrency and case.part_size
        bucket = f"bench-{os.getpid()}-{case.concurrency}"
        from aiobotocore.session import get_session

        async with get_session().create_client("s3", endpoint_url=endpoint) as client:
            await client.create_bucket(Bucket=bucket)
        store = S3ArtifactStore(
            f"s3://{bucket}/artifacts",
            endpoint_url=endpoint,
            part_size=case.part_size,
            concurrency=case.concurrency,
        )
    async with store:
        await store.list()  # connect before timing
        return [
            await run_once(store, source, work / "download.bin", expected) for _ in range(repeat)
        ]


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=256, help="file size in MiB (256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; medians shown")
    parser.add_argument(
        "--concurrency", default="1,4", help="S3 parts in flight, comma-separated (1,4)"
    )
    parser.add_argument("--part-size-mb", type=int, default=8, help="S3 part size in MiB (8)")
    parser.add_argument("--backends", default="local,s3", help="comma-separated (local,s3)")
    args = parser.parse_args()

    # moto accepts any key; make sure nothing real is used or needed.
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        os.environ.pop(name, None)

    size = args.size_mb * MiB
    backends = args.backends.split(",")
    cases = [Case("local", None, None)] if "local" in backends else []
    if "s3" in backends:
        cases += [Case("s3", int(c), args.part_size_mb * MiB) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        work = Path(tmp)
        source = work / "source.bin"
        expected = write_source(source, size)
        with moto_process() if "s3" in backends else contextlib.nullcontext() as endpoint:
            results = {
                case: await run_case(case, work, source, expected, args.repeat, endpoint)
                for case in cases
            }

    print(f"file {args.size_mb} MiB, {args.repeat} runs per case, medians (MB = 10^6 bytes)")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs: {cpu_model()}")
    print()
    header = (
        f"{'backend':<8} {'in flight':>9} {'part':>6} {'upload MB/s':>12} {'download MB/s':>14}"
    )
    print(header)
    print("-" * len(header))
    for case, timings in results.items():
        upload = size / statistics.median(t.upload_s for t in timings) / 1e6
        download = size / statistics.median(t.download_s for t in timings) / 1e6
        flight = str(case.concurrency) if case.concurrency else "-"
        part = f"{case.part_size // MiB}M" if case.part_size else "-"
        print(f"{case.backend:<8} {flight:>9} {part:>6} {upload:>12.0f} {download:>14.0f}")


if __name__ == "__main__":
    asyncio.run(main())
