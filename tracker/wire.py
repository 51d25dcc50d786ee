"""Commands as JSON-able dicts: what recovery files, the remote client's outbox and the native
HTTP API carry. Metric points travel packed, as the log stores them."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from tracker import commands as c
from tracker.errors import InvalidInputError, StoreError
from tracker.events import DatasetInput, MetricSeries
from tracker.serialization import pack_series, unpack_series
from tracker.validation import validate_key

COMMANDS: Final[dict[str, type[c.Command]]] = {
    cls.__name__: cls
    for cls in (
        c.CreateExperiment, c.RenameExperiment, c.DeleteExperiment, c.RestoreExperiment,
        c.SetExperimentTag, c.DeleteExperimentTag, c.CreateRun, c.UpdateRun, c.ResumeRun,
        c.DeleteRun, c.RestoreRun, c.LogBatch, c.DeleteTag, c.LogInputs, c.RecordArtifact,
    )
}  # fmt: skip
_MAX_SERIES_POINTS: Final = 10_000_000


def encode(command: c.Command) -> dict[str, Any]:
    """A command as a JSON-able dict (its id in hex)."""
    out: dict[str, Any] = {"type": type(command).__name__, "id": command.command_id.hex()}
    for f in dataclasses.fields(command):
        if f.name == "command_id":
            continue
        value = getattr(command, f.name)
        if f.name == "series":
            value = [
                {"key": s.key, "n": len(s), "blob": base64.b64encode(pack_series(s)).decode()}
                for s in value
            ]
        elif f.name == "datasets":
            value = [dataclasses.asdict(d) for d in value]
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out


def decode(data: object) -> c.Command:
    """The command a dict from `encode` describes; anything malformed is InvalidInputError
    naming the field (the command's own validation runs too)."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"a command must be a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    cls = COMMANDS.get(kind) if isinstance(kind, str) else None
    if cls is None or not isinstance(kind, str):
        raise InvalidInputError(f"unknown command type {kind!r}; known: {', '.join(COMMANDS)}")
    try:
        command_id = bytes.fromhex(data["id"])
        if len(command_id) != 16:
            raise ValueError("not 16 bytes")
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError(f"{kind}: 'id' must be 32 hex digits") from None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "command_id"}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in ("type", "id"):
            continue
        if name not in fields:
            raise InvalidInputError(f"{kind}: unknown field {name!r}")
        if name == "series":
            value = tuple(_series(kind, i, s) for i, s in enumerate(_list(kind, name, value)))
        elif name == "datasets":
            value = tuple(_dataset(kind, i, d) for i, d in enumerate(_list(kind, name, value)))
        kwargs[name] = value
    try:
        return cls(command_id=command_id, **kwargs)
    except TypeError as exc:
        raise InvalidInputError(f"{kind}: {exc}") from None


def _list(kind: str, name: str, value: object) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInputError(f"{kind}: {name!r} must be a list")
    return value


def _series(kind: str, i: int, s: object) -> MetricSeries:
    where = f"{kind}: series[{i}]"
    if not isinstance(s, dict) or not isinstance(s.get("key"), str):
        raise InvalidInputError(f"{where} must be an object with a string 'key'")
    n = s.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= _MAX_SERIES_POINTS:
        raise InvalidInputError(f"{where}: 'n' must be a point count up to {_MAX_SERIES_POINTS}")
    try:
        blob = base64.b64decode(s["blob"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise InvalidInputError(f"{where}: 'blob' must be base64") from None
    key = validate_key(s["key"], "metric key")
    try:
        series = unpack_series(key, blob, n)
    except StoreError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    if n and min(series.timestamps) < 0:
        raise InvalidInputError(f"{where}: timestamps must be milliseconds since the epoch")
    return series


def _dataset(kind: str, i: int, d: object) -> DatasetInput:
    if not isinstance(d, dict):
        raise InvalidInputError(f"{kind}: datasets[{i}] must be an object")
    try:
        return DatasetInput(**d)
    except TypeError as exc:
        raise InvalidInputError(f"{kind}: datasets[{i}]: {exc}") from None
