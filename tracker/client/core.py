"""The tracker's lifecycle: what it is made of, opening and closing, flushing, waiting for views."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import stamina

from tracker.artifacts.paths import local_artifact_uri
from tracker.artifacts.runs import RunArtifacts
from tracker.commands import Command, CreateExperiment
from tracker.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    StoreUnavailableError,
    TrackerError,
)
from tracker.events import DEFAULT_EXPERIMENT_ID, DEFAULT_EXPERIMENT_NAME
from tracker.handler import Accepted, CommandHandler, Outcome
from tracker.projections import default_projections
from tracker.projections.queries import Queries
from tracker.projections.runner import ProjectionRunner
from tracker.stores import is_remote_uri, resolve_uri, store_from_uri
from tracker.stores.base import Database, EventLog, Session, SqlEventStore
from tracker.stores.uris import mask_password
from tracker.writer import (
    DEFAULT_GRACE,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BATCH_AGE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_WRITE_TIMEOUT,
    EventQueue,
    Writer,
    WriterStatistics,
    read_recovery,
)

if TYPE_CHECKING:
    from tracker.client.handle import Run
    from tracker.remote import Remote

log = logging.getLogger("tracker")
T = TypeVar("T")

_DEFAULT_EXPERIMENT_COMMAND: Final = uuid.uuid5(
    uuid.NAMESPACE_URL, "tracker:default-experiment"
).bytes
READ_RETRY_TIMEOUT: Final = 30.0
_POLL_FIRST: Final = 0.01
_POLL_MAX: Final = 0.25
"""wait_until's pause between polls grows from _POLL_FIRST to _POLL_MAX (jittered)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _ViewLookups:
    """What decisions look up in the views: the next experiment id, and names held by
    experiments made before names were claimed in the log."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def next_experiment_id(self) -> int:
        async with self._core.database.snapshot() as s:
            return await self._core.queries.next_experiment_id(s)

    async def experiment_by_name(self, name: str) -> str | None:
        async with self._core.database.snapshot() as s:
            found = await self._core.queries.get_experiment_by_name(s, name)
        return None if found is None else found.experiment_id


class Core:
    """What every part of the Tracker shares: the log, the views' database, the command
    handler, the writer and its queue, the projections and their queries.

    uri: None for $TRACKER_TRACKING_URI or the embedded default ./mlruns; see
    tracker.stores.store_from_uri. `store` gives a store (both roles) instead; `log` and
    `database` give the two roles apart (tracker.testing uses an in-memory log).
    on_full: what log_* does when `max_queue` items wait (see tracker.writer).
    max_batch / max_batch_age: when the writer commits a batch. write_timeout: how long
    flush() and reads wait while writes fail before they raise (writes go on being retried).
    grace: how long closing waits for a failing store before it keeps what is left in a
    recovery file. default_artifact_root: where new experiments keep artifacts (default: the
    store's own, ./mlruns for the embedded store). create=False: never create a store; opening
    one that does not exist raises NotFoundError (what read-only tools want).

    A tracking server's URL (http:// or https://) makes a remote tracker (tracker.remote):
    the writer stores its batches in a local outbox (`outbox_dir`, default
    $XDG_STATE_HOME/tracker/outbox/<sha256(url)[:16]>), which sends them to the server in
    order and forgets each once the server acknowledges it; reads are the server's answers.
    `flush()` then returns once the server has acknowledged what was queued before it, and
    `flush(outbox_only=True)` once it is in the outbox (a crash after that loses nothing: the
    next tracker opened for that server, or `tracker sync`, sends it).
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        on_full: str = "spill",
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_age: float = DEFAULT_MAX_BATCH_AGE,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        grace: float = DEFAULT_GRACE,
        store: SqlEventStore | None = None,
        log: EventLog | None = None,
        database: Database | None = None,
        artifact_options: Mapping[str, Any] | None = None,
        default_artifact_root: str | None = None,
        create: bool = True,
        outbox_dir: str | os.PathLike[str] | None = None,
        _threaded: bool = False,
    ) -> None:
        self._remote: Remote | None = None
        if store is None and log is None and database is None and is_remote_uri(resolve_uri(uri)):
            from tracker.remote import Remote

            self._remote = Remote(
                resolve_uri(uri), outbox_dir=outbox_dir, write_timeout=write_timeout
            )
            log, database = self._remote.log, self._remote.database
        elif outbox_dir is not None:
            raise InvalidInputError(
                "outbox_dir is for a tracker that logs to a tracking server: give an http:// "
                "or https:// URI, or leave outbox_dir out"
            )
        if store is None and (log is None or database is None):
            if log is not None or database is not None:
                raise TypeError("give both log= and database=, or a store=")
            store = store_from_uri(resolve_uri(uri))
        self.uri: str = resolve_uri(uri) if uri is not None or (log is None and not store) else ""
        self.uri = self.uri or str(getattr(store if log is None else log, "uri", ""))
        self.log: EventLog = log if log is not None else store  # type: ignore[assignment]
        self.database: Database = database if database is not None else store  # type: ignore[assignment]
        self.store = store
        self._create = create
        self._grace = grace
        self._default_artifact_root = default_artifact_root
        path = getattr(self.log, "path", None)
        memory = getattr(self.log, "memory", False)
        spill_dir = str(path.parent) if path is not None and not memory else None
        self._queue = EventQueue(max_queue, on_full, _threaded, spill_dir)
        self._one_store = _same(self.log, self.database)
        self.queries: Queries
        self.handler: CommandHandler
        if self._remote is not None:
            self.queries, self.handler = self._remote.queries, self._remote.handler
        else:
            self.queries = Queries(self.database, self.log, self._one_store)
            self.handler = CommandHandler(
                self.log, _ViewLookups(self), artifact_root=self._artifact_root()
            )
        # A remote tracker has no views of its own: the server answers after applying them.
        self.runner = ProjectionRunner(self.log, self.database, default_projections())
        self._writer = Writer(
            self.handler, None if self._remote else self.runner, self._queue, max_batch=max_batch,
            max_batch_age=max_batch_age, write_timeout=write_timeout,
            recovery_dir=self._recovery_dir(),
        )  # fmt: skip
        self._open = False
        self._runs: weakref.WeakSet[Run] = weakref.WeakSet()
        self._artifacts = RunArtifacts(**(artifact_options or {}))

    @property
    def display_uri(self) -> str:
        """Where runs are recorded, with any password masked: what to show people."""
        return mask_password(self.uri)

    def _artifact_root(self) -> str:
        root = (
            self._default_artifact_root
            or getattr(self.store, "default_artifact_root", None)
            or str(Path(resolve_uri(None)).resolve())
        )
        if "://" in root or root.startswith(("mlflow-artifacts:", "file:")):
            return root  # a URI already: kept as it is
        return local_artifact_uri(root)

    def _recovery_dir(self) -> Path | None:
        path = getattr(self.log, "path", None)
        if getattr(self.log, "memory", False) or isinstance(self.log, _memory_type()):
            return None
        if path is not None:
            return Path(path).parent / "recovery"
        state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        digest = hashlib.sha256(self.display_uri.encode()).hexdigest()[:16]
        return Path(state) / "tracker" / "recovery" / digest

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store (creating it unless `create=False`), catch the views up, start the
        writer and replay what an earlier process left in a recovery file. If anything fails,
        what was opened is closed again before the error propagates, so a failed open never
        leaves a thread keeping the process alive. A store that is briefly unreachable is
        retried."""
        if self._open:
            return
        if self._remote is not None:
            await self._open_remote(self._remote)
            return
        await self._retry_outage(lambda: self.log.open(create=self._create))
        try:
            if not self._one_store:
                await self._retry_outage(lambda: self.database.open(create=self._create))
            await self._retry_outage(self.runner.open)
            await self._retry_outage(self.runner.catch_up)
            self._writer.start()
            self._open = True
            await self._replay_recovery()
            await self._ensure_default_experiment()
        except BaseException:
            await self._abandon_open(self._close_stores)
            raise

    async def _abandon_open(self, close: Callable[[], Awaitable[None]]) -> None:
        """After a failed open: stop the writer and `close` what the open opened."""
        self._open = False
        try:
            await self._writer.stop(grace=0)
        except Exception:  # the open's error is the one to report
            pass
        finally:
            await close()

    async def _open_remote(self, remote: Remote) -> None:
        """Open the outbox and start sending (what a dead process left first); the server
        is not contacted here, so a tracker opens, and logs, while the server is down."""
        await remote.open()
        try:
            self._writer.start()
            self._open = True
            await self._replay_recovery()
        except BaseException:
            await self._abandon_open(lambda: remote.aclose(None))
            raise

    async def _close_stores(self) -> None:
        if self._remote is not None:
            return  # closed by aclose, after the outbox is delivered
        try:
            await self.log.aclose()
        finally:
            if not self._one_store:
                await self.database.aclose()

    async def aclose(self, end_status: str = "FINISHED") -> None:
        """End the runs this tracker started and did not end (with `end_status`), drain the
        queue into the log (for at most `grace` seconds while the store fails; then what is
        left goes to a recovery file and WriterError says where), stop the writer and close
        the store."""
        if not self._open:
            return
        self._open = False
        from tracker.commands import UpdateRun
        from tracker.writer import Op

        # Ending the runs left open is housekeeping: a run deleted meanwhile (whose end is
        # refused) is no error of the caller's, so each end has a future nobody raises from.
        ends: list[asyncio.Future[Any]] = []
        await self._artifacts.drain_all()  # uploads in flight are stored and recorded first
        for run in list(self._runs):
            if not run._ended:
                run._ended = True
                fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                end = UpdateRun(run_id=run.run_id, status=end_status, end_time=now_ms())
                if self._remote is not None:
                    # The server's answer, not the outbox's, says whether the run was ended.
                    ends.append(self._remote.sender.expect(end.command_id))
                    self._queue.put(Op(end, None))
                    continue
                ends.append(fut)
                self._queue.put(Op(end, fut))
        started = time.monotonic()
        try:
            await self._writer.stop(self._grace)
        finally:
            try:
                if self._remote is not None:
                    # Everything is in the outbox now: send it, for what is left of the grace
                    # period while the server cannot be reached.
                    left = max(0.0, self._grace - (time.monotonic() - started))
                    await self._remote.aclose(left)
            finally:
                for fut in ends:
                    if fut.done() and not fut.cancelled() and fut.exception() is not None:
                        log.info("a run left open was not ended: %s", fut.exception())
                await self._artifacts.aclose()
                await self._close_stores()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        from tracker.client.handle import exit_status

        await self.aclose(exit_status(et))

    async def flush(self, timeout: float | None = None, *, outbox_only: bool = False) -> int:
        """Return once everything queued before this call is durable in the log and applied to
        the views; returns the log position reached. Raises what refused a write queued
        without waiting (ParamConflictError, say), or WriterError while the store fails.

        A remote tracker returns once the server has acknowledged it (durable and applied
        there), and raises WriterError once the server has been unreachable for
        write_timeout seconds (nothing is lost: the outbox keeps it and goes on sending);
        with `outbox_only`, once it is in the local outbox (returning the server's position
        as last acknowledged). An embedded tracker has no outbox: `outbox_only` changes
        nothing there."""
        remote = self._remote
        if remote is None:
            return await self._writer.flush(timeout)
        started = time.monotonic()
        await self._writer.flush(timeout)
        if outbox_only:
            return remote.sender.position
        left = None if timeout is None else max(0.001, timeout - (time.monotonic() - started))
        position = await remote.sender.acknowledged_through(remote.outbox.last_id, left)
        remote.sender.raise_rejections()
        return position

    def statistics(self) -> WriterStatistics:
        """The writer's statistics; a remote tracker's are a RemoteStatistics, with the
        outbox's batches, bytes and lag (tracker.remote). Call it on the tracker's own event
        loop (SyncTracker.statistics does): it reads the queue without a lock, so another
        thread may see it mid-change."""
        if self._remote is not None:
            return self._remote.sender.statistics(self._writer.statistics())
        return self._writer.statistics()

    async def projection_errors(self) -> list[Any]:
        """Events a projection could not apply and skipped, with the reason."""
        if self._remote is not None:
            return []  # the server's views, not ours: see its /metrics
        return await self.runner.errors()

    async def wait_until(self, position: int, timeout: float = 10.0) -> None:
        """Wait until the views reflect the log up to `position` (read-your-writes). Raises
        DeadlineExceededError (a TimeoutError) when they have not within `timeout` seconds;
        a store that cannot be reached meanwhile is retried until that deadline."""
        if self._remote is not None:
            return  # the server answers a write once its views have applied it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = _POLL_FIRST
        while self.runner.position < position:
            # A catch-up is never cancelled midway (it writes the views and their position
            # together); a lost connection is retried, with backoff, until the deadline.
            left = max(deadline - loop.time(), 0.001)
            async for attempt in stamina.retry_context(
                on=StoreUnavailableError, attempts=None, timeout=left,
                wait_initial=0.05, wait_max=min(1.0, left), wait_jitter=0.05,
            ):  # fmt: skip
                with attempt:
                    await self.runner.catch_up()
            if self.runner.position >= position:
                return
            left = deadline - loop.time()
            if left <= 0:
                raise DeadlineExceededError(
                    f"the views are at log position {self.runner.position}, not yet at "
                    f"{position}, after {timeout} s: wait longer, or check that {position} is "
                    "a position of this store (returned by its flush())"
                )
            # Full jitter, so that many waiters on one store do not poll it in step.
            await asyncio.sleep(min(left, random.uniform(0, pause)))
            pause = min(pause * 2, _POLL_MAX)

    # -- for the parts ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise InvalidStateError("the tracker is not open: use `async with Tracker(...) as tk:`")

    async def _submit(self, command: Command) -> Accepted:
        """Decide and store a command; returns once it is durable and in the views."""
        self._check_open()
        if self._remote is None:
            return await self._writer.submit(command)
        sender = self._remote.sender
        answer = sender.expect(command.command_id)
        try:
            await self._writer.submit(command)  # in the outbox
            return await sender.result(answer)  # answered by the server
        finally:
            sender.forget(command.command_id)

    async def submit_commands(
        self, commands: Sequence[Command], *, check_stored: bool = True
    ) -> list[Outcome]:
        """Decide and store `commands` through the writer, in order (group-committed with
        whatever else is queued); an outcome per command: Accepted once it is durable and in
        the views, or the TrackerError the write rules refused it with (the others are
        stored all the same).

        With `check_stored`, a command whose id is in the log already is Accepted at the log's
        head without being decided again, and so is a refused one whose id is found in the log
        afterwards (a copy sent at the same time stored it): a batch sent twice, even twice at
        once, stores nothing twice. Anything but a refusal (the store failing for longer than
        the write timeout, a full queue) is raised instead: whether the commands were stored is
        then unknown, and sending them again is safe."""
        self._check_open()
        if self._remote is not None:
            # The server recognises commands it has stored already: nothing to check here.
            results = await asyncio.gather(
                *(self._submit(c) for c in commands), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, _REFUSALS):
                    raise result
            return [r if isinstance(r, Accepted | TrackerError) else Accepted(0) for r in results]
        outcomes: list[Outcome | None] = [None] * len(commands)
        if check_stored and commands:
            await self._mark_stored(commands, range(len(commands)), outcomes)
        todo = [i for i, o in enumerate(outcomes) if o is None]
        # One task per command, created in order: each queues its command when it first runs,
        # so the batch keeps its order and usually lands in one of the writer's batches.
        tasks = [asyncio.ensure_future(self._writer.submit(commands[i])) for i in todo]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        refused: list[int] = []
        for i, result in zip(todo, results, strict=True):
            if isinstance(result, _REFUSALS):
                refused.append(i)
            elif isinstance(result, BaseException):
                raise result
            outcomes[i] = result
        if check_stored and refused:
            await self._mark_stored(commands, refused, outcomes)
        return [o if o is not None else Accepted(0) for o in outcomes]

    async def _mark_stored(
        self, commands: Sequence[Command], indices: Sequence[int], outcomes: list[Outcome | None]
    ) -> None:
        """Set the outcome of each command (among `indices`) whose id is in the log."""
        ids = [commands[i].command_id for i in indices]
        stored = await self._retry_outage(lambda: self.log.known_ids(ids))
        if not stored:
            return
        head = await self._retry_outage(self.log.head)
        for i in indices:
            if commands[i].command_id in stored:
                outcomes[i] = Accepted(head)

    async def _sync(self) -> None:
        """Before a read: our own writes flushed, and others' appends projected."""
        if self._remote is not None:
            if self._writer.pending() or self._remote.sender.pending():
                await self.flush()
            return
        if self._writer.pending():
            await self.flush()
        if await self.log.head() > self.runner.position:
            await self.runner.catch_up()

    async def _read(self, query: Callable[[Session], Awaitable[T]]) -> T:
        """Run a read on a snapshot of the views after `_sync`, retrying a lost connection."""
        self._check_open()

        async def once() -> T:
            await self._sync()
            async with self.database.snapshot() as s:
                return await query(s)

        return await self._retry_outage(once)

    async def _retry_outage(self, fn: Callable[[], Awaitable[T]]) -> T:
        """`fn()`, retried with jittered backoff while the store is unreachable, for at most
        READ_RETRY_TIMEOUT seconds."""
        async for attempt in stamina.retry_context(
            on=StoreUnavailableError, attempts=None, timeout=READ_RETRY_TIMEOUT,
            wait_initial=0.05, wait_max=2.0, wait_jitter=0.2,
        ):  # fmt: skip
            with attempt:
                return await fn()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _replay_recovery(self) -> None:
        """Store what an earlier process could not, from its recovery files (idempotent: the
        commands keep their ids, so what did get stored is not stored twice)."""
        directory = self._writer.recovery_dir
        if directory is None:
            return
        files = await asyncio.to_thread(
            lambda: sorted(directory.glob("recovery-*.jsonl")) if directory.is_dir() else []
        )
        for path in files:
            commands = await asyncio.to_thread(read_recovery, path)
            outcomes = await self.handler.handle(commands, check_stored=True)
            refused = [o for o in outcomes if isinstance(o, TrackerError)]
            recorded = [r for o in outcomes if isinstance(o, Accepted) for r in o.events]
            if recorded:
                await self.runner.apply(sorted(recorded, key=lambda r: r.position))
            for exc in refused:
                log.error("a recovered write from %s was refused: %s", path, exc)
            await asyncio.to_thread(path.unlink)
            log.warning("replayed %d writes kept in %s", len(commands), path)

    async def _ensure_default_experiment(self) -> None:
        if self._remote is not None:
            return  # the server's store has it

        async def present() -> bool:
            async with self.database.snapshot() as s:
                return await self.queries.get_experiment(s, DEFAULT_EXPERIMENT_ID) is not None

        if await self._retry_outage(present):  # open() survives a lost connection too
            return
        command = CreateExperiment(
            name=DEFAULT_EXPERIMENT_NAME, experiment_id=DEFAULT_EXPERIMENT_ID,
            command_id=_DEFAULT_EXPERIMENT_COMMAND,
        )  # fmt: skip
        # A fixed command id: processes racing to create it store one between them.
        with contextlib.suppress(AlreadyExistsError):
            await self._submit(command)


_REFUSALS: Final = (InvalidInputError, NotFoundError, AlreadyExistsError, InvalidStateError)
"""What the write rules refuse a command with: an outcome of that command, not of its batch."""


def _same(a: object, b: object) -> bool:
    return a is b


def _memory_type() -> type:
    from tracker.stores.memory import InMemoryEventLog

    return InMemoryEventLog
