"""Every field's rules, in one place: MLflow's, and what every backend's columns can store.

Limits are the stricter of MLflow's and the column's (read from tracker/stores/schema.py), so a
value that passes is accepted by every backend. Strings are refused when they hold NUL (which
PostgreSQL cannot store) or lone surrogates (which no UTF-8 column can).

Numbers follow one rule. A metric value is a real number, converted with `float()`: Python's
int, float and bool (True is 1.0), anything registered as `numbers.Real` (numpy's float and
integer scalars, Fraction), and otherwise anything whose `.item()` returns one of those: numpy's
bool scalar, numpy arrays and torch tensors holding exactly one element (usually 0-d). An
`.item()` that raises (several elements) or returns something else (complex, str) is refused,
as is every other type, including those with only `__float__`. NaN and ±Inf are kept. A step or
timestamp is an integer: int or anything with `__index__` (numpy's integer scalars, a torch
integer tensor of one element), but not a bool or a float, and within int64.
"""

from __future__ import annotations

import contextlib
import numbers
import operator
import posixpath
import re
from collections.abc import Mapping
from typing import Any, Final

from tracker.errors import InvalidInputError
from tracker.events import RUN_NAME_TAG, RUN_STATUSES, DatasetInput
from tracker.stores import schema

MAX_KEY_LENGTH: Final = min(250, schema.KEY_LENGTH)
MAX_PARAM_VALUE_LENGTH: Final = 6000
MAX_TAG_VALUE_LENGTH: Final = 8000
MAX_EXPERIMENT_TAG_VALUE_LENGTH: Final = 5000
MAX_EXPERIMENT_NAME_LENGTH: Final = min(500, schema.NAME_LENGTH)
MAX_RUN_NAME_LENGTH: Final = min(250, schema.KEY_LENGTH)
MAX_USER_LENGTH: Final = schema.KEY_LENGTH
MAX_ID_LENGTH: Final = schema.ID_LENGTH
MAX_DATASET_NAME_LENGTH: Final = min(500, schema.NAME_LENGTH)
MAX_DATASET_DIGEST_LENGTH: Final = min(36, schema.ID_LENGTH)
MAX_DATASET_SOURCE_TYPE_LENGTH: Final = schema.KEY_LENGTH
MAX_DATASET_SOURCE_LENGTH: Final = 65535
MAX_DATASET_SCHEMA_LENGTH: Final = (1 << 20) - 1
MAX_DATASET_PROFILE_LENGTH: Final = (1 << 24) - 1
MAX_INPUT_TAG_KEY_LENGTH: Final = 255
MAX_INPUT_TAG_VALUE_LENGTH: Final = 500
MAX_ARTIFACT_PATH_LENGTH: Final = schema.NAME_LENGTH
MAX_CONTENT_TYPE_LENGTH: Final = schema.KEY_LENGTH
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


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def validate_text(value: object, what: str, limit: int | None = None) -> str:
    """`value` if it is a string every backend can store (no NUL, no lone surrogate, at most
    `limit` characters), else InvalidInputError saying which and where."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}: {value!r}")
    if limit is not None and len(value) > limit:
        raise InvalidInputError(
            f"{what} {_shown(value)} is {len(value)} characters; the limit is {limit}"
        )
    if "\x00" in value:
        raise InvalidInputError(
            f"{what} {_shown(value)} contains a NUL character (at {value.index(chr(0))}), "
            "which databases cannot store; remove it"
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"{what} {_shown(value)} contains a lone surrogate (U+{ord(value[exc.start]):04X} "
                f"at {exc.start}), which is not valid Unicode text; decode the source properly"
            ) from None
    return value


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
    """A metric value as a float, by the module's rule; NaN and ±Inf are kept."""
    if isinstance(value, float):
        return value
    if value is None:
        raise InvalidInputError(f"Missing value for metric {key!r}: give a number")
    if not isinstance(value, numbers.Real) and hasattr(value, "item"):
        # numpy scalars and 0-d arrays, torch tensors; an array of several values is refused
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            value = value.item()
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:
            raise InvalidInputError(
                f"Metric {key!r} value {value!r} does not fit a double"
            ) from None
    raise InvalidInputError(
        f"Got invalid value {value!r} for metric {key!r} (type {type(value).__name__}): "
        "metric values must be real numbers"
    )


def validate_int64(name: str, value: object) -> int:
    """An integer by the module's rule, within int64."""
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidInputError(
            f"{name} must be an integer, got {type(value).__name__}: {value!r}"
        ) from None
    if not INT64_MIN <= number <= INT64_MAX:
        raise InvalidInputError(f"{name} {number} is outside the 64-bit integer range")
    return number


