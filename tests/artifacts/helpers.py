"""Test helpers for the artifact stores: moto in its own process, named pipes, raw S3 clients."""

from __future__ import annotations

import asyncio
import errno
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

    async def connect(self, timeout: float = 30.0) -> None:
        """Open the write end once the reader has opened the other (within `timeout`)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                # Non-blocking, so that a reader that never comes fails the test, not hangs it.
                self._fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.005)
        os.set_blocking(self._fd, True)

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


class TcpProxy:
    """A loopback TCP proxy to an upstream port that can cut its connections on cue.

    It counts the bytes sent upstream, the connections accepted and those open at once,
    and cuts
    every connection each time the upstream byte count passes one of `cut_at`,
    either staying up (a dropped connection) or, with `stop_on_cut`, refusing new
    connections too (the server went away).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sent = 0
        self.accepted = 0
        self.open_connections = 0
        self.peak_connections = 0
        self.cut_at: list[int] = []
        self.stop_on_cut = False
        self.cuts = 0
        self._transports: set[asyncio.WriteTransport] = set()
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> str:
        """Listen (on `port`, else a free one); returns the proxy's URL."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        self.cut(stop=True)

    def cut(self, *, stop: bool) -> None:
        """Reset every open connection; with `stop`, also stop accepting new ones."""
        self.cuts += 1
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        if stop and self._server is not None:
            self._server.close()
            self._server = None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            return
        self._transports.update((client_w.transport, upstream_w.transport))
        self.accepted += 1
        self.open_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)
        try:
            await asyncio.gather(
                self._pipe(client_r, upstream_w, upstream=True),
                self._pipe(upstream_r, client_w, upstream=False),
            )
        finally:
            self.open_connections -= 1
            self._transports.difference_update((client_w.transport, upstream_w.transport))

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        try:
            while data := await source.read(1 << 16):
                if upstream:
                    self.sent += len(data)
                    if self.cut_at and self.sent >= self.cut_at[0]:
                        del self.cut_at[0]
                        self.cut(stop=self.stop_on_cut)
                        return
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()
