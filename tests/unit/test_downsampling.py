"""Downsampling properties: buckets cover the range, keep every extreme and both endpoints."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_packing import VALUES
from tests.unit.test_series import Pt, cols, exact, row, same_buckets
from tracker.errors import InvalidInputError
from tracker.events import point_rank
from tracker.series import Summaries, bucket_bounds, buckets, ntile_sample, summary

SPIKES = st.sampled_from([math.inf, -math.inf, 1e300, -1e300, math.nan])


@st.composite
def series(draw: st.DrawFn) -> tuple[list[Pt], int, int, int]:
    """Points around a step range (some outside it), mostly ordinary values with a few spikes,
    ±Inf and NaN; and a bucket count from one to more than the range has steps."""
    start = draw(st.integers(-1000, 1000))
    end = start + draw(st.one_of(st.integers(0, 100), st.integers(0, 400)))
    step = st.integers(start - 20, end + 20)
    value = st.one_of(st.floats(-1, 1), st.floats(-1, 1), SPIKES, VALUES)
    size = draw(st.integers(1, 120))
    points = draw(st.lists(st.tuples(step, st.integers(0, 3), value), min_size=size, max_size=size))
    return points, start, end, draw(st.one_of(st.integers(1, 60), st.integers(1, 500)))


def test_buckets_cover_the_range_exactly() -> None:
    """Non-empty buckets are ordered, disjoint, each within bucket_bounds' ranges; every point
    in the range falls in exactly one, counts (and NaN counts) sum to the points in range."""
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None)
    @given(series())
    def check(case: tuple[list[Pt], int, int, int]) -> None:
        points, start, end, n = case
        out = buckets(*cols(points), start, end, n)
        lower = bucket_bounds(start, end, n)
        upper = np.append(lower[1:] - 1, end)
        assert (np.diff(out.index) > 0).all()
        assert (out.lower == lower[out.index]).all() and (out.upper == upper[out.index]).all()
        assert (out.lower[1:] > out.upper[:-1]).all()  # no overlap
        inside = [p for p in points if start <= p[0] <= end]
        assert int(out.count.sum()) == len(inside)
        assert int(out.nan_count.sum()) == sum(math.isnan(p[2]) for p in inside)
        for p in inside:
            holds = (out.lower <= p[0]) & (p[0] <= out.upper)
            assert int(holds.sum()) == 1
        if len(out):
            # Empty buckets are exactly those no point falls in: no gap hides a point.
            assert set(out.index.tolist()) == {
                int(np.searchsorted(lower, p[0], "right")) - 1 for p in inside
            }
        seen["points outside the range"] += len(inside) < len(points)
        seen["several buckets"] += len(out) > 3

    check()
    assert seen["points outside the range"] >= 150 and seen["several buckets"] >= 150, seen


def test_global_extremes_and_endpoints_survive() -> None:
    """The smallest and largest value in the range (±Inf included, NaN excluded) are some
    bucket's min and max, at the step where they were logged; the first bucket's first point
    and the last bucket's last are the range's first and last points in history order; a
    bucket of NaN only shows NaN as its min and max."""
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None)
    @given(series())
    def check(case: tuple[list[Pt], int, int, int]) -> None:
        points, start, end, n = case
        out = buckets(*cols(points), start, end, n)
        inside = [p for p in points if start <= p[0] <= end]
        if not inside:
            assert len(out) == 0
            return
        ranked = sorted(inside, key=point_rank)
        assert point_rank(row(out.first, 0)) == point_rank(ranked[0])
        assert point_rank(row(out.last, len(out) - 1)) == point_rank(ranked[-1])
        numbers = [p for p in inside if not math.isnan(p[2])]
        if numbers:
            low = min(p[2] for p in numbers)
            high = max(p[2] for p in numbers)
            kept_low = {row(out.min, j)[::2] for j in range(len(out)) if out.min[2][j] == low}
            kept_high = {row(out.max, j)[::2] for j in range(len(out)) if out.max[2][j] == high}
            assert kept_low & {(p[0], p[2]) for p in numbers if p[2] == low}
            assert kept_high & {(p[0], p[2]) for p in numbers if p[2] == high}
            seen["an infinite extreme"] += math.isinf(low) or math.isinf(high)
        all_nan = out.count == out.nan_count
        assert np.isnan(out.min[2][all_nan]).all() and np.isnan(out.max[2][all_nan]).all()
        assert not np.isnan(out.min[2][~all_nan]).any()
        seen["a NaN-only bucket"] += bool(all_nan.any())
        seen["NaN beside numbers"] += bool(((out.nan_count > 0) & ~all_nan).any())

    check()
    assert seen["an infinite extreme"] >= 100 and seen["a NaN-only bucket"] >= 80, seen
    assert seen["NaN beside numbers"] >= 80, seen


def test_partial_results_fold_into_the_whole() -> None:
    """Buckets of some points, passed back as summaries (Buckets.summaries) with the other
    points, or chunk summaries given as Summaries columns, give exactly the buckets of all
    the points: what lets a store reduce a long series piece by piece in bounded memory."""
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None)
    @given(series(), st.floats(0, 1), st.integers(1, 10))
    def check(case: tuple[list[Pt], int, int, int], share: float, size: int) -> None:
        points, start, end, n = case
        cut = int(share * len(points))
        whole = buckets(*cols(points), start, end, n)
        part = buckets(*cols(points[:cut]), start, end, n)
        folded = buckets(*cols(points[cut:]), start, end, n, summaries=part.summaries())
        assert same_buckets(folded, whole)
        again = buckets([], [], [], start, end, n, summaries=folded.summaries())
        assert same_buckets(again, whole)
        # Chunks of `size` points in step order: those inside one bucket as summaries.
        ordered = sorted((p for p in points if start <= p[0] <= end), key=lambda p: p[0])
        lower = bucket_bounds(start, end, n)
        held: list[list[Pt]] = []
        loose: list[Pt] = []
        for i in range(0, len(ordered), size):
            chunk = ordered[i : i + size]
            ends = np.searchsorted(lower, [chunk[0][0], chunk[-1][0]], "right")
            if ends[0] == ends[1]:
                held.append(chunk)
            else:
                loose += chunk
        got = buckets(*cols(loose), start, end, n,
                      summaries=Summaries.of(summary(*cols(c)) for c in held))  # fmt: skip
        assert same_buckets(got, whole)
        seen["folded"] += 0 < cut < len(points)
        seen["chunks from summaries"] += bool(held) and bool(loose)

    check()
    assert seen["folded"] >= 100 and seen["chunks from summaries"] >= 50, seen


def _ntile_reference(total: int, m: int) -> list[int]:
    """MLflow's SQL, row by row: NTILE(m) deals the rows out, the larger tiles first; the first
    row of each tile; then the last row, replacing the final sample when m are taken."""
    tiles: list[list[int]] = []
    q, r = divmod(total, m)
    at = 0
    for t in range(min(m, total)):
        size = q + (t < r) if total >= m else 1
        tiles.append(list(range(at, at + size)))
        at += size
    rows = [tile[0] for tile in tiles]
    if total and rows[-1] != total - 1:
        if len(rows) >= m:
            rows[-1] = total - 1
        else:
            rows.append(total - 1)
    return rows


def test_ntile_sample_is_mlflows_sampling() -> None:
    """ntile_sample picks MLflow's rows: at most max_results, increasing, always the last and
    (for max_results > 1) the first."""
    for total in [*range(0, 40), 99, 100, 101, 1000, 2501, 30_001]:
        for m in (1, 2, 3, 7, 10, 100, 320, 2500):
            got = ntile_sample(total, m).tolist()
            assert got == _ntile_reference(total, m), (total, m)
            assert len(got) <= m and got == sorted(set(got))
            if total:
                assert got[-1] == total - 1 and (m == 1 or got[0] == 0)
    with pytest.raises(InvalidInputError, match="at least 1"):
        ntile_sample(5, 0)


def test_summaries_of_nan_only_chunks_stand_in_their_first_point() -> None:
    """Summaries.of takes a NaN-only chunk's first point as its min and max, and buckets of
    it report NaN there."""
    s = summary(*cols([(3, 1, math.nan), (4, 0, math.nan)]))
    assert s.min is None
    cs = Summaries.of([s])
    assert exact(row(cs.min, 0)) == exact(row(cs.first, 0)) == exact((3, 1, math.nan))
    out = buckets([], [], [], 0, 9, 2, summaries=cs)
    assert out.count.tolist() == [2] and out.nan_count.tolist() == [2]
    assert math.isnan(out.min[2][0]) and math.isnan(out.max[2][0])
