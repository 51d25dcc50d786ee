"""MLflow's rules for names and values, checked at the call site before anything is queued."""

from __future__ import annotations

import posixpath
import re
from typing import Any, Final

from tracker.errors import InvalidInputError
from tracker.events import RUN_STATUSES

MAX_KEY_LENGTH: Final = 250
MAX_PARAM_VALUE_LENGTH: Final = 6000
MAX_TAG_VALUE_LENGTH: Final = 8000
MAX_EXPERIMENT_TAG_VALUE_LENGTH: Final = 5000
MAX_EXPERIMENT_NAME_LENGTH: Final = 500
MAX_BATCH_METRICS: Final = 1000
MAX_BATCH_PARAMS: Final = 100
MAX_BATCH_TAGS: Final = 100
MAX_BATCH_TOTAL: Final = 1000
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1

_KEY_RE: Final = re.compile(r"^[/\w.\- :]*$")
_RUN_ID_RE: Final = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
_EXPERIMENT_ID_RE: Final = re.compile(r"^[a-zA-Z0-9][\w\-]{0,63}$")

# Keys already checked: the hot path pays one set lookup per call. Bounded so that a caller
# inventing keys forever cannot grow it without limit.
_VALID_KEYS: set[str] = set()
_VALID_KEYS_MAX: Final = 100_000


def validate_key(key: object, what: str = "key") -> str:
    """Return `key` if MLflow would accept it as a metric, param or tag name, else raise."""
    if isinstance(key, str) and key in _VALID_KEYS:
        return key
    if not isinstance(key, str):
        raise InvalidInputError(f"{what} must be a string, got {type(key).__name__}: {key!r}")
    if not key:
        raise InvalidInputError(f"Missing value for required parameter {what!r}: give a name")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInputError(
            f"{what} {key[:40]!r}... exceeds the maximum length of {MAX_KEY_LENGTH} characters"
        )
    if not _KEY_RE.match(key):
        raise InvalidInputError(
            f"Invalid {what} {key!r}: names may only contain alphanumerics, underscores (_), "
            "dashes (-), periods (.), spaces ( ), colons (:) and slashes (/)"
        )
    if key.startswith("/") or key == "." or key.startswith("..") or posixpath.normpath(key) != key:
        raise InvalidInputError(
            f"Invalid {what} {key!r}: it must be a normalized relative path "
            "(no leading '/', no '..', no '//' or './' segments, no trailing '/')"
        )
    if len(_VALID_KEYS) < _VALID_KEYS_MAX:
        _VALID_KEYS.add(key)
    return key


def validate_metric_value(key: str, value: object) -> float:
    """A metric value as a float; NaN and ±Inf are kept, bools and non-numbers refused."""
    if isinstance(value, float):
        return value
    if value is None:
        raise InvalidInputError(f"Missing value for metric {key!r}: give a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value.__float__())  # type: ignore[attr-defined]  # numpy scalars, tensors
        except (AttributeError, TypeError, ValueError):
            raise InvalidInputError(
                f"Got invalid value {value!r} for metric {key!r} "
                f"(type {type(value).__name__}): metric values must be numbers"
            ) from None
    try:
        return float(value)
    except OverflowError:
        raise InvalidInputError(f"Metric {key!r} value {value!r} does not fit a double") from None


def validate_int64(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidInputError(f"{name} {value} is outside the 64-bit integer range")
    return value


def validate_timestamp(value: object) -> int:
    ts = validate_int64("timestamp", value)
    if ts < 0:
        raise InvalidInputError(f"timestamp must be milliseconds since the epoch (>= 0), got {ts}")
    return ts


def stringify(value: Any) -> str:
    """Param and tag values are strings, as in MLflow (`str(value)`)."""
    return value if isinstance(value, str) else str(value)


def validate_param(key: object, value: object) -> tuple[str, str]:
    k = validate_key(key, "param key")
    v = stringify(value)
    if len(v) > MAX_PARAM_VALUE_LENGTH:
        raise InvalidInputError(
            f"Param {k!r} value is {len(v)} characters; the limit is {MAX_PARAM_VALUE_LENGTH}. "
            "Log long values as an artifact instead"
        )
    return k, v


def validate_tag(key: object, value: object, limit: int = MAX_TAG_VALUE_LENGTH) -> tuple[str, str]:
    k = validate_key(key, "tag key")
    v = stringify(value)
    if len(v) > limit:
        raise InvalidInputError(f"Tag {k!r} value is {len(v)} characters; the limit is {limit}")
    return k, v


def validate_status(status: object) -> str:
    if status not in RUN_STATUSES:
        raise InvalidInputError(
            f"Invalid run status {status!r}: use one of {', '.join(RUN_STATUSES)}"
        )
    assert isinstance(status, str)
    return status


def validate_experiment_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"Invalid experiment name {name!r}: give a non-empty string")
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise InvalidInputError(
            f"Experiment name exceeds the maximum length of {MAX_EXPERIMENT_NAME_LENGTH} characters"
        )
    return name


def validate_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise InvalidInputError(f"Invalid run id {run_id!r}")
    return run_id


def validate_experiment_id(experiment_id: object) -> str:
    if not isinstance(experiment_id, str) or not _EXPERIMENT_ID_RE.match(experiment_id):
        raise InvalidInputError(f"Invalid experiment id {experiment_id!r}")
    return experiment_id


def validate_batch_limits(n_metrics: int, n_params: int, n_tags: int) -> None:
    """MLflow's log-batch limits: 1000 metrics, 100 params, 100 tags, 1000 in all."""
    for n, limit, what in (
        (n_metrics, MAX_BATCH_METRICS, "metrics"),
        (n_params, MAX_BATCH_PARAMS, "params"),
        (n_tags, MAX_BATCH_TAGS, "tags"),
        (n_metrics + n_params + n_tags, MAX_BATCH_TOTAL, "metrics, params and tags in all"),
    ):
        if n > limit:
            raise InvalidInputError(
                f"A batch logged {n} {what}; the limit is {limit}. Split it into smaller batches"
            )
