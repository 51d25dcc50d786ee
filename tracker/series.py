"""Columnar math on metric series: the latest point, chunk summaries, merged history, buckets."""

# Terms used throughout:
#
# - Columns: (steps, timestamps, values), 1-D numpy arrays of equal length, int64, int64 and
#   float64, one element per point.
# - History order: the order get_metric_history returns points in: by step, then timestamp,
#   then value, NaN after every number. Points that tie there (only -0.0 and 0.0, or NaNs with
#   different bit patterns, at one step and timestamp) are ordered by a fixed rule on their bit
#   patterns (see `_order_key`), so the history order of a set of points never depends on the
#   order the points were logged or read in. MLflow's `point_rank` order is this order with
#   those ties left open.

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, NamedTuple, TypeAlias

import numpy as np
from numpy.typing import NDArray

from tracker.errors import InvalidInputError

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]
Columns = tuple[Ints, Ints, Floats]
"""(steps, timestamps, values) of some points."""
ColumnLike: TypeAlias = "array[Any] | Sequence[Any] | NDArray[Any]"
"""What the column constructors accept: an array.array, a sequence of numbers, or an ndarray."""

_INT64: Final = np.dtype(np.int64)
_FLOAT64: Final = np.dtype(np.float64)
_I64_MIN: Final = -(1 << 63)
_I64_MAX: Final = (1 << 63) - 1
_SIGN: Final = np.uint64(1 << 63)
_NAN_SHIFT: Final = np.uint64((1 << 52) - 1)
_LOW32: Final = np.uint64(0xFFFF_FFFF)
_32: Final = np.uint64(32)


class Point(NamedTuple):
    """One point as Python numbers."""

    step: int
    timestamp: int
    value: float


def _column(data: ColumnLike, dtype: np.dtype[Any], kinds: str, what: str) -> NDArray[Any]:
    if (
        isinstance(data, array)
        and data.itemsize == dtype.itemsize
        and (data.typecode in ("q", "l") if dtype.kind == "i" else data.typecode == "d")
    ):
        # The buffer is shared, not copied: the array can no longer be resized (Python raises
        # BufferError), which is what keeps the series' view of it valid.
        arr = np.frombuffer(data, dtype=dtype) if len(data) else np.empty(0, dtype)
    elif isinstance(data, np.ndarray):
        arr = data
    else:
        try:
            arr = np.asarray(data)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError(f"{what}: cannot be read as numbers ({exc})") from exc
        if arr.size == 0 and arr.ndim == 1:
            arr = np.empty(0, dtype)  # an empty list reads as float64
    if arr.ndim != 1:
        raise InvalidInputError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind not in kinds or not np.can_cast(arr.dtype, dtype, "safe"):
        raise InvalidInputError(
            f"{what} must hold {dtype.name} numbers (convert them first), got {arr.dtype}"
        )
    return np.ascontiguousarray(arr, dtype=dtype)


def int_column(data: ColumnLike, what: str = "column") -> Ints:
    """`data` as a 1-D C-contiguous int64 array, sharing memory with an array('q') or an int64
    ndarray rather than copying it. Raises InvalidInputError naming `what` for anything that is
    not one-dimensional or does not fit int64 exactly (floats, uint64, big Python ints)."""
    return _column(data, _INT64, "iu", what)


def float_column(data: ColumnLike, what: str = "column") -> Floats:
    """`data` as a 1-D C-contiguous float64 array, sharing memory with an array('d') or a
    float64 ndarray. Integers are accepted and converted; NaN payloads are kept."""
    return _column(data, _FLOAT64, "iuf", what)


def columns(
    steps: ColumnLike, timestamps: ColumnLike, values: ColumnLike, what: str = "series"
) -> Columns:
    """The three columns converted (see int_column and float_column) and checked equal in
    length; raises InvalidInputError otherwise."""
    out = (
        int_column(steps, f"{what}: steps"),
        int_column(timestamps, f"{what}: timestamps"),
        float_column(values, f"{what}: values"),
    )
    if not len(out[0]) == len(out[1]) == len(out[2]):
        raise InvalidInputError(
            f"{what}: steps, timestamps and values differ in length "
            f"({len(out[0])}, {len(out[1])}, {len(out[2])})"
        )
    return out


