"""Downsampled metric series: equal-width step buckets, from chunk summaries where they can be."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray

from tracker import series
from tracker.errors import InvalidInputError
from tracker.projections.queries import INT64_MIN, Points, Queries
from tracker.stores.base import DOUBLE_MAX, Session
from tracker.stores.schema import metric_chunks
from tracker.validation import validate_int64

DEFAULT_BUCKETS: Final = 1000
MAX_BUCKETS: Final = 100_000
MAX_BUCKET_RUNS: Final = 1000
_PAGE: Final = 4096
"""Chunk summaries read per query."""
_FOLD_POINTS: Final = 1 << 20
_FOLD_SUMMARIES: Final = 1 << 16
"""Unpacked points and summaries held before they are reduced to one summary per bucket: what
bounds memory, whatever the length of the series."""

C: Final = metric_chunks
_RANGE: Final = sa.select(sa.func.min(C.c.min_step), sa.func.max(C.c.max_step)).where(
    C.c.run_id == sa.bindparam("rid"), C.c.metric_key == sa.bindparam("key")
)
# The first six columns are those of queries' chunk index, which its _chunk_points reads.
_SUMMARIES: Final = (
    sa.select(
        C.c.position, C.c.blob_offset, C.c.blob_size, C.c.n, C.c.min_step, C.c.first_ts,
        C.c.max_step, C.c.nan_count, C.c.first_step, C.c.first_value, C.c.last_step,
        C.c.last_ts, C.c.last_value, C.c.min_value,
        # A chunk of NaN only has no min or max: its first point stands in (see Summaries).
        sa.func.coalesce(C.c.min_value_step, C.c.first_step),
        sa.func.coalesce(C.c.min_value_ts, C.c.first_ts), C.c.max_value,
        sa.func.coalesce(C.c.max_value_step, C.c.first_step),
        sa.func.coalesce(C.c.max_value_ts, C.c.first_ts),
    )
    .where(
        C.c.run_id == sa.bindparam("rid"),
        C.c.metric_key == sa.bindparam("key"),
        C.c.max_step >= sa.bindparam("lo"),
        C.c.min_step <= sa.bindparam("hi"),
        sa.or_(
            C.c.min_step > sa.bindparam("after_min"),
            sa.and_(
                C.c.min_step == sa.bindparam("after_min"),
                C.c.position > sa.bindparam("after_pos"),
            ),
        ),
    )
    .order_by(C.c.min_step, C.c.position)
    .limit(sa.bindparam("limit"))
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetricBuckets:
    """One run's series of a key, downsampled: `buckets` (tracker.series.Buckets) holds one
    element per non-empty bucket of the `n` equal-width step ranges that split start_step to
    end_step (both included); each with its count and NaN count, and its first, last, min and
    max point (step, timestamp, value). start_step and end_step are None when no range was
    given and no run asked about has a point of the key."""

    run_id: str
    key: str
    start_step: int | None
    end_step: int | None
    n: int
    buckets: series.Buckets


def _check_buckets(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BUCKETS:
        raise InvalidInputError(
            f"buckets must be a whole number from 1 to {MAX_BUCKETS:,}, got {n!r}"
        )
    return n


async def metric_buckets(
    q: Queries, s: Session, run_ids: Sequence[str], key: str, *, start_step: int | None,
    end_step: int | None, buckets: int,
) -> list[MetricBuckets]:  # fmt: skip
    """Each run's points of `key` in buckets (see MetricBuckets), in the order of `run_ids`
    (repeats dropped). The range defaults, at either end, to the smallest or largest step any
    of the runs has, so that every run gets the same bucket bounds. A run without points there
    (or an unknown run) gets no buckets.

    Counts are of points as logged: a point logged twice with the same step, timestamp and
    value counts twice, though get_metric_history returns it once. A chunk of the log lying
    wholly inside one bucket is answered from its stored summary without unpacking it; the
    others are unpacked, and memory stays bounded by folding what was read into per-bucket
    summaries every _FOLD_POINTS points."""
    n = _check_buckets(buckets)
    for name, v in (("start_step", start_step), ("end_step", end_step)):
        if v is not None:
            validate_int64(name, v)
    ids = list(dict.fromkeys(run_ids))
    if len(ids) > MAX_BUCKET_RUNS:
        raise InvalidInputError(
            f"ask for at most {MAX_BUCKET_RUNS} runs at once, got {len(ids)}; split the list"
        )
    lo, hi = start_step, end_step
    if lo is None or hi is None:
        ranges = [await s.fetchall(_RANGE, {"rid": r, "key": key}) for r in ids]
        found = [(int(a), int(b)) for rows in ranges for a, b in rows if a is not None]
        if found:
            lo = min(a for a, _ in found) if lo is None else lo
            hi = max(b for _, b in found) if hi is None else hi
    if lo is None or hi is None:
        # No range given, and none of the runs has a point of the key: nothing to bucket.
        empty = series.buckets(*_concat([]), 0, 0, n)
        return [MetricBuckets(r, key, start_step, end_step, n, empty) for r in ids]
    if lo > hi:
        raise InvalidInputError(
            f"start_step ({lo}) is after end_step ({hi})"
            + ("" if start_step is not None and end_step is not None else
               ": the other end defaults to the series' own first or last step")
        )  # fmt: skip
    return [
        MetricBuckets(r, key, lo, hi, n, await _run_buckets(q, s, r, key, lo, hi, n)) for r in ids
    ]


async def _run_buckets(
    q: Queries, s: Session, run_id: str, key: str, lo: int, hi: int, n: int
) -> series.Buckets:
    lower = series.bucket_bounds(lo, hi, n)
    held: list[series.Summaries] = []
    loose: list[Points] = []
    points = chunks = 0
    after = (INT64_MIN, -1)
    while True:
        rows = await s.fetchall(
            _SUMMARIES,
            {"rid": run_id, "key": key, "lo": lo, "hi": hi, "after_min": after[0],
             "after_pos": after[1], "limit": _PAGE},
        )  # fmt: skip
        if not rows:
            break
        cols = list(zip(*rows, strict=True))
        min_step, max_step = _ints(cols[4]), _ints(cols[6])
        whole = (
            (min_step >= lo)
            & (max_step <= hi)
            & (
                np.searchsorted(lower, min_step, "right")
                == np.searchsorted(lower, max_step, "right")
            )
        )
        if whole.any():
            held.append(_summaries(q, cols, whole))
            chunks += len(held[-1])
        if not whole.all():
            for p in await q._chunk_points(
                s, run_id, key, [r[:6] for r, w in zip(rows, whole.tolist(), strict=True) if not w]
            ):
                loose.append(p)
                points += len(p)
        if points >= _FOLD_POINTS or chunks >= _FOLD_SUMMARIES:
            folded = series.buckets(*_concat(loose), lo, hi, n, summaries=_join(held))
            held, loose, points, chunks = [folded.summaries()], [], 0, len(folded)
        if len(rows) < _PAGE:
            break
        after = (int(rows[-1][4]), int(rows[-1][0]))
    return series.buckets(*_concat(loose), lo, hi, n, summaries=_join(held))


def _ints(col: Sequence[Any] | NDArray[Any]) -> series.Ints:
    return np.array(col, dtype=np.int64)


def _floats(q: Queries, col: Sequence[Any] | NDArray[Any]) -> series.Floats:
    """Stored values as floats, NULL (NaN) as NaN, and what the backend keeps for ±Inf
    decoded."""
    out = np.array(col, dtype=np.float64)  # numpy reads None as NaN
    clamped = np.abs(out) == DOUBLE_MAX
    if clamped.any():
        out[clamped] = [q.db.decode_float(v) for v in out[clamped].tolist()]
    return out


def _summaries(
    q: Queries, cols: list[tuple[Any, ...]], keep: NDArray[np.bool_]
) -> series.Summaries:
    """The rows of _SUMMARIES (as columns) where `keep` holds, as Summaries."""
    c = [np.asarray(col, dtype=object)[keep] for col in cols]

    def point(step: int, ts: int, value: int) -> series.Columns:
        return _ints(c[step]), _ints(c[ts]), _floats(q, c[value])

    return series.Summaries(
        _ints(c[3]), _ints(c[7]), _ints(c[4]), _ints(c[6]), point(8, 5, 9),
        point(10, 11, 12), point(14, 15, 13), point(17, 18, 16),
    )  # fmt: skip


def _join(parts: Sequence[series.Summaries]) -> series.Summaries:
    if len(parts) == 1:
        return parts[0]

    def cat(get: Any) -> Any:
        return np.concatenate([get(p) for p in parts]) if parts else np.empty(0, np.int64)

    def pts(name: str) -> series.Columns:
        return (cat(lambda p: getattr(p, name)[0]), cat(lambda p: getattr(p, name)[1]),
                cat(lambda p: getattr(p, name)[2]).astype(np.float64))  # fmt: skip

    return series.Summaries(
        cat(lambda p: p.n), cat(lambda p: p.nan_count), cat(lambda p: p.min_step),
        cat(lambda p: p.max_step), pts("first"), pts("last"), pts("min"), pts("max"),
    )  # fmt: skip


def _concat(parts: Sequence[Points]) -> series.Columns:
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
    if len(parts) == 1:
        return parts[0].steps, parts[0].timestamps, parts[0].values
    return (
        np.concatenate([p.steps for p in parts]),
        np.concatenate([p.timestamps for p in parts]),
        np.concatenate([p.values for p in parts]),
    )


def sample_history(points: Points, max_results: int) -> Points:
    """The points MLflow's get-history-bulk-interval returns from a run's history (in history
    order, within the asked steps): see tracker.series.ntile_sample."""
    at = series.ntile_sample(len(points), max_results)
    return Points(points.steps[at], points.timestamps[at], points.values[at])
