"""The numpy metric codec: bit for bit the reference's blobs, old blobs decoded, numpy series."""

from __future__ import annotations

import copy
import json
import math
import pickle
import struct
from array import array
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit import reference_packing as ref
from tracker.errors import InvalidInputError, StoreError
from tracker.events import MetricSeries
from tracker.serialization import pack_series, unpack_series

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
FIXTURES = Path(__file__).with_name("data") / "metric_blobs.json"


def from_bits(bits: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


def to_bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


NANS = st.builds(
    lambda sign, payload: from_bits((sign << 63) | (0x7FF << 52) | payload),
    st.integers(0, 1),
    st.integers(1, (1 << 52) - 1),
)
"""NaNs of either sign with any payload, quiet or signalling."""
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    NANS,
    st.sampled_from([math.inf, -math.inf, -0.0, 0.0, 5e-324, -1.7976931348623157e308]),
)
# Delta widths to aim a column at: each draws the deltas between consecutive elements.
DELTAS = {
    "b": st.integers(-(1 << 7), (1 << 7) - 1),
    "h": st.integers(-(1 << 15), (1 << 15) - 1),
    "i": st.integers(-(1 << 31), (1 << 31) - 1),
    "q": st.integers(I64_MIN, I64_MAX),
}
EXTREMES = st.sampled_from([I64_MIN, I64_MIN + 1, -1, 0, 1, I64_MAX - 1, I64_MAX])


@st.composite
def int_columns(draw: st.DrawFn, n: int) -> list[int]:
    """n int64s whose deltas aim at one width, or jump across int64's range (wrapped deltas)."""
    kind = draw(st.sampled_from([*DELTAS, "extremes"]))
    if kind == "extremes":
        return draw(st.lists(EXTREMES, min_size=n, max_size=n))
    first = draw(st.one_of(DELTAS[kind], EXTREMES))
    out = [first]
    for d in draw(st.lists(DELTAS[kind], min_size=max(n - 1, 0), max_size=max(n - 1, 0))):
        out.append(min(max(out[-1] + d, I64_MIN), I64_MAX))
    return out[:n]


@st.composite
def point_columns(draw: st.DrawFn) -> tuple[list[int], list[int], list[float]]:
    n = draw(st.one_of(st.integers(0, 1), st.integers(0, 40)))
    return (
        draw(int_columns(n)),
        draw(int_columns(n)),
        draw(st.lists(VALUES, min_size=n, max_size=n)),
    )


def bits(values: object) -> list[int]:
    return [to_bits(v) for v in values]  # type: ignore[attr-defined]


def test_numpy_codec_is_the_reference_bit_for_bit() -> None:
    """On random series (NaN payloads, ±Inf, -0.0, int64 extremes, wrapped and every narrow
    width, empty and one point) both codecs make the same bytes and decode each other's."""
    seen: Counter[str] = Counter()

    @settings(max_examples=600, deadline=None)
    @given(point_columns())
    def check(cols: tuple[list[int], list[int], list[float]]) -> None:
        steps, stamps, values = cols
        reference = ref.pack(array("q", steps), array("q", stamps), array("d", values))
        blob = pack_series(MetricSeries("k", steps, stamps, values))
        assert blob == reference
        back = unpack_series("k", reference, len(steps))
        assert back.steps.tolist() == steps
        assert back.timestamps.tolist() == stamps
        assert bits(back.values.tolist()) == bits(values)
        r_steps, r_stamps, r_values = ref.unpack(blob, len(steps))
        assert (list(r_steps), list(r_stamps), bits(r_values)) == (steps, stamps, bits(values))
        seen[f"len {min(len(steps), 2)}"] += 1
        seen[f"steps {chr(blob[0])}"] += 1
        seen[f"stamps {chr(blob[1])}"] += 1
        seen["nan payloads"] += len({to_bits(v) for v in values if math.isnan(v)}) > 1

    check()
    for code in "bhiqQ":
        assert seen[f"steps {code}"] >= 10, seen
        assert seen[f"stamps {code}"] >= 10, seen
    assert seen["len 0"] >= 30 and seen["len 1"] >= 30 and seen["len 2"] >= 250, seen
    assert seen["nan payloads"] >= 20, seen


