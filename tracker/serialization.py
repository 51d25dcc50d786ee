"""Events to bytes and back: orjson payloads, packed metric columns, schema upcasting.

Every payload is orjson except MetricsLogged, whose points would cost ~60 bytes each as JSON.
Its payload is framed binary:

    b"M1" | u32 header length | orjson header | per-key blobs

The header is ``{"run_id": ..., "keys": [...], "counts": [...], "sizes": [...]}``; each
per-key blob is described at pack_series: narrow delta-encoded int64 steps and timestamps,
compressed, then raw float64 values. The metric-history view stores those blobs unchanged,
so a point is encoded once and never re-encoded on the way to the view.
"""

from __future__ import annotations

import dataclasses
import struct
import uuid
import zlib
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import orjson
from numpy.typing import NDArray

from tracker.errors import StoreError
from tracker.events import (
    EVENT_TYPES,
    DatasetInput,
    DatasetInputsLogged,
    DomainEvent,
    MetricSeries,
    MetricsLogged,
    RecordedEvent,
)
from tracker.series import Ints

_MAGIC: Final = b"M1"
_I64_MAX: Final = (1 << 63) - 1

# (type name, version it upgrades from) -> function from that version's payload to the next.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


@upcaster("RunCreated", 1)
def _run_created_v1(payload: dict[str, Any]) -> dict[str, Any]:
    # v1 called the run name `name` and could not record a parent run.
    out = dict(payload)
    out["run_name"] = out.pop("name")
    out.setdefault("parent_run_id", None)
    return out


# Delta typecodes as stored in a blob's header (array module codes) and their wire types.
_WIRE: Final[dict[bytes, np.dtype[Any]]] = {
    b"b": np.dtype("<i1"),
    b"h": np.dtype("<i2"),
    b"i": np.dtype("<i4"),
    b"q": np.dtype("<i8"),
    b"Q": np.dtype("<u8"),
}
_NARROW: Final = tuple((code, np.iinfo(_WIRE[code])) for code in (b"b", b"h", b"i"))
_WRAPPED: Final = b"Q"
_BLOB_HEADER: Final = struct.Struct("<ccI")


def _delta(column: Ints) -> tuple[bytes, NDArray[Any]]:
    """Delta-encode an int64 column (the first element kept as is) in the narrowest signed type
    that holds every delta: (typecode, little-endian deltas). "Q" means the deltas wrap modulo
    2**64, for steps that jump by more than int64 holds."""
    if not len(column):
        return b"b", column[:0].astype(_WIRE[b"b"])
    deltas = np.empty_like(column)
    deltas[0] = column[0]
    np.subtract(column[1:], column[:-1], out=deltas[1:])  # wraps modulo 2**64 on overflow
    lo, hi = int(column.min()), int(column.max())
    if hi - lo > _I64_MAX:
        # x - p overflowed exactly where x and p differ in sign and x - p took p's sign.
        prev, cur = column[:-1], column[1:]
        if (((cur ^ prev) & (cur ^ deltas[1:])) < 0).any():
            return _WRAPPED, deltas.view(np.uint64).astype(_WIRE[_WRAPPED], copy=False)
    lo, hi = int(deltas.min()), int(deltas.max())
    for code, bounds in _NARROW:
        if bounds.min <= lo and hi <= bounds.max:
            return code, deltas.astype(_WIRE[code])
    return b"q", deltas.astype(_WIRE[b"q"], copy=False)


def _undelta(code: bytes, data: memoryview) -> Ints:
    wire = _WIRE[code]  # KeyError for a typecode no codec writes: a corrupt blob
    deltas = np.frombuffer(data, dtype=wire)
    if code == _WRAPPED:
        deltas = deltas.view(np.dtype("<i8"))  # the same sums modulo 2**64
    # Sums wrap modulo 2**64, which decodes the wrapped deltas and cannot occur for the others.
    column: Ints = np.cumsum(deltas, dtype=np.int64)
    return column


def pack_series(series: MetricSeries) -> bytes:
    """One key's points as the blob stored in the log and, unchanged, in the history view;
    made once per series and kept on it.

    Layout: step typecode, timestamp typecode (array module codes b/h/i/q, or Q for wrapped
    deltas), u32 length of the compressed part, then zlib level 1 of (step deltas | timestamp
    deltas), little-endian, and the float64 values, raw little-endian (doubles from training
    barely compress, and deflating them would cost most of the writer's time)."""
    if series.packed is not None:
        return series.packed
    step_code, steps = _delta(series.steps)
    stamp_code, stamps = _delta(series.timestamps)
    ints = zlib.compress(b"".join((steps.data, stamps.data)), 1)
    header = _BLOB_HEADER.pack(step_code, stamp_code, len(ints))
    values = series.values.astype("<f8", copy=False)
    blob = b"".join((header, ints, values.data))
    object.__setattr__(series, "packed", blob)  # a cache of a pure function of frozen fields
    return blob