def _order_key(values: Floats) -> NDArray[np.uint64]:
    """One uint64 per value, distinct for distinct bit patterns, ordered as values are in the
    history order: numbers by IEEE 754 totalOrder (so -0.0 just before 0.0), then every NaN."""
    bits = values.view(np.uint64)
    # totalOrder as unsigned integers: flip every bit of a negative, only the sign of a positive.
    flip = (values.view(np.int64) >> 63).view(np.uint64) | _SIGN
    # That puts negative NaNs below -Inf; rotating by their count (2**52 - 1) moves them above
    # positive NaNs, so that every NaN sorts last, as in MLflow.
    key: NDArray[np.uint64] = (bits ^ flip) - _NAN_SHIFT
    return key


def _pick(steps: Ints, timestamps: Ints, key: NDArray[Any], largest: bool) -> int:
    """Index of the first point that is smallest (or largest) by (step, timestamp, key)."""
    top = steps.max() if largest else steps.min()
    cand = np.flatnonzero(steps == top)
    if cand.size > 1:
        ts = timestamps[cand]
        cand = cand[ts == (ts.max() if largest else ts.min())]
        if cand.size > 1:
            k = key[cand]
            return int(cand[k.argmax() if largest else k.argmin()])
    return int(cand[0])


def latest(steps: Ints, timestamps: Ints, values: Floats) -> int:
    """Index of the point MLflow reports as a run's latest value of a key: the largest
    (step, timestamp, value), NaN ranking above every number; of points that tie (-0.0 and
    0.0, or NaNs), the first. This is the index of `max(points, key=events.point_rank)`.
    Raises ValueError on empty columns."""
    if not len(steps):
        raise ValueError("latest() of an empty series")
    top = steps.max()
    cand = np.flatnonzero(steps == top)
    if cand.size > 1:
        ts = timestamps[cand]
        cand = cand[ts == ts.max()]
        if cand.size > 1:
            v = values[cand]
            nan = np.isnan(v)
            return int(cand[nan.argmax() if nan.any() else v.argmax()])
    return int(cand[0])


def _without_nan(values: Floats, nan: NDArray[np.bool_], low: Any, high: Any) -> tuple[Any, Any]:
    """low and high (reductions such as np.min, or partial(np.minimum.reduceat, ...)) of the
    values with NaN left out: +Inf and -Inf stand in for it, and match no NaN afterwards."""
    # Not np.fmin/np.nanmin: they skip quiet NaNs but return a signalling NaN as the minimum.
    if not nan.any():
        return low(values), high(values)
    return low(np.where(nan, np.inf, values)), high(np.where(nan, -np.inf, values))


@dataclass(frozen=True, slots=True)
class Summary:
    """Statistics of a set of points (a chunk as stored), enough to answer any bucket that holds
    the whole chunk without unpacking it (see `buckets`).

    - `n`: points, duplicates included; `nan_count`: how many of them are NaN.
    - `min_step`, `max_step`: the smallest and largest step.
    - `first`, `last`: the first and last point in history order (NaN included: a NaN point can
      be either, and ranks after numbers at its step and timestamp).
    - `min`, `max`: the point with the smallest and the largest value, NaN excluded and ±Inf
      included (-0.0 and 0.0 count as equal); of points with that value, the first in history
      order. None when every point is NaN.
    """

    n: int
    nan_count: int
    min_step: int
    max_step: int
    first: Point
    last: Point
    min: Point | None
    max: Point | None


def _point(steps: Ints, timestamps: Ints, values: Floats, i: int) -> Point:
    return Point(int(steps[i]), int(timestamps[i]), float(values[i]))


