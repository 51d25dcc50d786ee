"""The command handler: loads facts from the log, decides commands, appends with expected sequences."""

from __future__ import annotations

import copy
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import stamina

from tracker.commands import (
    Command,
    CreateExperiment,
    ExperimentFacts,
    Facts,
    NameFacts,
    RunFacts,
    decide,
    event_ids,
    evolve,
)
from tracker.errors import (
    ConcurrencyError,
    StoreError,
    StoreUnavailableError,
    TrackerError,
    WriterError,
)
from tracker.events import (
    DomainEvent,
    NewEvent,
    RecordedEvent,
    UnreadableEvent,
    experiment_name_stream,
    experiment_stream,
    run_stream,
)
from tracker.stores.base import EventLog, UnencodableEventError, now_ms

log = logging.getLogger("tracker.handler")

MAX_CONFLICTS: Final = 50
CACHE_STREAMS: Final = 10_000
EXPERIMENT_TTL: Final = 1.0
_SKIP: Final = frozenset({"MetricsLogged"})
_PROVISIONAL: Final = 1 << 62


class Lookups(Protocol):
    """What decisions need from the views: ids and names that predate name claims."""

    async def next_experiment_id(self) -> int: ...

    async def experiment_by_name(self, name: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Accepted:
    """A command stored (or found stored already): the log position that holds it, and the
    events recorded now (empty when there was nothing to record, or it was stored before)."""

    position: int
    events: tuple[RecordedEvent, ...] = ()


Outcome = Accepted | TrackerError


@dataclass(slots=True)
class _Stream:
    position: int = 0
    """The last log position folded into the facts."""
    seq: int = 0
    """The stream's head sequence, as of the last read or append."""
    loaded_at: float = 0.0
    stale: bool = True


@dataclass(slots=True)
class _Plan:
    index: int
    command: Command
    events: list[NewEvent] = field(default_factory=list)


class CommandHandler:
    """Decides commands against the current state of the streams they touch and appends the
    events, numbered with the sequences that state was read at. If another writer appended to
    one of those streams in between, the append fails as a whole, the state is read again and
    every command of the batch decided again (up to MAX_CONFLICTS times, with jittered backoff),
    so a rule such as "params are write-once" holds across processes: of two different values
    logged at once, one is stored and the other refused, and no conflicting event is left in the
    log. A command the rules refuse, or whose events cannot be stored, fails alone; the rest of
    its batch is stored. Outages (StoreUnavailableError) propagate, for the caller to retry with
    `check_stored=True`, which recognises commands whose commit went through unanswered.

    Facts are cached per stream (bounded), and re-read only after a conflict, or for
    experiments (whose deletion cascades to runs that do not append to them) once they are
    older than EXPERIMENT_TTL seconds.
    """

    def __init__(
        self,
        log: EventLog,
        lookups: Lookups | None = None,
        *,
        artifact_root: str = "",
        cache_streams: int = CACHE_STREAMS,
    ) -> None:
        self.log = log
        self.lookups = lookups
        self.artifact_root = artifact_root
        self._facts = Facts()
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._cache_streams = cache_streams
        self._next_experiment_id = 1
        self.conflicts = 0

    # -- the batch ----------------------------------------------------------------------------

    async def handle(
        self, commands: Sequence[Command], *, check_stored: bool = False
    ) -> list[Outcome]:
        """Decide and store `commands`; an outcome per command, in order."""
        outcomes: list[Outcome | None] = [None] * len(commands)
        pending = list(range(len(commands)))
        if check_stored and pending:
            stored = await self.log.known_ids([commands[i].command_id for i in pending])
            if stored:
                head = await self.log.head()
                for i in pending:
                    if commands[i].command_id in stored:
                        outcomes[i] = Accepted(head)
                        self._invalidate_for(commands[i])
                pending = [i for i in pending if outcomes[i] is None]
        # Another writer took a sequence we numbered with: read the streams again and decide
        # again (the one thing a generic retry cannot do), with stamina's jittered backoff.
        async for attempt in stamina.retry_context(
            on=ConcurrencyError, attempts=MAX_CONFLICTS, timeout=None, wait_initial=0.005,
            wait_max=0.5, wait_jitter=0.05,
        ):  # fmt: skip
            with attempt:
                pending = [i for i in pending if outcomes[i] is None]
                plans = await self._plan([(i, commands[i]) for i in pending], outcomes)
                try:
                    await self._store(plans, outcomes)
                except ConcurrencyError:
                    self.conflicts += 1
                    for p in plans:
                        self._invalidate_for(p.command)
                    # What this attempt decided without storing (a refusal, a no-op) rests on
                    # plans that were not stored: decide it again with the rest.
                    for i in pending:
                        o = outcomes[i]
                        if isinstance(o, BaseException) or (
                            isinstance(o, Accepted) and not o.events
                        ):
                            outcomes[i] = None
                    raise
        return [o if o is not None else Accepted(0) for o in outcomes]

    async def _plan(
        self, todo: Sequence[tuple[int, Command]], outcomes: list[Outcome | None]
    ) -> list[_Plan]:
        """Decide each command on a working copy of the facts, in order, so that later
        commands see what earlier ones decided; number the events."""
        facts = await self._load([c for _, c in todo])
        heads: dict[str, int] = {}
        provisional = _PROVISIONAL
        plans: list[_Plan] = []
        now = now_ms()
        for i, command in todo:
            facts.now = now
            try:
                decided = decide(facts, command)
            except TrackerError as exc:
                outcomes[i] = exc
                continue
            plan = _Plan(i, command)
            ids = event_ids(command.command_id, len(decided))
            for event, event_id in zip(decided, ids, strict=True):
                stream = event.stream_id
                if stream not in heads:
                    heads[stream] = await self._seq(stream)
                heads[stream] += 1
                plan.events.append(NewEvent(event_id, stream, heads[stream], now, event))
                evolve(facts, event, provisional)
                provisional += 1
            if not plan.events:
                outcomes[i] = Accepted(self._facts_position())
                continue
            plans.append(plan)
        return plans

    async def _store(self, plans: list[_Plan], outcomes: list[Outcome | None]) -> None:
        """Append the plans in one transaction; a plan whose events cannot be stored is refused
        alone (found by halving) and the others appended."""
        if not plans:
            return
        events = [e for p in plans for e in p.events]
        try:
            recorded = await self.log.append(events)
        except (ConcurrencyError, StoreUnavailableError):
            # Someone else appended, or we cannot tell whether this commit happened: what we
            # know of these streams may be out of date.
            self._mark_stale({e.stream_id for e in events})
            raise
        except UnencodableEventError as exc:
            bad = _plan_of(plans, exc.index)
            outcomes[bad.index] = exc
            await self._store([p for p in plans if p is not bad], outcomes)
            return
        except Exception as exc:  # a value the database refuses, or a bug in a log
            self._mark_stale({e.stream_id for e in events})
            if len(plans) == 1:
                refused = WriterError(f"could not be stored: {type(exc).__name__}: {exc}")
                refused.__cause__ = exc
                outcomes[plans[0].index] = exc if isinstance(exc, StoreError) else refused
                return
            mid = len(plans) // 2
            await self._store(plans[:mid], outcomes)
            await self._store(plans[mid:], outcomes)
            return
        self._commit(plans, recorded, outcomes)

    def _commit(
        self, plans: list[_Plan], recorded: list[RecordedEvent], outcomes: list[Outcome | None]
    ) -> None:
        by_id = {r.event_id: r for r in recorded}
        head = max((r.position for r in recorded), default=0)
        for p in plans:
            mine = tuple(by_id[e.event_id] for e in p.events if e.event_id in by_id)
            if len(mine) < len(p.events):
                self._invalidate_for(p.command)  # some were stored before: re-read
            outcomes[p.index] = Accepted(max((r.position for r in mine), default=head), mine)
        for rec in recorded:
            meta = self._streams.get(rec.stream_id)
            if meta is None or meta.stale:
                continue
            evolve(self._facts, rec.event, rec.position)
            meta.position = max(meta.position, rec.position)
            meta.seq = max(meta.seq, rec.sequence)

    # -- facts ----------------------------------------------------------------------------------

    def _facts_position(self) -> int:
        return max((m.position for m in self._streams.values()), default=0)

    async def _load(self, commands: Sequence[Command]) -> Facts:
        """A working copy of the facts every command reads, refreshed where stale."""
        run_ids: dict[str, None] = {}
        experiment_ids: dict[str, None] = {}
        names: dict[str, None] = {}
        for c in commands:
            run_ids.update(dict.fromkeys(c.run_ids()))
            experiment_ids.update(dict.fromkeys(c.experiment_ids()))
            names.update(dict.fromkeys(c.names()))
        # Each copy is taken right after its refresh: refreshing another stream may evict it
        # from the bounded cache.
        f = Facts(artifact_root=self.artifact_root)
        for rid in run_ids:
            await self._refresh(run_stream(rid))
            run = self._facts.runs.get(rid, RunFacts())
            f.runs[rid] = copy.deepcopy(run)
            if rid in self._facts.created_at:
                f.created_at[rid] = self._facts.created_at[rid]
            if run.exists:
                experiment_ids[run.experiment_id] = None
        for eid in experiment_ids:
            await self._refresh(experiment_stream(eid), ttl=EXPERIMENT_TTL)
            f.experiments[eid] = copy.deepcopy(self._facts.experiments.get(eid, ExperimentFacts()))
        for name in names:
            await self._refresh(experiment_name_stream(name))
            held = copy.deepcopy(self._facts.names.get(name, NameFacts()))
            if held.holder is None and self.lookups is not None:
                held.legacy = await self.lookups.experiment_by_name(name)
            f.names[name] = held
        if any(isinstance(c, CreateExperiment) and c.experiment_id is None for c in commands):
            f.next_experiment_id = await self._free_experiment_id()
        return f

    async def _free_experiment_id(self) -> int:
        candidate = self._next_experiment_id
        if self.lookups is not None:
            candidate = max(candidate, await self.lookups.next_experiment_id())
        while await self.log.stream_head(experiment_stream(str(candidate))):
            candidate += 1  # taken by a creator the views have not caught up with
        self._next_experiment_id = candidate
        return candidate

    async def _refresh(self, stream: str, ttl: float | None = None) -> None:
        meta = self._streams.get(stream)
        clock = _monotonic()
        if meta is not None:
            self._streams.move_to_end(stream)
            # An empty stream is read again every time: "it does not exist" may be out of date
            # the moment another process creates it, and a refusal must not rest on that.
            fresh = (
                not meta.stale and meta.seq > 0 and (ttl is None or clock - meta.loaded_at < ttl)
            )
            if fresh:
                return
        else:
            meta = self._streams[stream] = _Stream()
            self._evict()
        seq = await self.log.stream_head(stream)
        if seq != meta.seq or meta.position == 0:
            async for rec in self.log.iter_stream(stream, after=meta.position, exclude_types=_SKIP):
                if isinstance(rec.event, UnreadableEvent):
                    log.warning("cannot decide with an unreadable event at %d", rec.position)
                    continue
                evolve(self._facts, rec.event, rec.position)
                meta.position = rec.position
        meta.seq, meta.loaded_at, meta.stale = seq, clock, False

    async def _seq(self, stream: str) -> int:
        """The head sequence a new event of `stream` follows."""
        meta = self._streams.get(stream)
        if meta is None or meta.stale:
            await self._refresh(stream)
            meta = self._streams[stream]
        return meta.seq

    def _evict(self) -> None:
        while len(self._streams) > self._cache_streams:
            stream, _ = self._streams.popitem(last=False)
            self._forget(stream)

    def _forget(self, stream: str) -> None:
        kind, _, key = stream.partition("-")
        if kind == "run":
            self._facts.runs.pop(key, None)
            self._facts.created_at.pop(key, None)
        elif stream.startswith("experiment-name-"):
            self._facts.names = {
                n: v for n, v in self._facts.names.items() if experiment_name_stream(n) != stream
            }
        elif kind == "experiment":
            self._facts.experiments.pop(key, None)

    def _invalidate_for(self, command: Command) -> None:
        """Mark every stream the command reads or writes as needing a re-read."""
        streams = [run_stream(r) for r in command.run_ids()]
        streams += [experiment_stream(e) for e in command.experiment_ids()]
        streams += [experiment_name_stream(n) for n in command.names()]
        run_facts = [self._facts.runs.get(r) for r in command.run_ids()]
        streams += [experiment_stream(r.experiment_id) for r in run_facts if r and r.exists]
        for f in (self._facts.experiments.get(e) for e in command.experiment_ids()):
            if f is not None and f.name:
                streams.append(experiment_name_stream(f.name))
        self._mark_stale(streams)

    def _mark_stale(self, streams: Iterable[str]) -> None:
        for s in streams:
            meta = self._streams.get(s)
            if meta is not None:
                meta.stale = True

    def forget_all(self) -> None:
        """Drop every cached fact (for tests and after a rebuild)."""
        self._facts = Facts()
        self._streams.clear()


def _plan_of(plans: Sequence[_Plan], index: int) -> _Plan:
    n = 0
    for p in plans:
        n += len(p.events)
        if index < n:
            return p
    raise IndexError(index)


_monotonic = time.monotonic


__all__ = ["Accepted", "CommandHandler", "DomainEvent", "Lookups", "Outcome"]
