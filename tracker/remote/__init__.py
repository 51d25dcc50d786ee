"""The remote client: a Tracker whose writes go through a local outbox to a tracking server, and whose reads are the server's."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from tracker.remote.client import DEFAULT_HTTP_TIMEOUT, RemoteClient
from tracker.remote.handler import RemoteHandler, RemoteStatistics, Sender
from tracker.remote.outbox import Outbox, default_outbox_dir, left_behind
from tracker.remote.queries import RemoteDatabase, RemoteLog, RemoteQueries

__all__ = [
    "Remote",
    "RemoteClient",
    "RemoteHandler",
    "RemoteQueries",
    "RemoteStatistics",
    "Sender",
    "default_outbox_dir",
    "deliver",
]


class Remote:
    """The parts a remote Tracker is made of instead of a store: the HTTP client, the outbox
    (`outbox_dir`, default `default_outbox_dir(url)`), the handler the writer stores batches
    with, the sender that delivers them, and the read side."""

    def __init__(
        self, url: str, *, outbox_dir: str | os.PathLike[str] | None, write_timeout: float,
        http_timeout: float = DEFAULT_HTTP_TIMEOUT,
    ) -> None:  # fmt: skip
        self.client = RemoteClient(url, timeout=http_timeout)
        # The client's spelling of the URL (no trailing slash, no password): one server, one outbox.
        directory = (
            outbox_dir if outbox_dir is not None else default_outbox_dir(self.client.display_url)
        )
        self.outbox_dir = Path(directory)
        self.outbox = Outbox.create(self.outbox_dir)
        self.sender = Sender(self.client, self.outbox, write_timeout=write_timeout)
        self.log = RemoteLog(self.client)
        self.database = RemoteDatabase(self.client.url)
        self.queries = RemoteQueries(self.client, self.database, self.log)
        self.handler = RemoteHandler(self.log, self.outbox, self.sender)

    async def open(self) -> None:
        """Open the client and the outbox, and start sending: first what dead processes
        left in the outbox directory, oldest first, then this tracker's own batches."""
        await self.client.open()
        left: list[Outbox] = []
        try:
            await self.outbox.open()
            left = left_behind(self.outbox_dir, exclude=self.outbox.path)
            for box in left:
                await box.open()
        except BaseException:
            for box in left:
                await box.aclose(remove_if_empty=False)
            await self.outbox.aclose()
            await self.client.aclose()
            raise
        self.sender.left = left
        self.sender.start()

    async def aclose(self, grace: float | None) -> None:
        """Deliver what the outbox holds for at most `grace` seconds (None: stop at once),
        then close; WriterError when something is left in the outbox (it says where)."""
        try:
            if grace is None:
                await self.sender.cancel()
            else:
                await self.sender.stop(grace)
        finally:
            for box in self.sender.left:
                await box.aclose()
            await self.outbox.aclose()
            await self.client.aclose()


async def deliver(
    directory: Path, url: str, *, progress: Callable[[int, int], None] | None = None,
    http_timeout: float = DEFAULT_HTTP_TIMEOUT, grace: float = 60.0,
) -> int:  # fmt: skip
    """Send what the outboxes in `directory` hold (those no live process holds) to the
    tracking server at `url`, oldest first, retrying an unreachable server for at most
    `grace` seconds in a row; returns the commands delivered. `progress(done, total)` is
    called as batches are acknowledged (counting batches). Raises WriterError, saying what
    is left, when the server stays unreachable."""
    client = RemoteClient(url, timeout=http_timeout)
    boxes = left_behind(directory)
    await client.open()
    try:
        for box in boxes:
            await box.open()
        total = sum(b.count for b in boxes)
        # A sender with an outbox of its own that stays empty: it sends the others first.
        own = Outbox.create(directory)
        await own.open()
        sender = Sender(client, own, boxes, write_timeout=grace)

        def report() -> None:
            if progress is not None:
                progress(total - sum(b.count for b in sender.left), total)

        sender.on_progress = report
        sender.outage_grace = grace
        sender.start()
        try:
            await sender.stop(float("inf"))
        finally:
            await own.aclose()
        return sender.acknowledged
    finally:
        for box in boxes:
            with contextlib.suppress(Exception):
                await box.aclose()
        await client.aclose()