def unpack_series(key: str, blob: bytes, count: int) -> MetricSeries:
    """The series of a blob made by pack_series, as numpy columns (the values share the blob's
    memory). A blob that does not decode to `count` points raises StoreError."""
    try:
        step_code, stamp_code, zlen = _BLOB_HEADER.unpack_from(blob)
        start = _BLOB_HEADER.size
        ints = memoryview(zlib.decompress(blob[start : start + zlen]))
        width = _WIRE[step_code].itemsize * count
        steps = _undelta(step_code, ints[:width])
        stamps = _undelta(stamp_code, ints[width:])
        values = np.frombuffer(blob, dtype="<f8", offset=start + zlen)
    except (struct.error, zlib.error, ValueError, KeyError) as exc:
        raise StoreError(f"corrupt metric block for {key!r}: {exc!r}") from exc
    if not len(steps) == len(stamps) == len(values) == count:
        raise StoreError(f"corrupt metric block for {key!r}: column lengths differ from {count}")
    return MetricSeries(key, steps, stamps, values.astype(np.float64, copy=False), blob)


def _pack_metrics(event: MetricsLogged) -> bytes:
    blobs = [pack_series(s) for s in event.series]
    header = orjson.dumps(
        {
            "run_id": event.run_id,
            "keys": [s.key for s in event.series],
            "counts": [len(s) for s in event.series],
            "sizes": [len(b) for b in blobs],
        }
    )
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *blobs])


def metric_blobs(payload: bytes) -> tuple[str, list[tuple[str, int, bytes]]]:
    """(run_id, [(key, count, blob)]) of a MetricsLogged payload, without decompressing."""
    if payload[:2] != _MAGIC:
        raise StoreError("MetricsLogged payload does not start with its magic bytes")
    (hlen,) = struct.unpack_from("<I", payload, 2)
    header = orjson.loads(payload[6 : 6 + hlen])
    offset = 6 + hlen
    out = []
    for key, count, size in zip(header["keys"], header["counts"], header["sizes"], strict=True):
        out.append((key, count, payload[offset : offset + size]))
        offset += size
    return header["run_id"], out


def _unpack_metrics(payload: bytes) -> MetricsLogged:
    run_id, blobs = metric_blobs(payload)
    return MetricsLogged(run_id, tuple(unpack_series(k, b, n) for k, n, b in blobs))


def _to_dict(obj: DomainEvent | DatasetInput) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def serialize(event: DomainEvent) -> tuple[str, int, bytes]:
    """(type name, schema version, payload bytes) for an event."""
    name = type(event).__name__
    if isinstance(event, MetricsLogged):
        return name, event.SCHEMA_VERSION, _pack_metrics(event)
    if isinstance(event, DatasetInputsLogged):
        body = {"run_id": event.run_id, "datasets": [_to_dict(d) for d in event.datasets]}
        return name, event.SCHEMA_VERSION, orjson.dumps(body)
    return name, event.SCHEMA_VERSION, orjson.dumps(_to_dict(event))


def deserialize(type_name: str, version: int, payload: bytes) -> DomainEvent:
    """Rebuild an event from its stored form, upcasting old schema versions first."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise StoreError(f"unknown event type {type_name!r} in the log (newer tracker version?)")
    if cls is MetricsLogged:
        return _unpack_metrics(payload)
    data: dict[str, Any] = orjson.loads(payload)
    while version < cls.SCHEMA_VERSION:
        step = UPCASTERS.get((type_name, version))
        if step is None:
            raise StoreError(f"no upcaster for {type_name} v{version}")
        data = step(data)
        version += 1
    if version > cls.SCHEMA_VERSION:
        raise StoreError(
            f"{type_name} v{version} is newer than this code understands "
            f"(v{cls.SCHEMA_VERSION}); upgrade tracker"
        )
    if cls is DatasetInputsLogged:
        datasets = tuple(DatasetInput(**d) for d in data["datasets"])
        return DatasetInputsLogged(data["run_id"], datasets)
    return cls(**data)


def event_to_json(event: DomainEvent) -> dict[str, Any]:
    """A JSON-able dict of an event's fields, metric points expanded."""
    if isinstance(event, MetricsLogged):
        return {
            "run_id": event.run_id,
            "metrics": [
                {"key": s.key, "step": st, "timestamp": ts, "value": v}
                for s in event.series
                for st, ts, v in s.points()
            ],
        }
    if isinstance(event, DatasetInputsLogged):
        return {"run_id": event.run_id, "datasets": [_to_dict(d) for d in event.datasets]}
    return _to_dict(event)


def recorded_to_json(rec: RecordedEvent) -> dict[str, Any]:
    """A recorded event with its envelope, as the CLI's `replay` prints it."""
    return {
        "position": rec.position,
        "event_id": uuid.UUID(bytes=rec.event_id).hex,
        "stream_id": rec.stream_id,
        "sequence": rec.sequence,
        "recorded_at": rec.recorded_at,
        "schema_version": rec.schema_version,
        "type": type(rec.event).__name__,
        "data": event_to_json(rec.event),
    }


def metric_layout(payload: bytes) -> tuple[str, list[tuple[str, int, int, int]]]:
    """(run_id, [(key, count, offset, size)]) of a MetricsLogged payload: where each key's
    packed blob lies in it, so that views can index the log's bytes instead of copying them."""
    if payload[:2] != _MAGIC:
        raise StoreError("MetricsLogged payload does not start with its magic bytes")
    (hlen,) = struct.unpack_from("<I", payload, 2)
    header = orjson.loads(payload[6 : 6 + hlen])
    offset = 6 + hlen
    out = []
    for key, count, size in zip(header["keys"], header["counts"], header["sizes"], strict=True):
        out.append((key, count, offset, size))
        offset += size
    return header["run_id"], out
