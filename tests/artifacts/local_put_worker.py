"""Put one local file into a LocalArtifactStore: for tests that kill the process or outlive it."""

from __future__ import annotations

import asyncio
import sys

from tracker.artifacts import LocalArtifactStore


async def main(root: str, source: str, dest: str) -> None:
    async with LocalArtifactStore(root) as store:
        await store.put_file(source, dest)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
