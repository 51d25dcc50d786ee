"""Columnar series math against pure-Python references: latest, summary, merge, buckets."""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_packing import I64_MAX, I64_MIN, VALUES, from_bits, to_bits
from tracker.errors import InvalidInputError
from tracker.events import point_rank
from tracker.series import (
    Buckets,
    Columns,
    Point,
    Summary,
    bucket_bounds,
    bucket_holding,
    bucket_of,
    buckets,
    latest,
    merge,
    summary,
)

Pt = tuple[int, int, float]
NEAR = st.integers(-2, 2)
"""Steps and timestamps from a small range, so that points often share them."""
POINTS = st.one_of(
    st.lists(st.tuples(NEAR, NEAR, VALUES), min_size=1, max_size=30),
    st.lists(
        st.tuples(NEAR, st.one_of(NEAR, st.integers(I64_MIN, I64_MAX)), VALUES),
        min_size=1,
        max_size=30,
    ),
    st.lists(
        st.tuples(st.one_of(NEAR, st.integers(I64_MIN, I64_MAX)), NEAR, VALUES),
        min_size=1,
        max_size=30,
    ),
)
"""Points that often share steps and timestamps, and points with steps or timestamps anywhere
in int64."""
TIES = st.sampled_from(
    [0.0, -0.0, math.nan, from_bits(0xFFF8_0000_0000_0000), from_bits(0x7FF0_0000_0000_0001)]
)
WIDE = st.sampled_from([I64_MIN, -1, 0, 1 << 40, I64_MAX])
TIE_POINTS = st.lists(
    st.tuples(NEAR, st.one_of(NEAR, WIDE), st.one_of(VALUES, TIES, TIES)), min_size=1, max_size=30
)
"""Points whose values often tie in point_rank without being equal: ±0.0 and NaNs."""


def cols(points: list[Pt]) -> Columns:
    return (
        np.array([p[0] for p in points], dtype=np.int64),
        np.array([p[1] for p in points], dtype=np.int64),
        np.array([p[2] for p in points], dtype=np.float64),
    )


def exact(p: Pt) -> tuple[int, int, int]:
    """A point with its value as bits, so that NaN compares equal to itself."""
    return p[0], p[1], to_bits(p[2])


def as_points(c: Columns) -> list[Pt]:
    return list(zip(c[0].tolist(), c[1].tolist(), c[2].tolist(), strict=True))


def test_latest_is_the_max_by_point_rank() -> None:
    """latest() is the index max(points, key=point_rank) returns: NaN above numbers, the first
    of tied points."""
    seen: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None)
    @given(st.one_of(POINTS, TIE_POINTS))
    def check(points: list[Pt]) -> None:
        expected = max(range(len(points)), key=lambda i: point_rank(points[i]))
        assert latest(*cols(points)) == expected
        top = [p for p in points if p[:2] == points[expected][:2]]
        seen["tied at the top"] += len(top) > 1
        seen["NaN on top"] += math.isnan(points[expected][2]) and len(top) > 1

    check()
    assert seen["tied at the top"] >= 25 and seen["NaN on top"] >= 8, seen


def check_extreme(point: Any, points: list[Pt], smallest: bool) -> None:
    """`point` has the smallest (largest) non-NaN value and, of those, the first step and time."""
    numbers = [p for p in points if not math.isnan(p[2])]
    if not numbers:
        assert point is None
        return
    best = (min if smallest else max)(p[2] for p in numbers)
    assert point.value == best
    assert (point.step, point.timestamp) == min(p[:2] for p in numbers if p[2] == best)


def test_summary_states_its_points() -> None:
    """A summary's counts, step range, endpoints and extremes are those of its points, and do
    not depend on the order the points come in."""
    seen: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None)
    @given(POINTS, st.randoms(use_true_random=False))
    def check(points: list[Pt], rnd: random.Random) -> None:
        s = summary(*cols(points))
        ranks = sorted(point_rank(p) for p in points)
        assert s.n == len(points)
        assert s.nan_count == sum(math.isnan(p[2]) for p in points)
        assert (s.min_step, s.max_step) == (ranks[0][0], ranks[-1][0])
        assert point_rank(s.first) == ranks[0] and point_rank(s.last) == ranks[-1]
        assert exact(s.first) in {exact(p) for p in points}
        assert exact(s.last) in {exact(p) for p in points}
        check_extreme(s.min, points, smallest=True)
        check_extreme(s.max, points, smallest=False)
        shuffled = points[:]
        rnd.shuffle(shuffled)
        assert same_summary(summary(*cols(shuffled)), s)
        seen["NaN and numbers"] += 0 < s.nan_count < s.n
        seen["all NaN"] += s.nan_count == s.n
        seen["tied endpoints"] += ranks[0] == ranks[1] if len(ranks) > 1 else 0

    check()
    assert seen["NaN and numbers"] >= 80 and seen["all NaN"] >= 5, seen
    assert seen["tied endpoints"] >= 15, seen


