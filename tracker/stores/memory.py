"""InMemoryEventLog: the event-log contract held in memory, for tests (see tracker.testing)."""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Sequence

from tracker.errors import StoreError
from tracker.events import NewEvent, RecordedEvent
from tracker.stores.base import Encoded, EventLog, decode, sequence_taken


class InMemoryEventLog(EventLog):
    """Every promise of EventLog, in one process's memory: appends are atomic and ordered,
    ids deduplicate, a taken (stream, sequence) raises ConcurrencyError. Events go through the
    same encoding as a database's, and are decoded again on every read, so what a test sees is
    what a store would give back. Nothing survives the process."""

    def __init__(self) -> None:
        self.uri = "memory:"
        self._rows: list[tuple[int, bytes, str, int, str, int, int, bytes]] = []
        self._positions: list[int] = []
        self._ids: set[bytes] = set()
        self._sequences: set[tuple[str, int]] = set()
        self._heads: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._open = False

    def __repr__(self) -> str:
        return f"InMemoryEventLog({len(self._rows)} events)"

    async def open(self, create: bool = True) -> None:
        self._open = True

    async def aclose(self) -> None:
        self._open = False

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("the log is not open: call `await log.open()` first")

    async def _append(self, unique: dict[bytes, NewEvent], encoded: Encoded) -> list[RecordedEvent]:
        self._check_open()
        async with self._lock:
            fresh = [e for e in unique.values() if e.event_id not in self._ids]
            keys = [(e.stream_id, e.sequence) for e in fresh]
            if len(set(keys)) < len(keys) or any(k in self._sequences for k in keys):
                raise sequence_taken(fresh)
            out = []
            head = self._positions[-1] if self._positions else 0
            for position, e in enumerate(fresh, start=head + 1):
                type_name, version, payload = encoded[e.event_id]
                self._rows.append(
                    (position, e.event_id, e.stream_id, e.sequence, type_name, version,
                     e.recorded_at, payload)
                )  # fmt: skip
                self._positions.append(position)
                self._ids.add(e.event_id)
                self._sequences.add((e.stream_id, e.sequence))
                self._heads[e.stream_id] = max(self._heads.get(e.stream_id, 0), e.sequence)
                out.append(
                    RecordedEvent(position, e.event_id, e.stream_id, e.sequence, e.recorded_at,
                                  version, e.event, payload)
                )  # fmt: skip
            return out

    async def read(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        self._check_open()
        start = bisect_right(self._positions, after)
        return [decode(r) for r in self._rows[start : start + limit]]

    async def read_stream(
        self,
        stream_id: str,
        *,
        after: int = 0,
        until_position: int | None = None,
        until_time: int | None = None,
        limit: int = 1000,
        exclude_types: frozenset[str] = frozenset(),
    ) -> list[RecordedEvent]:
        self._check_open()
        out = []
        for row in self._rows[bisect_right(self._positions, after) :]:
            if until_position is not None and row[0] > until_position:
                break
            if row[2] != stream_id or row[4] in exclude_types:
                continue
            if until_time is not None and row[6] > until_time:
                continue
            out.append(decode(row))
            if len(out) >= limit:
                break
        return out

    async def stream_head(self, stream_id: str) -> int:
        self._check_open()
        return self._heads.get(stream_id, 0)

    async def head(self) -> int:
        self._check_open()
        return self._positions[-1] if self._positions else 0

    async def known_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        self._check_open()
        return {i for i in ids if i in self._ids}

    async def read_slices(self, refs: Sequence[tuple[int, int, int]]) -> list[bytes]:
        self._check_open()
        out = []
        for position, offset, size in refs:
            i = bisect_right(self._positions, position) - 1
            if i < 0 or self._positions[i] != position:
                raise StoreError(f"no event at position {position}")
            out.append(self._rows[i][7][offset : offset + size])
        return out
