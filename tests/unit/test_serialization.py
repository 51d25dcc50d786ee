"""Event encoding: orjson payloads, packed metric columns, and upcasting old versions."""

from __future__ import annotations

import math
from array import array

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.errors import StoreError
from tracker.events import (
    DatasetInput,
    DatasetInputsLogged,
    MetricSeries,
    MetricsLogged,
    RunCreated,
    TagsSet,
)
from tracker.serialization import deserialize, serialize

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)


@given(
    st.lists(
        st.tuples(INT64, st.integers(0, (1 << 63) - 1), st.floats(allow_nan=True)), max_size=200
    )
)
def test_metric_points_round_trip_exactly(points: list[tuple[int, int, float]]) -> None:
    """Any int64 steps and timestamps and any doubles (NaN, ±Inf, -0.0) come back bit for bit."""
    s = MetricSeries(
        "k",
        array("q", [p[0] for p in points]),
        array("q", [p[1] for p in points]),
        array("d", [p[2] for p in points]),
    )
    event = MetricsLogged("r" * 32, (s,))
    assert deserialize(*serialize(event)) == event


def test_metric_points_are_compact() -> None:
    """A typical series (consecutive steps, close timestamps) packs to about 9 bytes a point."""
    n = 10_000
    s = MetricSeries("loss", array("q", range(n)), array("q", [1_700_000_000_000 + i // 10 for i in range(n)]),
                     array("d", [1 / (i + 1) for i in range(n)]))  # fmt: skip
    _, _, payload = serialize(MetricsLogged("r" * 32, (s,)))
    assert len(payload) / n < 10


def test_json_events_round_trip() -> None:
    """Ordinary events are orjson and come back equal."""
    for event in (
        RunCreated("r", "0", "name", 1, "u", "file:///a", {"a": "b"}, "p"),
        TagsSet("r", {"k": "ü"}),
        DatasetInputsLogged(
            "r",
            (
                DatasetInput(
                    "d", "abc", "local", "/x", None, None, {"mlflow.data.context": "train"}
                ),
            ),
        ),
    ):
        name, version, payload = serialize(event)
        assert payload.startswith(b"{")
        assert deserialize(name, version, payload) == event


def test_old_schema_version_is_upcast() -> None:
    """A RunCreated stored as v1 (name, no parent) loads as today's event."""
    v1 = orjson.dumps({"run_id": "r", "experiment_id": "0", "name": "old", "start_time": 5, "user_id": "u",
                       "artifact_uri": "file:///a", "tags": {}})  # fmt: skip
    event = deserialize("RunCreated", 1, v1)
    assert event == RunCreated("r", "0", "old", 5, "u", "file:///a", {}, None)


def test_unknown_or_future_events_are_clear_errors() -> None:
    """An unknown type or a newer version says to upgrade rather than guessing."""
    with pytest.raises(StoreError, match="unknown event type"):
        deserialize("Nope", 1, b"{}")
    with pytest.raises(StoreError, match="newer"):
        deserialize("TagsSet", 9, orjson.dumps({"run_id": "r", "tags": {}}))


def test_nan_ranks_above_numbers_for_latest() -> None:
    """At equal step and timestamp NaN counts as the largest value, deterministically."""
    s = MetricSeries("k", array("q", [1, 1]), array("q", [5, 5]), array("d", [math.nan, 2.0]))
    assert math.isnan(s.latest()[2])