@dataclass(frozen=True, slots=True)
class Summaries:
    """The Summary of many chunks as columns, one element per chunk (what `buckets` takes
    from a store without building a Summary per chunk): `n`, `nan_count`, `min_step`,
    `max_step`, and the `first`, `last`, `min` and `max` points. A chunk whose points are all
    NaN has its first point as min and max."""

    n: Ints
    nan_count: Ints
    min_step: Ints
    max_step: Ints
    first: Columns
    last: Columns
    min: Columns
    max: Columns

    def __len__(self) -> int:
        return len(self.n)

    @classmethod
    def of(cls, items: Iterable[Summary]) -> Summaries:
        """The columns of Summary objects."""
        chunks = list(items)

        def ints(name: str) -> Ints:
            return int_column([getattr(s, name) for s in chunks], f"summary {name}")

        def pts(name: str) -> Columns:
            ps = [getattr(s, name) or s.first for s in chunks]
            return columns([p.step for p in ps], [p.timestamp for p in ps],
                           [p.value for p in ps], what=f"summary {name}")  # fmt: skip

        return cls(ints("n"), ints("nan_count"), ints("min_step"), ints("max_step"),
                   pts("first"), pts("last"), pts("min"), pts("max"))  # fmt: skip


def summary(steps: Ints, timestamps: Ints, values: Floats) -> Summary:
    """The Summary of non-empty columns, in one vectorised pass over each (points may be in any
    order). Raises ValueError on empty columns."""
    n = len(steps)
    if not n:
        raise ValueError("summary() of an empty series")
    key = _order_key(values)
    first = _point(steps, timestamps, values, _pick(steps, timestamps, key, largest=False))
    last = _point(steps, timestamps, values, _pick(steps, timestamps, key, largest=True))
    nan = np.isnan(values)
    nan_count = int(np.count_nonzero(nan))
    extremes: list[Point | None] = [None, None]
    if nan_count < n:
        for j, best in enumerate(_without_nan(values, nan, np.min, np.max)):
            cand = np.flatnonzero(values == best)  # never a NaN: NaN equals nothing
            i = cand[_pick(steps[cand], timestamps[cand], key[cand], largest=False)]
            extremes[j] = _point(steps, timestamps, values, int(i))
    return Summary(n, nan_count, first.step, last.step, first, last, extremes[0], extremes[1])


def _sort_runs(order: Ints, groups: tuple[NDArray[Any], ...], by: NDArray[np.uint64]) -> Ints:
    """`order`, with each run of consecutive points equal in every `groups` column sorted by
    `by` (all three indexed by point, not by position in `order`)."""
    n = len(order)
    eq = np.ones(n - 1, dtype=bool)
    for g in groups:
        in_order = g[order]
        eq &= in_order[1:] == in_order[:-1]
    if not eq.any():
        return order
    tied = np.zeros(n, dtype=bool)
    tied[1:] = eq
    tied[:-1] |= eq
    at = np.flatnonzero(tied)  # whole runs, in order
    sub = order[at]
    new_run = np.ones(len(at), dtype=bool)
    new_run[1:] = ~eq[at[1:] - 1]
    b = by[sub]
    if ((b[1:] >= b[:-1]) | new_run[1:]).all():
        return order
    b = b - b.min()
    if b.max() > _LOW32 or len(at) > _LOW32:
        # No room beside a run number: sort by the high 32 bits, then by the low 32 bits
        # within runs that share the high ones.
        hi, lo = np.zeros_like(by), np.zeros_like(by)
        hi[sub], lo[sub] = b >> _32, b & _LOW32
        return _sort_runs(_sort_runs(order, groups, hi), (*groups, hi), lo)
    # One stable sort of (run number, by) packed in 64 bits: several times faster than
    # np.lexsort, and fast on runs that are nearly in order already.
    run = (np.cumsum(new_run) - 1).astype(np.uint64)
    order[at] = sub[np.argsort((run << _32) | b, kind="stable")]
    return order