def test_blobs_made_by_the_old_codec_decode() -> None:
    """Blobs committed from the pure-Python codec decode to their columns and re-pack to the
    same bytes."""
    cases = json.loads(FIXTURES.read_text())
    assert len(cases) >= 8
    for case in cases:
        blob = bytes.fromhex(case["blob"])
        s = unpack_series("k", blob, case["count"])
        assert s.steps.tolist() == case["steps"], case["name"]
        assert s.timestamps.tolist() == case["timestamps"], case["name"]
        assert [struct.pack("<d", v).hex() for v in s.values.tolist()] == case["value_bits"]
        values = [struct.unpack("<d", bytes.fromhex(b))[0] for b in case["value_bits"]]
        assert pack_series(MetricSeries("k", case["steps"], case["timestamps"], values)) == blob


@pytest.mark.parametrize(
    ("blob", "count"),
    [
        (b"", 0),
        (b"bq\x05", 1),
        (b"bq\x05\x00\x00\x00notzlib", 1),
        (b"xq" + ref.pack(array("q", [1]), array("q", [2]), array("d", [3.0]))[2:], 1),
        (ref.pack(array("q", [1]), array("q", [2]), array("d", [3.0]))[:-1], 1),
        (ref.pack(array("q", [1, 2]), array("q", [2, 3]), array("d", [3.0, 4.0])), 3),
    ],
    ids=["empty", "short header", "bad zlib", "unknown typecode", "torn value", "wrong count"],
)
def test_corrupt_blobs_are_store_errors(blob: bytes, count: int) -> None:
    """A blob that does not decode to its count of points raises StoreError naming the key."""
    with pytest.raises(StoreError, match="corrupt metric block for 'loss'"):
        unpack_series("loss", blob, count)


def test_damaged_blobs_decode_as_the_reference_or_raise() -> None:
    """A blob with a byte changed or cut decodes to what the reference decodes, or raises
    StoreError where the reference fails too (or where its compressed length runs past its
    end, or its header names a column type no codec writes: both the reference let through)."""
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None)
    @given(point_columns(), st.data())
    def check(cols: tuple[list[int], list[int], list[float]], data: st.DataObject) -> None:
        blob = bytearray(ref.pack(*(array(c, x) for c, x in zip("qqd", cols, strict=True))))
        at = data.draw(st.integers(0, len(blob) - 1))
        if data.draw(st.booleans()):
            blob[at] ^= data.draw(st.integers(1, 255))
        else:
            del blob[at:]
        count = len(cols[0])
        try:
            expected = ref.unpack(bytes(blob), count)
        except Exception:  # whatever the reference raised, the blob is not decodable
            expected = None
        try:
            got = unpack_series("k", bytes(blob), count)
        except StoreError:
            overrun = len(blob) >= 6 and 6 + struct.unpack_from("<I", blob, 2)[0] > len(blob)
            unknown = len(blob) >= 2 and not {chr(blob[0]), chr(blob[1])} <= set("bhiqQ")
            assert expected is None or overrun or unknown
            seen["refused"] += 1
            return
        assert expected is not None
        assert got.steps.tolist() == list(expected[0])
        assert got.timestamps.tolist() == list(expected[1])
        assert bits(got.values.tolist()) == bits(expected[2])
        seen["decoded"] += 1

    check()
    assert seen["refused"] >= 50 and seen["decoded"] >= 10, seen


def test_series_share_typed_buffers_and_stay_read_only() -> None:
    """array('q')/array('d') and int64/float64 ndarrays are used without a copy; the series'
    columns cannot be written, while the caller's ndarray stays writable."""
    steps, values = array("q", [1, 2, 3]), np.array([0.5, 1.5, 2.5])
    s = MetricSeries("k", steps, [7, 8, 9], values)
    assert np.shares_memory(s.steps, np.frombuffer(steps, dtype=np.int64))
    assert np.shares_memory(s.values, values)
    with pytest.raises(ValueError, match="read-only"):
        s.values[0] = 9.0
    values[0] = 4.0  # still the caller's array to write: the series shares it, as documented
    assert s.values[0] == 4.0
    with pytest.raises(BufferError):
        steps.append(4)  # a shared array.array cannot be resized under the series
    for col in (s.steps, s.timestamps, s.values):
        assert col.ndim == 1 and col.flags.c_contiguous
    assert (s.steps.dtype, s.timestamps.dtype, s.values.dtype) == (np.int64, np.int64, np.float64)


