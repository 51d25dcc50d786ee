"""Metric column benchmark: numpy codec vs the pure-Python reference, merge and buckets.

Prints medians of --repeat runs per operation, with ratios measured in the same run, and the
issue-9/12 targets (a 1,000,000-point series decoded to arrays in <= 100 ms; 1,000,000 points
reduced to 1,000 buckets in <= 100 ms). The reference is tests/unit/reference_packing.py, the
codec tracker shipped before numpy; the two are checked to make the same bytes first.

    python benchmarks/packing.py                   # 100,000 and 1,000,000 points, 5 runs
    python benchmarks/packing.py --repeat 9 --sizes 1000000
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import platform
import statistics
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracker import series  # noqa: E402
from tracker.events import MetricSeries  # noqa: E402
from tracker.serialization import pack_series, unpack_series  # noqa: E402

CHUNK = 16_384
"""Points per stored chunk in the merge case (the writer's chunk size per key)."""


def load_reference() -> ModuleType:
    path = ROOT / "tests" / "unit" / "reference_packing.py"
    spec = importlib.util.spec_from_file_location("reference_packing", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def training_series(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a training loop logs: consecutive steps, a millisecond clock, a noisy loss."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n, dtype=np.int64)
    stamps = 1_700_000_000_000 + np.cumsum(rng.integers(0, 3, n, dtype=np.int64))
    values = 2.0 * np.exp(-steps / (n / 4)) + rng.random(n) * 0.05
    return steps, stamps, values


def chunks_of(cols: tuple[np.ndarray, ...], size: int) -> list[tuple[np.ndarray, ...]]:
    return [tuple(c[i : i + size] for c in cols) for i in range(0, len(cols[0]), size)]


Row = tuple[str, int, float, float | None]


def codec_rows(ref: ModuleType, n: int, repeat: int) -> list[Row]:
    steps, stamps, values = training_series(n)
    a_steps, a_stamps = array("q", steps.tolist()), array("q", stamps.tolist())
    a_values = array("d", values.tolist())
    blob = pack_series(MetricSeries("loss", steps, stamps, values))
    if blob != ref.pack(a_steps, a_stamps, a_values):
        raise SystemExit("the numpy codec and the reference made different bytes")
    pack_np = median_ms(lambda: pack_series(MetricSeries("loss", steps, stamps, values)), repeat)
    pack_ref = median_ms(lambda: ref.pack(a_steps, a_stamps, a_values), repeat)
    unpack_np = median_ms(lambda: unpack_series("loss", blob, n), repeat)
    unpack_ref = median_ms(lambda: ref.unpack(blob, n), repeat)
    objects = median_ms(lambda: unpack_series("loss", blob, n).points(), repeat)
    return [
        ("pack", n, pack_np, pack_ref),
        ("unpack to arrays", n, unpack_np, unpack_ref),
        ("unpack to Python points", n, objects, None),
    ]


def math_rows(n: int, repeat: int) -> list[Row]:
    cols = training_series(n)
    parts = chunks_of(cols, CHUNK)
    rng = np.random.default_rng(1)
    shuffled = [parts[i] for i in rng.permutation(len(parts))]
    overlapping = parts + parts[::2]  # half the chunks stored twice: duplicates to drop
    same_step = (np.zeros(n, dtype=np.int64), cols[1], cols[2])  # MLflow's default step 0
    merged = series.merge(shuffled)
    assert len(merged[0]) == n and np.array_equal(merged[0], cols[0])
    assert len(series.merge(overlapping)[0]) == n
    unsorted = tuple(np.concatenate([p[j] for p in shuffled]) for j in range(3))
    buckets_sorted = median_ms(lambda: series.buckets(*cols, 0, n - 1, 1000), repeat)
    assert len(series.buckets(*cols, 0, n - 1, 1000)) == 1000
    return [
        (f"merge, chunks of {CHUNK:,} in order", n, median_ms(lambda: series.merge(parts), repeat), None),
        (f"merge, chunks of {CHUNK:,} shuffled", n, median_ms(lambda: series.merge(shuffled), repeat), None),
        ("merge, half the chunks twice", n, median_ms(lambda: series.merge(overlapping), repeat), None),
        ("merge, every step 0", n, median_ms(lambda: series.merge([same_step]), repeat), None),
        ("buckets: 1,000, points in order", n, buckets_sorted, None),
        ("buckets: 1,000, chunks shuffled", n, median_ms(lambda: series.buckets(*unsorted, 0, n - 1, 1000), repeat), None),
        ("latest", n, median_ms(lambda: series.latest(*cols), repeat), None),
        ("summary", n, median_ms(lambda: series.summary(*cols), repeat), None),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per operation (median)")
    parser.add_argument("--sizes", default="100000,1000000", help="points per series")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ref = load_reference()
    print(f"{args.repeat} runs per operation, medians; numpy {np.__version__}")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs: {cpu_model()}")
    print()
    rows: list[Row] = []
    for n in sizes:
        rows += codec_rows(ref, n, args.repeat)
    for n in sizes:
        rows += math_rows(n, args.repeat)
    header = f"{'operation':<36} {'points':>10} {'numpy ms':>10} {'reference ms':>13} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for name, n, ours, theirs in rows:
        ref_text = f"{theirs:>13.1f}" if theirs is not None else f"{'':>13}"
        ratio = f"{theirs / ours:>6.1f}x" if theirs is not None else ""
        print(f"{name:<36} {n:>10,} {ours:>10.1f} {ref_text} {ratio:>7}")
    print()
    found = {(name, n): ours for name, n, ours, _ in rows}
    for name, label in (("unpack to arrays", "decoded to arrays"),
                        ("buckets: 1,000, points in order", "reduced to 1,000 buckets")):  # fmt: skip
        ms = found.get((name, 1_000_000))
        if ms is not None:
            verdict = "met" if ms <= 100 else "NOT met"
            print(f"target: 1,000,000 points {label} in <= 100 ms: {ms:.1f} ms, {verdict}")


if __name__ == "__main__":
    main()