def _history_order(steps: Ints, timestamps: Ints, key: NDArray[np.uint64]) -> Ints | None:
    """A permutation that puts the points in history order (equal points next to each other),
    or None when they already are."""
    n = len(steps)
    if n < 2:
        return None
    after = steps[1:] > steps[:-1]
    if after.all():
        return None  # the common case: one point per step, logged in order
    same = np.flatnonzero(steps[1:] == steps[:-1])
    if same.size + np.count_nonzero(after) == n - 1:
        t0, t1 = timestamps[same], timestamps[same + 1]
        if ((t1 > t0) | ((t1 == t0) & (key[same + 1] >= key[same]))).all():
            return None
    # By step first (chunks come as sorted runs, which a stable sort merges quickly), then by
    # timestamp and by value only where points tie on what came before.
    order: Ints = np.argsort(steps, kind="stable")
    order = _sort_runs(order, (steps,), timestamps.view(np.uint64) ^ _SIGN)
    return _sort_runs(order, (steps, timestamps), key)


def merge(chunks: Iterable[tuple[Any, Any, Any]]) -> Columns:
    """One set of columns from many (steps, timestamps, values) chunks, in history order (by
    step, timestamp and value, NaN last within an equal step and timestamp; see the module
    comment for the tie rule), with exact duplicates (equal step, timestamp and value bits)
    dropped: the points `get_metric_history` returns, in its order. Chunks may overlap and
    come in any order; columns of unequal length raise InvalidInputError. Already-ordered input
    (one point per step, chunks in step order) costs one comparison pass."""
    parts = [columns(*c, what=f"chunk {i}") for i, c in enumerate(chunks)]
    if not parts:
        return np.empty(0, _INT64), np.empty(0, _INT64), np.empty(0, _FLOAT64)
    steps, timestamps, values = (np.concatenate([p[j] for p in parts]) for j in range(3))
    if len(steps) < 2 or (steps[1:] > steps[:-1]).all():
        return steps, timestamps, values  # one point per step, in order: nothing to do
    key = _order_key(values)
    order = _history_order(steps, timestamps, key)
    if order is not None:
        steps, timestamps, values, key = steps[order], timestamps[order], values[order], key[order]
    keep = np.ones(len(steps), dtype=bool)
    keep[1:] = (
        (steps[1:] != steps[:-1]) | (timestamps[1:] != timestamps[:-1]) | (key[1:] != key[:-1])
    )
    if keep.all():
        return steps, timestamps, values
    return steps[keep], timestamps[keep], values[keep]


def _bucket_count(start_step: int, end_step: int, n: int) -> tuple[int, int]:
    for name, v in (("start_step", start_step), ("end_step", end_step)):
        if not _I64_MIN <= v <= _I64_MAX:
            raise InvalidInputError(f"{name} must be a 64-bit signed integer, got {v}")
    if start_step > end_step:
        raise InvalidInputError(f"start_step ({start_step}) is after end_step ({end_step})")
    if n < 1:
        raise InvalidInputError(f"the number of buckets must be at least 1, got {n}")
    width = end_step - start_step + 1
    return width, min(n, width)