def test_series_convert_other_numbers() -> None:
    """Lists, ranges, narrow arrays and strided ndarrays become int64/float64 columns."""
    wide = np.arange(10, dtype=np.int32)[::2]
    s = MetricSeries("k", range(5), array("i", [1, 2, 3, 4, 5]), wide)
    assert s.steps.tolist() == [0, 1, 2, 3, 4]
    assert s.timestamps.dtype == np.int64 and s.timestamps.tolist() == [1, 2, 3, 4, 5]
    assert s.values.dtype == np.float64 and s.values.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    empty = MetricSeries("k", [], [], [])
    assert len(empty) == 0 and empty.steps.dtype == np.int64 and empty.points() == []


@pytest.mark.parametrize(
    ("steps", "stamps", "values", "message"),
    [
        ([1.5], [1], [1.0], "steps must hold int64"),
        ([1 << 63], [1], [1.0], "steps must hold int64"),
        ([1 << 70], [1], [1.0], "steps must hold int64"),
        ([[1]], [1], [1.0], "steps must be one-dimensional"),
        ([1], [1], ["x"], "values must hold float64"),
        ([1], [True], [1.0], "timestamps must hold int64"),
        ([1, 2], [1], [1.0], r"steps, timestamps and values differ in length \(2, 1, 1\)"),
        (5, [1], [1.0], "steps must be one-dimensional"),
    ],
)
def test_bad_columns_are_refused_with_what_to_fix(
    steps: object, stamps: object, values: object, message: str
) -> None:
    """Columns that are not 1-D int64/float64 of one length raise InvalidInputError saying which."""
    with pytest.raises(InvalidInputError, match=f"metric 'k': {message}"):
        MetricSeries("k", steps, stamps, values)  # type: ignore[arg-type]


def test_points_and_latest_are_python_numbers() -> None:
    """points() and latest() give ints and floats (JSON and == keep working), NaN bits kept."""
    nan = from_bits(0x7FF0_0000_0000_0BAD)
    s = MetricSeries("k", [3, 1, 3], [5, 9, 5], [2.0, 7.0, nan])
    pts = s.points()
    assert [tuple(type(x) for x in p) for p in pts] == [(int, int, float)] * 3
    assert pts[:2] == [(3, 5, 2.0), (1, 9, 7.0)] and to_bits(pts[2][2]) == to_bits(nan)
    step, ts, value = s.latest()
    assert (type(step), type(ts), type(value)) == (int, int, float)
    assert (step, ts, to_bits(value)) == (3, 5, to_bits(nan))
    with pytest.raises(ValueError, match="empty"):
        MetricSeries("k", [], [], []).latest()


def test_equality_is_bitwise() -> None:
    """Series are equal when keys and columns match bit for bit: NaN equals the same NaN,
    and -0.0 differs from 0.0, as do two NaN payloads."""
    a = MetricSeries("k", [1, 2], [3, 4], [math.nan, -0.0])
    assert a == MetricSeries("k", array("q", [1, 2]), np.array([3, 4]), [math.nan, -0.0])
    assert a != MetricSeries("k", [1, 2], [3, 4], [math.nan, 0.0])
    assert a != MetricSeries("k", [1, 2], [3, 4], [from_bits(0x7FF8_0000_0000_0001), -0.0])
    assert a != MetricSeries("j", [1, 2], [3, 4], [math.nan, -0.0])
    assert a != MetricSeries("k", [1, 3], [3, 4], [math.nan, -0.0])


def test_copies_stay_equal_and_read_only() -> None:
    """A pickled or deep-copied series equals the original and its columns stay read-only."""
    s = MetricSeries("k", [1, 2], [3, 4], [math.nan, -0.0])
    for twin in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        assert twin == s
        assert not any(c.flags.writeable for c in (twin.steps, twin.timestamps, twin.values))


def test_the_blob_is_made_once_and_kept() -> None:
    """pack_series caches its blob on the series; a decoded series carries the blob it came from."""
    s = MetricSeries("k", range(100), range(100), np.linspace(0, 1, 100))
    blob = pack_series(s)
    assert pack_series(s) is blob and s.packed is blob
    back = unpack_series("k", blob, 100)
    assert back.packed is blob and back == s