def validate_timestamp(value: object, what: str = "timestamp") -> int:
    ts = validate_int64(what, value)
    if ts < 0:
        raise InvalidInputError(f"{what} must be milliseconds since the epoch (>= 0), got {ts}")
    return ts


def validate_optional_time(value: object, what: str) -> int | None:
    return None if value is None else validate_timestamp(value, what)


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
    return k, validate_text(v, f"param {k!r} value")


def validate_tag(key: object, value: object, limit: int | None = None) -> tuple[str, str]:
    """A tag as (key, value). `limit` is the value's: by default a run tag's, where the run-name
    tag (`mlflow.runName`) has the run name's limit, since it sets the run's name."""
    k = validate_key(key, "tag key")
    v = stringify(value)
    names_the_run = limit is None and k == RUN_NAME_TAG
    if limit is None:
        limit = MAX_RUN_NAME_LENGTH if names_the_run else MAX_TAG_VALUE_LENGTH
    if len(v) > limit:
        if names_the_run:
            raise InvalidInputError(
                f"Tag {k!r} value is {len(v)} characters; it is the run's name, whose limit is "
                f"{limit}: give a shorter name"
            )
        raise InvalidInputError(f"Tag {k!r} value is {len(v)} characters; the limit is {limit}")
    return k, validate_text(v, f"tag {k!r} value")


def validate_params(params: Mapping[Any, Any] | None) -> dict[str, str]:
    return dict(validate_param(k, v) for k, v in (params or {}).items())


def validate_tags(tags: Mapping[Any, Any] | None, limit: int | None = None) -> dict[str, str]:
    """Tags as validate_tag checks them; `limit` as there (None: a run's tags)."""
    return dict(validate_tag(k, v, limit) for k, v in (tags or {}).items())


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
    return validate_text(name, "experiment name")


def validate_run_name(name: object) -> str:
    return validate_text(name, "run name", MAX_RUN_NAME_LENGTH)


def validate_user(user: object) -> str:
    return validate_text(user, "user", MAX_USER_LENGTH)


def validate_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise InvalidInputError(f"Invalid run id {run_id!r}")
    return run_id


def validate_new_run_id(run_id: object) -> str:
    """A run id for a run being created: MLflow's rule, and short enough for every column."""
    rid = validate_run_id(run_id)
    if len(rid) > MAX_ID_LENGTH:
        raise InvalidInputError(f"run id {rid[:40]!r}... is longer than {MAX_ID_LENGTH} characters")
    return rid


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


def validate_dataset(ds: object) -> DatasetInput:
    """A dataset input whose every field fits MLflow's limits and every backend."""
    if not isinstance(ds, DatasetInput):
        raise InvalidInputError(
            f"log_inputs takes tracker.DatasetInput objects, got {type(ds).__name__}"
        )
    name = validate_text(ds.name, "dataset name", MAX_DATASET_NAME_LENGTH)
    if not name:
        raise InvalidInputError("Missing value for required parameter 'dataset.name'")
    tags = {}
    for k, v in ds.tags.items():
        k = validate_text(k, "dataset input tag key", MAX_INPUT_TAG_KEY_LENGTH)
        tags[k] = validate_text(stringify(v), f"dataset input tag {k!r} value",
                                MAX_INPUT_TAG_VALUE_LENGTH)  # fmt: skip
    return DatasetInput(
        name=name,
        digest=validate_text(ds.digest, "dataset digest", MAX_DATASET_DIGEST_LENGTH),
        source_type=validate_text(ds.source_type, "dataset source_type",
                                  MAX_DATASET_SOURCE_TYPE_LENGTH),
        source=validate_text(ds.source, "dataset source", MAX_DATASET_SOURCE_LENGTH),
        schema=None if ds.schema is None else validate_text(ds.schema, "dataset schema",
                                                              MAX_DATASET_SCHEMA_LENGTH),
        profile=None if ds.profile is None else validate_text(ds.profile, "dataset profile",
                                                                MAX_DATASET_PROFILE_LENGTH),
        tags=tags,
    )  # fmt: skip


def validate_artifact_record(
    path: object, size: object, sha256: object, content_type: object
) -> None:
    """What an ArtifactLogged event records must fit the views' columns."""
    validate_text(path, "artifact path", MAX_ARTIFACT_PATH_LENGTH)
    validate_int64("artifact size", size)
    validate_text(sha256, "artifact sha256", MAX_ID_LENGTH)
    validate_text(content_type, "artifact content type", MAX_CONTENT_TYPE_LENGTH)