def bucket_bounds(start_step: int, end_step: int, n: int) -> Ints:
    """Lower bounds of the buckets that split the steps start_step..end_step (both included)
    into min(n, end_step - start_step + 1) ranges of near-equal width (widths differ by at most
    one): bucket i holds steps lower[i] to lower[i + 1] - 1, the last one up to end_step. Every
    step of the range is in exactly one bucket and every bucket holds at least one step.
    Raises InvalidInputError for n < 1, start_step > end_step, or bounds outside int64."""
    width, m = _bucket_count(start_step, end_step, n)
    if width * m <= _I64_MAX:
        lower: Ints = start_step + (np.arange(m, dtype=np.int64) * width) // m
        return lower
    # i * width overflows int64 for ranges this wide; Python ints do not.
    return np.array([start_step + i * width // m for i in range(m)], dtype=np.int64)


def bucket_of(start_step: int, end_step: int, n: int, step: int) -> int | None:
    """The index of the bucket (see bucket_bounds) that holds `step`, or None outside the
    range; O(1), without building the bounds."""
    width, m = _bucket_count(start_step, end_step, n)
    if not start_step <= step <= end_step:
        return None
    # The largest i with start_step + i * width // m <= step.
    return ((step - start_step + 1) * m - 1) // width


def bucket_holding(
    start_step: int, end_step: int, n: int, min_step: int, max_step: int
) -> int | None:
    """The bucket that holds every step from min_step to max_step (a stored chunk's range), or
    None when that range crosses a bucket boundary or leaves start_step..end_step: a chunk with
    an index here can be answered from its Summary (pass it to `buckets`), any other chunk must
    be unpacked and its points passed instead."""
    lo = bucket_of(start_step, end_step, n, min_step)
    return lo if lo is not None and lo == bucket_of(start_step, end_step, n, max_step) else None


@dataclass(frozen=True, slots=True)
class Buckets:
    """Per non-empty bucket, in step order, one element of each column (all of equal length).

    - `index`: the bucket's number in bucket_bounds; `lower`, `upper`: its steps (inclusive).
    - `count`, `nan_count`: points in it, duplicates included, and how many are NaN.
    - `first`, `last`: its first and last point in history order (NaN points included).
    - `min`, `max`: its points with the smallest and largest value, as in Summary (NaN
      excluded, ±Inf included, ties to the first in history order). In a bucket whose points
      are all NaN (count == nan_count) both are its first point, so the value is NaN: draw a
      gap there.
    """

    index: Ints
    lower: Ints
    upper: Ints
    count: Ints
    nan_count: Ints
    first: Columns
    last: Columns
    min: Columns
    max: Columns

    def __len__(self) -> int:
        return len(self.index)

    def summaries(self) -> Summaries:
        """The buckets as chunk summaries, so that a partial result can be passed back to
        `buckets` with more points: each spans the steps of its first and last point."""
        return Summaries(self.count, self.nan_count, self.first[0], self.last[0], self.first,
                         self.last, self.min, self.max)  # fmt: skip


def _reduce(steps: Ints, timestamps: Ints, values: Floats, lower: Ints, end_step: int) -> Buckets:
    """Buckets of points in history order, all inside the range."""
    if not len(steps):
        empty = steps[:0], timestamps[:0], values[:0]
        none = np.empty(0, dtype=np.int64)
        return Buckets(none, none, none, none, none, empty, empty, empty, empty)
    edges = np.searchsorted(steps, lower, side="left")
    sizes = np.diff(edges, append=len(steps))
    filled = np.flatnonzero(sizes)
    starts, sizes = edges[filled], sizes[filled]
    upper = np.append(lower[1:] - 1, np.int64(end_step))[filled]
    ends = starts + sizes - 1
    nan = np.isnan(values)
    nan_count = np.add.reduceat(nan, starts, dtype=np.int64)
    index = np.arange(len(values), dtype=np.int64)
    picks = []
    lows, highs = _without_nan(values, nan, partial(np.minimum.reduceat, indices=starts),
                               partial(np.maximum.reduceat, indices=starts))  # fmt: skip
    for best in (lows, highs):
        hit = np.where(values == np.repeat(best, sizes), index, len(values))
        at = np.minimum.reduceat(hit, starts)
        picks.append(np.where(at == len(values), starts, at))  # all NaN: the first point

    def cols(i: Ints) -> Columns:
        return steps[i], timestamps[i], values[i]

    return Buckets(filled.astype(np.int64), lower[filled], upper, sizes.astype(np.int64),
                   nan_count, cols(starts), cols(ends), cols(picks[0]), cols(picks[1]))  # fmt: skip


def buckets(
    steps: Ints,
    timestamps: Ints,
    values: Floats,
    start_step: int,
    end_step: int,
    n: int,
    *,
    summaries: Iterable[Summary] | Summaries = (),
) -> Buckets:
    """Downsample for a chart: split start_step..end_step (both included) into the buckets of
    bucket_bounds(start_step, end_step, n) and describe each non-empty one by its count, NaN
    count, and its first, last, min and max points (see Buckets), so that a chart of any length
    keeps every spike and both ends.

    Points may come in any order; those outside the range are ignored; duplicates are counted
    as given. `summaries` (Summary objects, or Summaries) adds chunks whose points are not
    passed: each must lie wholly in one bucket (bucket_holding is not None, else
    InvalidInputError), and the result is exactly the one its points would give. Points already in history order cost a few vectorised passes;
    others are sorted first (see merge)."""
    steps, timestamps, values = columns(steps, timestamps, values, what="buckets")
    lower = bucket_bounds(start_step, end_step, n)
    inside = (steps >= start_step) & (steps <= end_step)
    if not inside.all():
        steps, timestamps, values = steps[inside], timestamps[inside], values[inside]
    order = _history_order(steps, timestamps, _order_key(values))
    if order is not None:
        steps, timestamps, values = steps[order], timestamps[order], values[order]
    out = _reduce(steps, timestamps, values, lower, end_step)
    chunks = summaries if isinstance(summaries, Summaries) else Summaries.of(summaries)
    if not len(chunks):
        return out
    counts = np.zeros(len(lower), dtype=np.int64)
    nans = np.zeros(len(lower), dtype=np.int64)
    counts[out.index], nans[out.index] = out.count, out.nan_count
    # The bucket of each summary's first and last step, for all of them at once.
    lo_at = np.searchsorted(lower, chunks.min_step, side="right") - 1
    hi_at = np.searchsorted(lower, chunks.max_step, side="right") - 1
    bad = (chunks.min_step < start_step) | (chunks.max_step > end_step) | (lo_at != hi_at)
    if bad.any():
        i = int(bad.argmax())
        raise InvalidInputError(
            f"a summary of steps {chunks.min_step[i]}..{chunks.max_step[i]} does not lie "
            f"inside one bucket of {start_step}..{end_step} in {n}: unpack that chunk and "
            "pass its points"
        )
    np.add.at(counts, lo_at, chunks.n)
    np.add.at(nans, lo_at, chunks.nan_count)
    # The union's first, last, min and max are among the parts' own: reduce those candidates.
    cand = [out.first, out.last, out.min, out.max, chunks.first, chunks.last, chunks.min,
            chunks.max]  # fmt: skip
    cs, ct, cv = (np.concatenate([c[j] for c in cand]) for j in range(3))
    order = _history_order(cs, ct, _order_key(cv))
    if order is not None:
        cs, ct, cv = cs[order], ct[order], cv[order]
    out = _reduce(cs, ct, cv, lower, end_step)
    return Buckets(out.index, out.lower, out.upper, counts[out.index], nans[out.index],
                   out.first, out.last, out.min, out.max)  # fmt: skip


def ntile_sample(total: int, max_results: int) -> Ints:
    """Indices of the points MLflow's SQL store returns from `total` points in history order
    when asked for at most `max_results` (get-history-bulk-interval): NTILE(max_results) over
    the points, the first point of each tile, and the last point, which replaces the final
    sample when there are max_results already. Increasing; every point when total <=
    max_results; only the last when max_results is 1."""
    if max_results < 1:
        raise InvalidInputError(f"max_results must be at least 1, got {max_results}")
    if total <= 0:
        return np.empty(0, dtype=np.int64)
    if total <= max_results:
        return np.arange(total, dtype=np.int64)
    # NTILE gives the first total % m tiles one point more than the others.
    q, r = divmod(total, max_results)
    tiles = np.arange(max_results, dtype=np.int64)
    picks: Ints = tiles * q + np.minimum(tiles, r)
    if picks[-1] != total - 1:
        picks[-1] = total - 1
    return picks
