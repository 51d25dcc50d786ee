"""MLflow's wire format: requests read against a field schema, answers as protobuf-style JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson
from aiohttp import web
from multidict import MultiMapping

from tracker.server.errors import API_DOCS_HINT, RestError, invalid_parameter

Kind = Literal["string", "int64", "int32", "double", "bool", "enum", "message"]

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
INT32_MIN: Final = -(1 << 31)
INT32_MAX: Final = (1 << 31) - 1
# How much of a refused value an error message repeats: enough to recognise it, never the
# megabytes someone sent.
_SHOWN_VALUE_CHARS: Final = 200
_JSON_TYPES: Final = ("application/json",)
_NON_FINITE: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


@dataclass(frozen=True, slots=True)
class Field:
    """One request field: its protobuf kind, whether it repeats or is required, the names of
    an enum's values (numbered from 1, as MLflow's enums are) or a message's own schema."""

    name: str
    kind: Kind = "string"
    repeated: bool = False
    required: bool = False
    values: tuple[str, ...] = ()
    fields: tuple[Field, ...] = ()
    alias: str | None = None
    """An older name accepted when `name` is absent (MLflow's `run_uuid` for `run_id`)."""


@dataclass(frozen=True, slots=True)
class Message:
    """A request read against its schema: every present field has its declared type."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.values

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name, default)
        assert value is None or isinstance(value, str)
        return value

    def text(self, name: str) -> str:
        """A required string field (the schema has refused a request without it)."""
        value = self.values[name]
        assert isinstance(value, str)
        return value

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.values.get(name, default)
        assert value is None or isinstance(value, int)
        return value

    def whole(self, name: str) -> int:
        """An integer field, 0 when absent (protobuf's default)."""
        value = self.values.get(name, 0)
        assert isinstance(value, int)
        return value

    def number(self, name: str) -> float:
        value = self.values[name]
        assert isinstance(value, float)
        return value

    def strings(self, name: str) -> list[str]:
        value = self.values.get(name, [])
        assert isinstance(value, list)
        return value

    def messages(self, name: str) -> list[Message]:
        value = self.values.get(name, [])
        assert isinstance(value, list)
        return value

    def message(self, name: str) -> Message | None:
        value = self.values.get(name)
        assert value is None or isinstance(value, Message)
        return value


def missing_value(path: str) -> RestError:
    return invalid_parameter(f"Missing value for required parameter '{path}'.{API_DOCS_HINT}")


def invalid_value(path: str, value: Any, why: str | None = None) -> RestError:
    """MLflow's message for a value of the wrong type, double space after the colon included."""
    hint = why or f"Hint: Value was of type '{type(value).__name__}'."
    return invalid_parameter(
        f"Invalid value {_shown(value)} for parameter '{path}' supplied:  {hint}{API_DOCS_HINT}"
    )


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    if len(text) > _SHOWN_VALUE_CHARS:
        return f"{text[:_SHOWN_VALUE_CHARS]}... ({len(text)} characters)"
    return text


# -- reading a request ---------------------------------------------------------------------


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object a POST carries. MLflow's rules: the content type must be JSON, an empty
    body is `{}`, a body that is a JSON string holding an object (older clients encoded twice)
    is decoded again. Malformed JSON, invalid UTF-8 or a non-object is a 400 that says so."""
    content_type = request.headers.get("Content-Type")
    if content_type is None:
        raise invalid_parameter("Bad Request. Content-Type header is missing.")
    if content_type.split(";")[0].strip().lower() not in _JSON_TYPES:
        raise invalid_parameter(f"Bad Request. Content-Type must be one of {list(_JSON_TYPES)}.")
    raw = await request.read()  # bounded by the app's client_max_size: a 413 beyond it
    if not raw or raw.isspace():
        return {}
    body = decode_json(raw)
    if isinstance(body, str):
        body = decode_json(body.encode("utf-8", "surrogatepass"))
    if not isinstance(body, dict):
        raise invalid_parameter(
            f"Invalid request body: expected a JSON object, got {type(body).__name__}; "
            'send the fields as {"name": value, ...}'
        )
    return body


def decode_json(raw: bytes) -> Any:
    """Parse JSON with orjson. Python's own parser is the fallback only for the bare NaN and
    Infinity tokens some clients write (orjson refuses them, Python's json.dumps emits them)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        error = exc
    if b"NaN" in raw or b"Infinity" in raw:
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            pass
    raise invalid_parameter(
        f"Malformed JSON in the request body: {error}. Send a UTF-8 JSON object (nested at "
        "most 1024 levels deep)"
    )


def query_to_json(query: MultiMapping[str], schema: Sequence[Field]) -> dict[str, Any]:
    """A GET request's query parameters as the JSON object they stand for: repeated fields
    from repeated keys (`run_ids=a&run_ids=b`), others from their first occurrence; booleans
    must be `true` or `false`, as MLflow requires."""
    out: dict[str, Any] = {}
    for f in schema:
        for name in (f.name, f.alias):
            if name is None or name not in query:
                continue
            if f.repeated:
                out[name] = query.getall(name)
                continue
            value: Any = query.getone(name)
            if f.kind == "bool":
                if value.lower() not in ("true", "false"):
                    raise invalid_parameter(
                        f"Invalid boolean value: {value}, must be 'true' or 'false'."
                    )
                value = value.lower() == "true"
            out[name] = value
    return out


def parse(body: Mapping[str, Any], schema: Sequence[Field], prefix: str = "") -> Message:
    """Check `body` against `schema` and convert its values as protobuf's JSON parser does
    (numbers in strings, enum names or numbers, "NaN" and "Infinity" for doubles). Unknown
    fields are ignored, as in MLflow. Raises RestError naming the first offending field by
    its path (`metrics[3].value`) in MLflow's words."""
    values: dict[str, Any] = {}
    for f in schema:
        path = f"{prefix}{f.name}"
        raw = body.get(f.name)
        if raw is None and f.alias is not None:
            raw = body.get(f.alias)
        if raw is None or (raw == "" and f.required):
            if f.required:
                raise missing_value(path)
            continue
        if f.repeated:
            if not isinstance(raw, list):
                raise invalid_value(path, raw)
            values[f.name] = [_convert(f, item, f"{path}[{i}]") for i, item in enumerate(raw)]
        else:
            values[f.name] = _convert(f, raw, path)
    return Message(values)


def _convert(f: Field, value: Any, path: str) -> Any:
    if f.kind == "string":
        # MLflow coerces experiment ids to strings before parsing: 1 means "1".
        is_id = f.name.endswith("experiment_id") or f.name == "experiment_ids"
        if is_id and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise invalid_value(path, value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid_value(
                path, value, "it contains an unpaired UTF-16 surrogate; send valid Unicode."
            ) from None
        return value
    if f.kind in ("int64", "int32"):
        return _integer(value, path, f.kind)
    if f.kind == "double":
        return _double(value, path)
    if f.kind == "bool":
        if not isinstance(value, bool):
            raise invalid_value(path, value)
        return value
    if f.kind == "enum":
        return _enum(f, value, path)
    if not isinstance(value, dict):
        raise invalid_value(path, value)
    return parse(value, f.fields, f"{path}.")


def _integer(value: Any, path: str, kind: Kind) -> int:
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip() == value:
        try:
            number = int(value)
        except ValueError:
            number = None
    low, high = (INT64_MIN, INT64_MAX) if kind == "int64" else (INT32_MIN, INT32_MAX)
    if number is None:
        raise invalid_value(path, value)
    if not low <= number <= high:
        bits = 64 if kind == "int64" else 32
        raise invalid_value(path, value, f"it does not fit a {bits}-bit integer.")
    return number


def _double(value: Any, path: str) -> float:
    if isinstance(value, bool):
        raise invalid_value(path, value)
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            raise invalid_value(path, value, "it does not fit a double.") from None
    if isinstance(value, str):
        if value in _NON_FINITE:
            return _NON_FINITE[value]
        try:
            return float(value)
        except ValueError:
            pass
    raise invalid_value(path, value)


def _enum(f: Field, value: Any, path: str) -> str:
    if isinstance(value, str) and value in f.values:
        return value
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    if number is not None and 1 <= number <= len(f.values):
        return f.values[number - 1]
    raise invalid_value(path, value, f"it must be one of {', '.join(f.values)}.")


# -- answering -----------------------------------------------------------------------------


def json_response(body: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def double(value: float) -> float | str:
    """A double as protobuf's JSON writes it: NaN and the infinities as strings."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"
