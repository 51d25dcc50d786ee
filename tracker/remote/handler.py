"""The remote client's write path: the writer's batches into the outbox, and the outbox's batches to the server, in order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import stamina

from tracker.commands import Command
from tracker.errors import (
    InvalidInputError,
    StoreUnavailableError,
    TrackerError,
    WriterError,
)
from tracker.handler import Accepted, CommandHandler, Outcome
from tracker.remote.client import RemoteClient, cancel_quietly, error_for
from tracker.remote.outbox import Batch, Outbox, encode_batch
from tracker.stores.base import EventLog
from tracker.writer import WriterStatistics

log = logging.getLogger("tracker.remote")

COMMANDS_PATH: Final = "/api/tracker/v1/commands"
MAX_REQUEST_COMMANDS: Final = 10_000
"""Commands in one POST at most (the server's default limit)."""
MAX_REQUEST_BYTES: Final = 16 << 20
"""Outbox payload bytes in one POST at most (well under the server's 40 MiB body limit)."""
_MAX_REJECTIONS_KEPT: Final = 100


class RemoteHandler(CommandHandler):
    """What the Writer hands its batches to in a remote tracker: each batch is stored in the
    outbox (durably) and handed to the Sender; every command is Accepted once it is there.
    Whether the server accepts it is the Sender's to tell (see Sender.expect). A batch handed
    again after a failed attempt (the writer retries outbox writes that failed) is stored
    once: the handler remembers the ids of the last batch it stored."""

    def __init__(self, log_: EventLog, outbox: Outbox, sender: Sender) -> None:
        super().__init__(log_)
        self.outbox = outbox
        self.sender = sender
        self._last: tuple[bytes, ...] = ()

    async def handle(
        self, commands: Sequence[Command], *, check_stored: bool = False
    ) -> list[Outcome]:
        ids = tuple(c.command_id for c in commands)
        if commands and ids != self._last:
            await self.outbox.add(encode_batch(commands), len(commands))
            self._last = ids
            self.sender.wake()
        return [Accepted(0) for _ in commands]


@dataclass(frozen=True, slots=True)
class RemoteStatistics(WriterStatistics):
    """The writer's statistics for a remote tracker, where its "store" is the outbox, and
    the outbox's own. `position` is the server's log position of the last acknowledged
    command; `retries`, `errors`, `last_error` and `failing_for` are the sends'."""

    outbox_batches: int = 0
    """Batches in the outbox not yet acknowledged by the server (a dead process's included)."""
    outbox_bytes: int = 0
    """Their size, as stored."""
    outbox_lag: float | None = None
    """Seconds the oldest of them has waited (None when there is none)."""
    acknowledged: int = 0
    """Commands the server has acknowledged (stored, or refused by the write rules)."""


class _GaveUp(Exception):
    """The shutdown grace period ended while the server could not be reached."""


class Sender:
    """One task that sends the outbox's batches to the server, oldest first (those left by
    dead processes before this process's own), one request at a time, and deletes them once
    the server has answered them. An unreachable server is retried with jittered backoff for
    as long as the tracker is open, and until the grace period's end while it closes; what is
    left stays in the outbox for the next open or `tracker sync`.

    Each command's outcome goes to whoever `expect`ed it; a refusal nobody awaits is kept
    for the next flush() to raise, as the embedded writer does."""

    def __init__(
        self, client: RemoteClient, outbox: Outbox, left: Sequence[Outbox] = (),
        *, write_timeout: float,
    ) -> None:  # fmt: skip
        self.client = client
        self.outbox = outbox
        self.left = list(left)
        """Outboxes of dead processes, sent first, closed (and removed) once empty."""
        self.write_timeout = write_timeout
        self.position = 0
        """The server's log position of the last command it acknowledged."""
        self.acknowledged = 0
        self._waiters: dict[bytes, asyncio.Future[Accepted]] = {}
        self._rejections: list[TrackerError] = []
        self._rejected = 0
        self._wakeup = asyncio.Event()
        self._moved = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._deadline: float | None = None
        self._acked_through = 0
        """Own outbox batches up to this id have been answered."""
        self._sent_after = 0
        self.retries = self.errors = self.failed_tries = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.outage_grace: float | None = None
        """When set, a stopping sender gives up once the server has been unreachable this long
        (instead of at the grace period's end): for delivering a large outbox."""
        self.on_progress: Callable[[], None] | None = None
        """Called after each acknowledged request."""

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tracker-sender")

    def wake(self) -> None:
        self._wakeup.set()

    async def stop(self, grace: float) -> None:
        """Send what is in the outbox for at most `grace` seconds while the server cannot be
        reached; then leave the rest there and raise WriterError saying where."""
        self._stopping = True
        self._deadline = time.monotonic() + grace
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            await task
        left = self.outbox.count + sum(b.count for b in self.left)
        error = WriterError(
            f"the tracking server {self.client.display_url} could not be reached before the "
            f"shutdown grace period ended ({self.last_error}); nothing is lost: {left} "
            f"batches are kept in the outbox {self.outbox.path.parent} and are sent when a "
            f"tracker next opens for this server, or by `tracker sync "
            f"{self.outbox.path.parent} --to {self.client.display_url}`"
        )
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(error)
        self._waiters.clear()
        if left:
            raise error
        self.raise_rejections()

    # -- waiting -------------------------------------------------------------------------

    def expect(self, command_id: bytes) -> asyncio.Future[Accepted]:
        """A future for the server's answer to a command about to be queued: Accepted with
        its position, or the error that refused it."""
        fut: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._waiters[command_id] = fut
        return fut

    def forget(self, command_id: bytes) -> None:
        self._waiters.pop(command_id, None)

    def pending(self) -> bool:
        """Whether a batch in an outbox (this tracker's, or one left behind) is unanswered."""
        return bool(self.left) or self._acked_through < self.outbox.last_id

    async def wait(self, condition: Callable[[], bool], timeout: float | None, what: str) -> None:
        """Return once `condition()` holds (checked whenever a send ends). Raises WriterError
        when sends have failed for write_timeout seconds during this wait (nothing is lost:
        the outbox keeps it), or when `timeout` passes first."""
        started = time.monotonic()
        tries = self.failed_tries
        while not condition():
            if self._task is None or self._task.done():
                raise WriterError(f"the sender stopped before {what}: {self.last_error}")
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                raise WriterError(
                    f"{what} not acknowledged by {self.client.display_url} within {timeout}s; "
                    f"{self.outbox.count} batches wait in the outbox; last error: "
                    f"{self.last_error}"
                )
            moved = self._moved
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(moved.wait(), 0.25 if left is None else min(0.25, left))
            failing = self.failing_since
            since = None if failing is None else max(failing, started)
            if (
                not condition()
                and since is not None
                and time.monotonic() - since > self.write_timeout
                and self.failed_tries > tries
            ):
                raise WriterError(
                    f"the tracking server {self.client.display_url} has not answered for "
                    f"{time.monotonic() - since:.0f}s: {self.last_error}; nothing is lost: "
                    f"{self.outbox.count} batches wait in the outbox {self.outbox.path} and "
                    "are sent when it is back"
                )

    async def acknowledged_through(self, batch_id: int, timeout: float | None) -> int:
        """Wait until the server has answered every own batch up to `batch_id`, and what dead
        processes left (sent first); the server's log position then."""
        await self.wait(
            lambda: not self.left and self._acked_through >= batch_id, timeout, "the flush"
        )
        return self.position

    async def result(self, fut: asyncio.Future[Accepted]) -> Accepted:
        """The server's answer to an expected command (see `wait` for the errors)."""
        await self.wait(fut.done, None, "the command")
        return fut.result()

    def raise_rejections(self) -> None:
        if self._rejections:
            first = self._rejections[0]
            more = self._rejected - 1
            self._rejections, self._rejected = [], 0
            if more:
                first.add_note(f"{more} more writes queued without waiting were refused too")
            raise first

    def statistics(self, writer: WriterStatistics) -> RemoteStatistics:
        now = time.time()
        boxes = [self.outbox, *self.left]
        oldest = [b.oldest for b in boxes if b.oldest is not None]
        fields = {f.name: getattr(writer, f.name) for f in dataclasses.fields(writer)}
        fields.update(
            position=self.position, projected_position=self.position, retries=self.retries,
            errors=self.errors + writer.errors, rejected=writer.rejected + self._rejected,
            last_error=self.last_error or writer.last_error,
            failing_for=None if self.failing_since is None
            else time.monotonic() - self.failing_since,
        )  # fmt: skip
        return RemoteStatistics(
            **fields, outbox_batches=sum(b.count for b in boxes),
            outbox_bytes=sum(b.bytes for b in boxes),
            outbox_lag=max(0.0, now - min(oldest)) if oldest else None,
            acknowledged=self.acknowledged,
        )  # fmt: skip

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                while self.left:
                    box = self.left[0]
                    await self._drain(box, own=False)
                    self.left.pop(0)
                    await box.aclose()
                    log.warning("sent what an earlier process left in %s", box.path)
                if not await self._send_some(self.outbox, own=True):
                    if self._stopping:
                        return
                    self._wakeup.clear()
                    if not self.pending():
                        await self._wakeup.wait()
        except _GaveUp:
            return
        except Exception as exc:  # the outbox's disk failing, or a bug: waits must not hang
            log.exception("the tracking server sender stopped")
            self.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            self._signal()

    async def _drain(self, box: Outbox, *, own: bool) -> None:
        while await self._send_some(box, own=own):
            pass

    async def _send_some(self, box: Outbox, *, own: bool) -> bool:
        """Send the oldest batches of `box` in one request and delete them once answered;
        whether there were any."""
        after = self._sent_after if own else 0
        batches = await box.batches(
            after, max_bytes=MAX_REQUEST_BYTES, max_commands=MAX_REQUEST_COMMANDS
        )
        if not batches:
            return False
        ids: list[bytes] = []
        items: list[bytes] = []
        for b in batches:
            for command_id, raw in _items(b):
                ids.append(command_id)
                items.append(raw)
        outcomes = await self._retrying(lambda: self._post(items))
        for command_id, outcome in zip(ids, outcomes, strict=True):
            self._settle(command_id, outcome)
        await box.delete([b.id for b in batches])
        self.acknowledged += len(items)
        if own:
            self._sent_after = self._acked_through = batches[-1].id
        self._signal()
        if self.on_progress is not None:
            self.on_progress()
        return True

    async def _post(self, items: list[bytes]) -> list[Outcome]:
        """One request for `items` (encoded commands); an outcome per item. A request the
        server refuses as a whole (too large, say) is split, down to single commands, so
        that one bad command refuses only itself."""
        body = b'{"commands":[' + b",".join(items) + b"]}"
        try:
            answer = await self.client.post(COMMANDS_PATH, body)
        except (InvalidInputError, WriterError) as exc:
            if len(items) == 1:
                return [exc]
            mid = len(items) // 2
            return await self._post(items[:mid]) + await self._post(items[mid:])
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(items):
            raise StoreUnavailableError(
                f"the tracking server {self.client.display_url} answered {len(items)} commands "
                f"with {answer!r:.200}: not one result per command (a proxy in between?)"
            )
        outcomes: list[Outcome] = []
        for r in results:
            if isinstance(r, dict) and isinstance(r.get("position"), int):
                outcomes.append(Accepted(r["position"]))
                continue
            code = r.get("error_code") if isinstance(r, dict) else None
            message = r.get("message") if isinstance(r, dict) else None
            error = error_for(str(code), str(message))
            if isinstance(error, StoreUnavailableError):
                raise error  # resent whole: what was stored is recognised by its id
            outcomes.append(error)
        return outcomes

    def _settle(self, command_id: bytes, outcome: Outcome) -> None:
        if isinstance(outcome, Accepted):
            self.position = max(self.position, outcome.position)
        fut = self._waiters.pop(command_id, None)
        if fut is not None:
            if not fut.done():
                if isinstance(outcome, Accepted):
                    fut.set_result(outcome)
                else:
                    fut.set_exception(outcome)
            return
        if isinstance(outcome, Accepted):
            return
        self._rejected += 1
        if len(self._rejections) < _MAX_REJECTIONS_KEPT:
            self._rejections.append(outcome)
        log.error("a queued write was refused by the tracking server: %s", outcome)

    def _signal(self) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def _retrying(self, work: Callable[[], Any]) -> Any:
        def retry(exc: Exception) -> bool:
            if not isinstance(exc, StoreUnavailableError):
                return False
            self.errors += 1
            self.retries += 1
            self.failed_tries += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            self._signal()
            log.warning("tracking server unavailable (%s); retrying", exc)
            now = time.monotonic()
            if self.outage_grace is not None:
                return not self._stopping or now - self.failing_since < self.outage_grace
            return self._deadline is None or now < self._deadline

        try:
            async for attempt in stamina.retry_context(
                on=retry, attempts=None, timeout=None, wait_initial=0.05, wait_max=5.0,
                wait_jitter=0.5,
            ):  # fmt: skip
                with attempt:
                    result = await work()
        except StoreUnavailableError as exc:
            raise _GaveUp(str(exc)) from exc
        self.failing_since = None
        return result

    async def cancel(self) -> None:
        """Stop at once (an open that failed): what is in the outbox stays there."""
        task, self._task = self._task, None
        await cancel_quietly(task)


def _items(batch: Batch) -> list[tuple[bytes, bytes]]:
    """The commands of an outbox batch: (id, the command as it goes into a request)."""
    return [(bytes.fromhex(c["id"]), orjson.dumps(c)) for c in orjson.loads(batch.payload)]