def same_summary(a: Summary, b: Summary) -> bool:
    def key(s: Summary) -> tuple[Any, ...]:
        pts = (s.first, s.last, s.min, s.max)
        return (s.n, s.nan_count, s.min_step, s.max_step, *(p and exact(p) for p in pts))

    return key(a) == key(b)


def test_merge_is_a_sort_and_dedupe_by_point_rank() -> None:
    """merge() returns every distinct point (by value bits) once, ordered by point_rank, in an
    order that does not depend on how the points were chunked or ordered."""
    seen: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None)
    @given(TIE_POINTS, st.lists(st.integers(0, 29), max_size=40), st.randoms(use_true_random=False))
    def check(pool: list[Pt], picks: list[int], rnd: random.Random) -> None:
        points = pool + [pool[i % len(pool)] for i in picks]  # duplicates, some of them
        rnd.shuffle(points)
        cuts = sorted(rnd.sample(range(len(points) + 1), min(3, len(points) + 1)))
        chunks = [cols(points[a:b]) for a, b in zip([0, *cuts], [*cuts, len(points)], strict=True)]
        merged = as_points(merge(chunks))
        check_merged(merged, points)
        again = as_points(merge([cols(points[::-1])]))
        assert [exact(p) for p in again] == [exact(p) for p in merged]
        seen["duplicates dropped"] += len(points) > len(merged)
        ranks = [point_rank(p) for p in merged]
        seen["equal ranks kept apart"] += len(set(ranks)) < len(ranks)

    check()
    assert seen["duplicates dropped"] >= 150 and seen["equal ranks kept apart"] >= 15, seen


def check_merged(merged: list[Pt], points: list[Pt]) -> None:
    """`merged` holds each distinct point once, ordered by point_rank."""
    distinct = {exact(p): p for p in points}
    assert len(merged) == len(distinct)
    assert {exact(p) for p in merged} == set(distinct)
    assert [point_rank(p) for p in merged] == sorted(point_rank(p) for p in distinct.values())


