"""The metrics projection: each run's latest values, and an index of its packed points in the log."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Final

import sqlalchemy as sa

from tracker import series
from tracker.events import EVENT_TYPES, MetricSeries, MetricsLogged, RecordedEvent, point_rank
from tracker.projections.base import Context, Projection, handles
from tracker.serialization import metric_layout, serialize
from tracker.stores.schema import latest_metrics, metric_chunks
from tracker.stores.sql import insert

L: Final = latest_metrics
_LATEST_CACHE_RUNS: Final = 10_000
_LOAD_LATEST: Final = sa.select(
    L.c.metric_key, L.c.metric_value, L.c.is_nan, L.c.ts, L.c.step
).where(L.c.run_id == sa.bindparam("rid"))

# A latest-metric entry: (rank, value, timestamp, step); rank orders entries as MLflow does.
Latest = tuple[tuple[int, int, int, float], float, int, int]


def latest_of(s: MetricSeries) -> Latest:
    """The point MLflow calls latest: the largest (step, timestamp, value), NaN above all."""
    step, ts, value = s.latest()
    return point_rank((step, ts, value)), value, ts, step


def chunk_summary(s: MetricSeries) -> dict[str, Any]:
    """Step range, count, and the points a chart needs to draw the chunk without unpacking it:
    its smallest and largest value (NaN excluded, counted apart) and its first and last point
    in history order (see tracker.series.summary)."""
    sm = series.summary(s.steps, s.timestamps, s.values)
    return {
        "n": sm.n, "min_step": sm.min_step, "max_step": sm.max_step, "nan_count": sm.nan_count,
        "min_value": None if sm.min is None else sm.min.value,
        "min_value_step": None if sm.min is None else sm.min.step,
        "min_value_ts": None if sm.min is None else sm.min.timestamp,
        "max_value": None if sm.max is None else sm.max.value,
        "max_value_step": None if sm.max is None else sm.max.step,
        "max_value_ts": None if sm.max is None else sm.max.timestamp,
        "first_step": sm.first.step, "first_ts": sm.first.timestamp,
        "first_value": _or_none(sm.first.value),
        "last_step": sm.last.step, "last_ts": sm.last.timestamp,
        "last_value": _or_none(sm.last.value),
    }  # fmt: skip


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


class MetricsProjection(Projection):
    """Latest values per (run, key), and per logged chunk of points: where its packed bytes lie
    in the log event that holds them, its step range and summary. Points are stored once, in
    the log; history reads slice them out of it."""

    name = "metrics"
    # 2: chunk summaries name their min and max points' timestamps (tracker.series.Summary).
    # 3: latest_metrics indexed by (metric_key, metric_value) for searches.
    version = 3
    tables = (latest_metrics, metric_chunks)
    ignores = frozenset(t for t in EVENT_TYPES.values() if t is not MetricsLogged)

    def __init__(self) -> None:
        self._latest: OrderedDict[str, dict[str, Latest]] = OrderedDict()
        self._touched: dict[tuple[str, str], Latest] = {}

    def reset(self) -> None:
        self._latest.clear()
        self._touched.clear()

    async def _load_latest(self, ctx: Context, run_id: str) -> dict[str, Latest]:
        cached = self._latest.get(run_id)
        if cached is not None:
            self._latest.move_to_end(run_id)
            return cached
        while len(self._latest) >= _LATEST_CACHE_RUNS:
            self._latest.popitem(last=False)
        out: dict[str, Latest] = {}
        for key, value, nan, ts, step in await ctx.fetchall(_LOAD_LATEST, {"rid": run_id}):
            step, ts = int(step), int(ts)
            if nan:
                out[key] = ((step, ts, 1, 0.0), math.nan, ts, step)
            else:
                v = ctx.database.decode_float(float(value))
                out[key] = ((step, ts, 0, v), v, ts, step)
        self._latest[run_id] = out
        return out

    @handles(MetricsLogged)
    async def _logged(self, ctx: Context, rec: RecordedEvent, e: MetricsLogged) -> None:
        payload = rec.payload if rec.payload is not None else serialize(e)[2]
        _, layout = metric_layout(payload)
        latest = await self._load_latest(ctx, e.run_id)
        chunks = insert(metric_chunks)
        for s, (key, count, offset, size) in zip(e.series, layout, strict=True):
            if not count:
                continue
            summary = chunk_summary(s)
            for col in ("min_value", "max_value", "first_value", "last_value"):
                if summary[col] is not None:
                    summary[col] = ctx.float(summary[col])
            ctx.write(
                chunks,
                {"run_id": e.run_id, "metric_key": key, "position": rec.position,
                 "blob_offset": offset, "blob_size": size, **summary},
            )  # fmt: skip
            cand = latest_of(s)
            cur = latest.get(key)
            if cur is None or cand[0] > cur[0]:
                latest[key] = cand
                self._touched[(e.run_id, key)] = cand

    async def finish(self, ctx: Context) -> None:
        statement = ctx.upsert(L)
        for (run_id, key), (rank, value, ts, step) in self._touched.items():
            nan = rank[2]
            ctx.write(
                statement,
                {"run_id": run_id, "metric_key": key,
                 "metric_value": None if nan else ctx.float(value), "is_nan": nan, "ts": ts,
                 "step": step},
            )  # fmt: skip
        self._touched.clear()
