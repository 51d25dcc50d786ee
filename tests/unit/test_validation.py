"""MLflow's naming and value rules, enforced at the call site."""

from __future__ import annotations

import math

import pytest

from tracker.errors import InvalidInputError
from tracker.validation import (
    validate_batch_limits,
    validate_int64,
    validate_key,
    validate_metric_value,
    validate_param,
    validate_tag,
    validate_timestamp,
)


@pytest.mark.parametrize("key", ["loss", "train/loss", "a.b-c d:e", "ü_ñ", "x" * 250])
def test_valid_keys_are_accepted(key: str) -> None:
    """Names MLflow accepts come back unchanged."""
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "Missing value"),
        ("x" * 251, "maximum length of 250"),
        ("a;b", "may only contain"),
        ("a\\b", "may only contain"),
        ("../up", "normalized relative path"),
        ("a/../b", "normalized relative path"),
        ("/abs", "normalized relative path"),
        ("a//b", "normalized relative path"),
        ("a/./b", "normalized relative path"),
        ("a/", "normalized relative path"),
        (".", "normalized relative path"),
        (3, "must be a string"),
    ],
)
def test_invalid_keys_say_what_to_fix(key: object, fragment: str) -> None:
    """Every refused name raises InvalidInputError with a message naming the rule."""
    with pytest.raises(InvalidInputError, match=fragment.replace(".", r"\.")):
        validate_key(key)


def test_metric_values() -> None:
    """Real numbers become floats (bools as 0/1, as MLflow), NaN/±Inf are kept, anything
    else is refused."""
    assert validate_metric_value("k", 3) == 3.0
    assert validate_metric_value("k", True) == 1.0
    assert math.isnan(validate_metric_value("k", math.nan))
    assert validate_metric_value("k", -math.inf) == -math.inf
    for bad in ("1.0", None, [1], 1j, b"1"):
        with pytest.raises(InvalidInputError):
            validate_metric_value("k", bad)


def test_one_numeric_rule_for_numpy_scalars() -> None:
    """numpy's scalars follow the same rule as Python's: numbers (and 0-d arrays) are values,
    integral types are steps, bools and floats are not steps."""
    np = pytest.importorskip("numpy")
    assert validate_metric_value("k", np.float32(0.5)) == 0.5
    assert validate_metric_value("k", np.int64(7)) == 7.0
    assert validate_metric_value("k", np.bool_(True)) == 1.0
    assert validate_metric_value("k", np.array(2.5)) == 2.5
    with pytest.raises(InvalidInputError, match="real numbers"):
        validate_metric_value("k", np.array([1.0, 2.0]))
    assert validate_int64("step", np.int64(7)) == 7
    assert validate_int64("step", np.int32(-3)) == -3
    for bad in (True, np.bool_(False), 1.0, np.float64(2.0), "3"):
        with pytest.raises(InvalidInputError, match="must be an integer"):
            validate_int64("step", bad)
    with pytest.raises(InvalidInputError, match="does not fit"):
        validate_metric_value("k", 10**400)


class TensorLike:
    """What validation sees of a torch tensor: not a registered number, but `.item()` (which
    raises RuntimeError unless it holds one element), `__float__`, and `__index__` for integer
    dtypes of one element, as torch.Tensor has them."""

    def __init__(self, *values: float, integral: bool = False) -> None:
        self.values = values
        self.integral = integral
        self.ndim = 0 if len(values) == 1 else 1

    def item(self) -> float:
        if len(self.values) != 1:
            raise RuntimeError(
                f"a Tensor with {len(self.values)} elements cannot be converted to Scalar"
            )
        return self.values[0]

    def __float__(self) -> float:
        return float(self.item())

    def __index__(self) -> int:
        if not self.integral:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())


class FloatOnly:
    """A number-like object with `__float__` alone: not a number by the module's rule."""

    def __float__(self) -> float:
        return 1.0


def test_one_numeric_rule_for_tensors() -> None:
    """A 0-d tensor is a metric value through `.item()`, keeping NaN; an integer one is a step
    through `__index__`; a tensor of several elements, a float one as a step, and an object
    with only `__float__` are refused with InvalidInputError."""
    assert validate_metric_value("loss", TensorLike(0.25)) == 0.25
    assert math.isnan(validate_metric_value("loss", TensorLike(math.nan)))
    assert validate_metric_value("loss", TensorLike(3, integral=True)) == 3.0
    assert validate_int64("step", TensorLike(7, integral=True)) == 7
    with pytest.raises(InvalidInputError, match="real numbers"):
        validate_metric_value("loss", TensorLike(1.0, 2.0))
    with pytest.raises(InvalidInputError, match="real numbers"):
        validate_metric_value("loss", TensorLike(1j))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="must be an integer"):
        validate_int64("step", TensorLike(7.0))
    with pytest.raises(InvalidInputError, match="64-bit"):
        validate_int64("step", TensorLike(1 << 63, integral=True))
    with pytest.raises(InvalidInputError, match="real numbers"):
        validate_metric_value("loss", FloatOnly())


def test_steps_and_timestamps() -> None:
    """Steps are int64; timestamps are non-negative int64 milliseconds."""
    assert validate_int64("step", -(1 << 63)) == -(1 << 63)
    with pytest.raises(InvalidInputError, match="64-bit"):
        validate_int64("step", 1 << 63)
    with pytest.raises(InvalidInputError):
        validate_int64("step", 1.5)
    with pytest.raises(InvalidInputError, match=">= 0"):
        validate_timestamp(-1)


def test_param_and_tag_values() -> None:
    """Values are stringified; over-long ones are refused with the limit in the message."""
    assert validate_param("p", 0.1) == ("p", "0.1")
    assert validate_tag("t", None) == ("t", "None")
    with pytest.raises(InvalidInputError, match="6000"):
        validate_param("p", "x" * 6001)
    with pytest.raises(InvalidInputError, match="8000"):
        validate_tag("t", "x" * 8001)


def test_batch_limits() -> None:
    """MLflow's log-batch limits hold: 1000 metrics, 100 params, 100 tags, 1000 in all."""
    validate_batch_limits(1000, 0, 0)
    validate_batch_limits(800, 100, 100)
    for args in ((1001, 0, 0), (0, 101, 0), (0, 0, 101), (900, 100, 1)):
        with pytest.raises(InvalidInputError, match="limit"):
            validate_batch_limits(*args)
