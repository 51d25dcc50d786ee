"""The pure-Python metric blob codec that tracker shipped before numpy: the format's reference."""

# Moved here from tracker/serialization.py unchanged in behaviour, so that the numpy codec can be
# checked against it bit for bit (tests/unit/test_packing.py) and timed against it
# (benchmarks/packing.py). Nothing in the package imports it.

from __future__ import annotations

import operator
import struct
import sys
import zlib
from array import array
from itertools import accumulate, pairwise
from typing import Any, Final

_MASK: Final = (1 << 64) - 1
_LITTLE: Final = sys.byteorder == "little"
_NARROW: Final = (("b", -(1 << 7), (1 << 7) - 1), ("h", -(1 << 15), (1 << 15) - 1),
                  ("i", -(1 << 31), (1 << 31) - 1))  # fmt: skip
_WRAPPED: Final = "Q"
_BLOB_HEADER: Final = struct.Struct("<ccI")

Columns = tuple["array[int]", "array[int]", "array[float]"]


def _le(a: array[Any]) -> bytes:
    if not _LITTLE:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _from_le(typecode: str, data: bytes) -> array[Any]:
    a = array(typecode)
    a.frombytes(data)
    if not _LITTLE:
        a.byteswap()
    return a


def delta(column: array[int]) -> tuple[str, bytes]:
    """Delta-encode an int64 column in the narrowest signed type that holds every delta
    (typecode, bytes); "Q" means the deltas wrap modulo 2**64."""
    if not column:
        return "b", b""
    try:
        deltas = array("q", column[:1])
        deltas.extend(map(operator.sub, column[1:], column[:-1]))
    except OverflowError:
        wrapped = array(_WRAPPED, [column[0] & _MASK])
        wrapped.extend([(x - p) & _MASK for p, x in pairwise(column)])
        return _WRAPPED, _le(wrapped)
    lo, hi = min(deltas), max(deltas)
    for code, low, high in _NARROW:
        if low <= lo and hi <= high:
            return code, _le(array(code, deltas))
    return "q", _le(deltas)


def undelta(code: str, data: bytes) -> array[int]:
    deltas = _from_le(code, data)
    if code != _WRAPPED:
        return array("q", accumulate(deltas))
    unsigned = accumulate(deltas, lambda a, b: (a + b) & _MASK)
    return array("q", [v - (1 << 64) if v >= 1 << 63 else v for v in unsigned])


def pack(steps: array[int], timestamps: array[int], values: array[float]) -> bytes:
    """One key's columns as the stored blob: step typecode, timestamp typecode, u32 length of
    the compressed part, zlib level 1 of (step deltas | timestamp deltas), raw float64 values."""
    if not len(steps) == len(timestamps) == len(values):
        raise ValueError("steps, timestamps and values differ in length")
    step_code, step_bytes = delta(steps)
    stamp_code, stamp_bytes = delta(timestamps)
    ints = zlib.compress(step_bytes + stamp_bytes, 1)
    header = _BLOB_HEADER.pack(step_code.encode(), stamp_code.encode(), len(ints))
    return b"".join((header, ints, _le(values)))


def unpack(blob: bytes, count: int) -> Columns:
    """The columns of a blob made by `pack`; raises ValueError (or struct.error, zlib.error)
    when the blob is corrupt."""
    step_code, stamp_code, zlen = _BLOB_HEADER.unpack_from(blob)
    start = _BLOB_HEADER.size
    ints = zlib.decompress(blob[start : start + zlen])
    width = array(step_code.decode()).itemsize * count
    steps = undelta(step_code.decode(), ints[:width])
    stamps = undelta(stamp_code.decode(), ints[width:])
    values = _from_le("d", blob[start + zlen :])
    if not len(steps) == len(stamps) == len(values) == count:
        raise ValueError(f"column lengths differ from {count}")
    return steps, stamps, values