@pytest.mark.parametrize(
    "shape", ["step 0, ms clock", "steps twice", "wide timestamps", "few values", "random"]
)
def test_merge_sorts_large_series_with_many_ties(shape: str) -> None:
    """Thousands of points tied on step, on timestamp, or on both (the sorts that pack a run
    number beside a column) merge to the point_rank order of their distinct points."""
    rng = np.random.default_rng(sum(map(ord, shape)))
    n = 20_000
    steps = np.zeros(n, dtype=np.int64)
    stamps = 1_700_000_000_000 + np.cumsum(rng.integers(0, 3, n))
    values = rng.random(n)
    if shape == "steps twice":
        steps = np.concatenate([np.arange(n // 2)] * 2)
    elif shape == "wide timestamps":
        stamps = rng.choice([I64_MIN, -5, 0, 1 << 40, I64_MAX], n)
    elif shape == "few values":
        values = rng.choice(
            [0.0, -0.0, math.nan, -math.inf, 1.0, from_bits(0xFFF8_0000_0000_0001)], n
        )
    elif shape == "random":
        steps = rng.integers(I64_MIN, I64_MAX, n, endpoint=True)
        stamps = rng.integers(-3, 3, n)
        steps[rng.random(n) < 0.5] = 7
    points = as_points((steps, stamps, values))
    check_merged(as_points(merge(chunks_of(points, 4096))), points)


def chunks_of(points: list[Pt], size: int) -> list[Columns]:
    return [cols(points[i : i + size]) for i in range(0, len(points), size)]


def test_merge_orders_points_that_tie_by_a_fixed_rule() -> None:
    """At one step and timestamp: numbers ascending with -0.0 before 0.0, then NaNs, whatever
    their sign; chunks in order come back as they are, and nothing in is nothing out."""
    neg_nan = from_bits(0xFFF8_0000_0000_0000)
    got = merge([([1, 0, 0, 0, 0, 0], [0, 5, 5, 5, 5, 5], [1.0, neg_nan, math.inf, 0.0, math.nan, -0.0])])  # fmt: skip
    assert got[0].tolist() == [0, 0, 0, 0, 0, 1]
    assert [to_bits(v) for v in got[2][:2]] == [to_bits(-0.0), to_bits(0.0)]
    assert got[2][2] == math.inf and np.isnan(got[2][3:5]).all() and got[2][5] == 1.0
    steps = np.arange(40_000)
    parts = [(steps[i : i + 16_384], steps[i : i + 16_384], steps[i : i + 16_384] / 3) for i in range(0, 40_000, 16_384)]  # fmt: skip
    whole = merge(parts)
    assert whole[0].tolist() == steps.tolist() and whole[2].tolist() == (steps / 3).tolist()
    assert [len(c) for c in merge([])] == [0, 0, 0]


def test_merge_refuses_chunks_of_unequal_columns() -> None:
    """A chunk whose columns differ in length raises InvalidInputError naming the chunk."""
    with pytest.raises(InvalidInputError, match="chunk 1: steps, timestamps and values differ"):
        merge([([1], [1], [1.0]), ([1, 2], [1], [1.0])])


RANGES = st.one_of(
    st.tuples(st.integers(-50, 50), st.integers(0, 100)),
    st.tuples(st.integers(I64_MIN, -(1 << 62)), st.integers(1 << 62, (1 << 64) - 1)),
    st.tuples(st.integers(I64_MIN, I64_MAX), st.integers(0, (1 << 64) - 1)),
    st.just((I64_MIN, (1 << 64) - 1)),
)
"""(start, width - 1) of a bucket range: small ones, wide ones, and all of int64."""


def test_bucket_bounds_cover_the_range_exactly() -> None:
    """Buckets are min(n, width) non-empty step ranges, adjacent, of near-equal width, from
    start_step to end_step; bucket_of agrees with them for any step."""
    seen: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None)
    @given(RANGES, st.integers(1, 60), st.lists(st.integers(I64_MIN, I64_MAX), max_size=10))
    def check(r: tuple[int, int], n: int, probes: list[int]) -> None:
        start, end = r[0], min(r[0] + r[1], I64_MAX)
        lower = bucket_bounds(start, end, n).tolist()
        upper = [b - 1 for b in lower[1:]] + [end]
        width = end - start + 1
        assert len(lower) == min(n, width) and lower[0] == start
        assert all(lo <= hi for lo, hi in zip(lower, upper, strict=True))
        widths = {hi - lo + 1 for lo, hi in zip(lower, upper, strict=True)}
        assert max(widths) - min(widths) <= 1
        assert sum(hi - lo + 1 for lo, hi in zip(lower, upper, strict=True)) == width
        for step in [*probes, start, end, *lower, *upper, start - 1, end + 1]:
            expected = bisect.bisect_right(lower, step) - 1 if start <= step <= end else None
            assert bucket_of(start, end, n, step) == expected
        seen["wider than int64 arithmetic"] += width * len(lower) > I64_MAX
        seen["more buckets than steps"] += n > width

    check()
    assert seen["wider than int64 arithmetic"] >= 60 and seen["more buckets than steps"] >= 8, seen


@st.composite
def charts(draw: st.DrawFn) -> tuple[list[Pt], int, int, int]:
    start = draw(st.integers(-30, 30))
    end = start + draw(st.integers(0, 60))
    steps = st.integers(start - 5, end + 5)
    points = draw(st.lists(st.tuples(steps, NEAR, VALUES), min_size=1, max_size=60))
    return points, start, end, draw(st.integers(1, 12))


def test_buckets_keep_extremes_and_endpoints() -> None:
    """Per non-empty bucket: the count and NaN count, the first and last point in point_rank
    order, and the min and max values (NaN excluded; all NaN gives the first point); the range's
    global min and max are always among them."""
    seen: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None)
    @given(charts())
    def check(chart: tuple[list[Pt], int, int, int]) -> None:
        points, start, end, n = chart
        out = buckets(*cols(points), start, end, n)
        lower = bucket_bounds(start, end, n).tolist()
        groups: dict[int, list[Pt]] = {}
        for p in points:
            if start <= p[0] <= end:
                groups.setdefault(bisect.bisect_right(lower, p[0]) - 1, []).append(p)
        assert out.index.tolist() == sorted(groups)
        for j, b in enumerate(out.index.tolist()):
            group = groups[b]
            assert out.lower[j] == lower[b] and out.upper[j] == [*lower, end + 1][b + 1] - 1
            assert out.count[j] == len(group)
            assert out.nan_count[j] == sum(math.isnan(p[2]) for p in group)
            ranks = sorted(point_rank(p) for p in group)
            assert point_rank(row(out.first, j)) == ranks[0]
            assert point_rank(row(out.last, j)) == ranks[-1]
            for kind, smallest in ((out.min, True), (out.max, False)):
                if out.nan_count[j] == out.count[j]:
                    assert exact(row(kind, j)) == exact(row(out.first, j))
                else:
                    check_extreme(Point(*row(kind, j)), group, smallest)
        numbers = [p for g in groups.values() for p in g if not math.isnan(p[2])]
        if numbers:
            kept_min = min(v for v in out.min[2].tolist() if not math.isnan(v))
            kept_max = max(v for v in out.max[2].tolist() if not math.isnan(v))
            assert kept_min == min(p[2] for p in numbers)
            assert kept_max == max(p[2] for p in numbers)
        seen["several buckets"] += len(out) > 1
        seen["all-NaN bucket"] += bool((out.nan_count == out.count).any())
        seen["points outside"] += any(not start <= p[0] <= end for p in points)

    check()
    assert seen["several buckets"] >= 70 and seen["all-NaN bucket"] >= 20, seen
    assert seen["points outside"] >= 100, seen


def row(c: Columns, j: int) -> Pt:
    return int(c[0][j]), int(c[1][j]), float(c[2][j])


def same_buckets(a: Buckets, b: Buckets) -> bool:
    def flat(x: Buckets) -> list[list[int]]:
        out = [x.index.tolist(), x.lower.tolist(), x.upper.tolist(), x.count.tolist()]
        out.append(x.nan_count.tolist())
        for c in (x.first, x.last, x.min, x.max):
            out += [c[0].tolist(), c[1].tolist(), c[2].view(np.uint64).tolist()]
        return out

    return flat(a) == flat(b)


def test_chunk_summaries_answer_the_buckets_that_hold_them() -> None:
    """Chunks inside one bucket given as summaries and the rest as points give exactly the
    buckets of all the points."""
    seen: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None)
    @given(charts(), st.lists(st.integers(1, 8), min_size=1, max_size=20))
    def check(chart: tuple[list[Pt], int, int, int], sizes: list[int]) -> None:
        points, start, end, n = chart
        points = sorted(points, key=lambda p: p[0])  # stored chunks mostly follow the steps
        whole = buckets(*cols(points), start, end, n)
        loose: list[Pt] = []
        summaries = []
        at = 0
        for size in sizes * len(points):
            chunk, at = points[at : at + size], at + size
            if not chunk:
                break
            s = summary(*cols(chunk))
            if bucket_holding(start, end, n, s.min_step, s.max_step) is None:
                loose += chunk
            else:
                summaries.append(s)
        got = buckets(*cols(loose) if loose else ([], [], []), start, end, n, summaries=summaries)
        assert same_buckets(got, whole)
        seen["summaries and points"] += bool(summaries) and bool(loose)
        seen["summaries only"] += bool(summaries) and not loose

    check()
    assert seen["summaries and points"] >= 40 and seen["summaries only"] >= 10, seen


def test_bucket_errors_say_what_to_fix() -> None:
    """Bad ranges and bucket counts, and a summary across buckets, raise InvalidInputError;
    empty columns have no latest point or summary, and no buckets."""
    one = ([1], [1], [1.0])
    with pytest.raises(InvalidInputError, match="at least 1, got 0"):
        buckets(*one, 0, 10, 0)
    with pytest.raises(InvalidInputError, match=r"start_step \(5\) is after end_step \(4\)"):
        buckets(*one, 5, 4, 3)
    with pytest.raises(InvalidInputError, match="end_step must be a 64-bit signed integer"):
        bucket_bounds(0, 1 << 63, 3)
    across = summary(*cols([(1, 0, 1.0), (9, 0, 2.0)]))
    with pytest.raises(InvalidInputError, match=r"steps 1\.\.9 does not lie inside one bucket"):
        buckets([], [], [], 0, 9, 2, summaries=[across])
    with pytest.raises(ValueError, match="empty"):
        latest(*cols([]))
    with pytest.raises(ValueError, match="empty"):
        summary(*cols([]))
    assert len(buckets([], [], [], 0, 9, 3)) == 0
