"""Test helpers for the artifact stores: moto in its own process, named pipes, raw S3 clients."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any


class MotoProcess:
    """moto's threaded S3 server in a process of its own, to SIGSTOP, SIGCONT or kill."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.stopped = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> str:
        """Start it (on `port`, else a free one) and return its URL once it serves."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("moto_process.py")),
            str(port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=60)
        assert line, "moto's process exited before serving"
        self.port = int(line)
        return self.endpoint

    def stop(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, and nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.stopped = False

    async def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.stopped = False

    async def aclose(self) -> None:
        if self.stopped:
            self.resume()
        await self.kill()


class Fifo:
    """A named pipe the test writes into, to feed a reader at the pace the test chooses."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self._fd: int | None = None

    async def connect(self) -> None:
        """Open the write end; returns once the reader has opened the other."""
        self._fd = await asyncio.to_thread(os.open, self.path, os.O_WRONLY)

    async def feed(self, data: bytes) -> None:
        """Write all of `data`; past the pipe's 64 KiB, that waits for the reader to read."""
        assert self._fd is not None, "connect() first"
        view = memoryview(data)
        while view:
            view = view[await asyncio.to_thread(os.write, self._fd, view) :]

    def close(self) -> None:
        """End of input for the reader."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def raw_s3_client(endpoint: str, loader: Any) -> Any:
    """A raw aiobotocore client (an async context manager), to set up and inspect S3."""
    from aiobotocore.session import get_session

    session = get_session()
    session.register_component("data_loader", loader)
    return session.create_client("s3", endpoint_url=endpoint)
