"""Child process of the memory test: one S3 upload and download, measured alone."""

# Run apart from the test process because moto serves from there and holds the whole
# object in memory: measured in-process, its copies would swamp the client's.

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import tracemalloc
from pathlib import Path

import psutil

from tracker.artifacts.s3 import S3ArtifactStore


def reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM. (ru_maxrss cannot be used: it keeps the
    # peak of the forked pytest process this one was exec'd from.)
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, "no VmHWM in /proc/self/status"
    return int(match.group(1)) * 1024


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--part-size", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args()

    store = S3ArtifactStore(
        args.uri,
        endpoint_url=args.endpoint,
        part_size=args.part_size,
        concurrency=args.concurrency,
    )
    async with store:
        await store.list()  # open the client first: its setup is not the transfer's cost
        reset_peak_rss()
        rss_before = psutil.Process().memory_info().rss
        tracemalloc.start()
        started = time.perf_counter()
        put = await store.put_file(args.src, "big.bin")
        put_seconds = time.perf_counter() - started
        put_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        started = time.perf_counter()
        got = await store.get_file("big.bin", args.dst)
        get_seconds = time.perf_counter() - started
        get_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    rss_growth = peak_rss() - rss_before
    print(
        json.dumps(
            {
                "put_size": put.size,
                "put_sha256": put.sha256,
                "get_size": got.size,
                "get_sha256": got.sha256,
                "put_peak_bytes": put_peak,
                "get_peak_bytes": get_peak,
                "rss_growth_bytes": rss_growth,
                "put_seconds": put_seconds,
                "get_seconds": get_seconds,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
