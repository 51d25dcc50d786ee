"""Writes metric_blobs.json: blobs made by the pure-Python codec, for the decoding test."""

# Usage (from the repository root): python tests/unit/data/make_metric_blobs.py
# The committed file was made with main's codec at b678bbd (tracker/serialization.py before
# numpy, now tests/unit/reference_packing.py) and checked equal to that commit's pack_series.

from __future__ import annotations

import json
import math
import struct
import sys
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.unit.reference_packing import pack  # noqa: E402

I64 = (1 << 63) - 1


def nan(payload: int, sign: int = 0) -> float:
    bits = (sign << 63) | (0x7FF << 52) | payload
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


CASES: dict[str, tuple[list[int], list[int], list[float]]] = {
    "empty": ([], [], []),
    "one point": ([7], [1_700_000_000_000], [0.25]),
    "training loss (int8 steps)": (
        list(range(200)),
        [1_700_000_000_000 + i // 10 for i in range(200)],
        [1 / (i + 1) for i in range(200)],
    ),
    "int16 deltas": (
        [i * 300 for i in range(50)],
        [i * -20_000 for i in range(50)],
        [float(i) for i in range(50)],
    ),
    "int32 deltas": ([i * 70_000 for i in range(50)], [5] * 50, [-float(i) for i in range(50)]),
    "int64 deltas": ([i * (1 << 40) for i in range(50)], [0] * 50, [1e300] * 50),
    "wrapped deltas": (
        [-(1 << 63), I64, 0, I64, -(1 << 63)],
        [0, 1, 2, 3, 1 << 62],
        [1.0, 2.0, 3.0, 4.0, 5.0],
    ),
    "special values": (
        [0, 1, 1, 2, 3, 4, 5, 6],
        [10, 10, 10, 11, 12, 13, 14, 15],
        [math.nan, nan(1), nan(0xDEADBEEF, 1), math.inf, -math.inf, -0.0, 0.0, 5e-324],
    ),
}


def bits(values: list[float]) -> list[str]:
    return [struct.pack("<d", v).hex() for v in values]


def main() -> None:
    out = []
    for name, (steps, stamps, values) in CASES.items():
        blob = pack(array("q", steps), array("q", stamps), array("d", values))
        out.append({"name": name, "count": len(steps), "blob": blob.hex(), "steps": steps,
                    "timestamps": stamps, "value_bits": bits(values)})  # fmt: skip
    path = Path(__file__).with_name("metric_blobs.json")
    path.write_text("[\n" + ",\n".join(json.dumps(case) for case in out) + "\n]\n")


if __name__ == "__main__":
    main()
