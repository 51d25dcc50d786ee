"""Events to bytes and back: orjson payloads, packed metric columns, schema upcasting.

Every payload is orjson except MetricsLogged, whose points would cost ~60 bytes each as JSON.
Its payload is framed binary:

    b"M1" | u32 header length | orjson header | per-key blobs

The header is ``{"run_id": ..., "keys": [...], "counts": [...], "sizes": [...]}`` and each
per-key blob is ``zlib(delta(steps) | delta(timestamps) | values)`` as little-endian int64/int64/
float64 columns (deltas wrap modulo 2**64). The metric-history view stores those blobs unchanged,
so a point is compressed once and never re-encoded on the way to the view.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
import uuid
import zlib
from array import array
from collections.abc import Callable
from itertools import accumulate
from typing import Any, Final

import orjson

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

_MASK: Final = (1 << 64) - 1
_MAGIC: Final = b"M1"
_LITTLE: Final = sys.byteorder == "little"

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


def _delta(column: array[int]) -> array[int]:
    out = array("Q")
    if column:
        out.extend([(x - p) & _MASK for p, x in zip([0, *column[:-1]], column, strict=True)])
    return out


def _undelta(deltas: array[int]) -> array[int]:
    unsigned = array("Q", accumulate(deltas, lambda a, b: (a + b) & _MASK))
    return _from_le("q", unsigned.tobytes()) if _LITTLE else array("q", _signed(unsigned))


def _signed(values: array[int]) -> list[int]:
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def pack_series(series: MetricSeries) -> bytes:
    """One key's points as the compressed blob stored in the log and in the history view;
    made once per series and kept on it."""
    if series.packed is not None:
        return series.packed
    raw = _le(_delta(series.steps)) + _le(_delta(series.timestamps)) + _le(series.values)
    blob = zlib.compress(raw, 1)
    object.__setattr__(series, "packed", blob)  # a cache of a pure function of frozen fields
    return blob


def unpack_series(key: str, blob: bytes, count: int) -> MetricSeries:
    raw = zlib.decompress(blob)
    width = 8 * count
    if len(raw) != 3 * width:
        raise StoreError(f"corrupt metric block for {key!r}: {len(raw)} bytes for {count} points")
    steps = _undelta(_from_le("Q", raw[:width]))
    stamps = _undelta(_from_le("Q", raw[width : 2 * width]))
    values = _from_le("d", raw[2 * width :])
    return MetricSeries(key, steps, stamps, values, blob)


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
