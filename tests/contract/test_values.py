"""Every field takes values up to its limit on every backend; past it, or holding what some
database cannot store (NUL, lone surrogates), it is refused at the call site and nothing is kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tracker import DatasetInput, InvalidInputError, Tracker
from tracker.events import RUN_NAME_TAG
from tracker.stores.base import SqlEventStore
from tracker.validation import (
    MAX_DATASET_DIGEST_LENGTH,
    MAX_DATASET_NAME_LENGTH,
    MAX_EXPERIMENT_NAME_LENGTH,
    MAX_EXPERIMENT_TAG_VALUE_LENGTH,
    MAX_KEY_LENGTH,
    MAX_PARAM_VALUE_LENGTH,
    MAX_RUN_NAME_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    MAX_USER_LENGTH,
)

# Characters of every width: ASCII, two-byte, three-byte and astral (a surrogate pair in UTF-16).
WIDE = "aé€😀"


def _text(n: int) -> str:
    return (WIDE * (n // len(WIDE) + 1))[:n]


@pytest.fixture
async def tk(store_factory: Callable[[], SqlEventStore]) -> Any:
    async with Tracker(store=store_factory(), max_batch_age=0.001) as tracker:
        yield tracker


async def test_values_at_their_limits_are_stored_on_every_backend(tk: Tracker) -> None:
    """A value of exactly the limit, in characters of every UTF-8 width, is stored and read
    back unchanged, in every field a user or a client sets."""
    key = "k" * (MAX_KEY_LENGTH - 1) + "é"
    exp = await tk.create_experiment(
        _text(MAX_EXPERIMENT_NAME_LENGTH), tags={key: _text(MAX_EXPERIMENT_TAG_VALUE_LENGTH)}
    )
    run = await tk.start_run(
        experiment_id=exp, name=_text(MAX_RUN_NAME_LENGTH), user=_text(MAX_USER_LENGTH),
        params={key: _text(MAX_PARAM_VALUE_LENGTH)}, tags={key: _text(MAX_TAG_VALUE_LENGTH)},
    )  # fmt: skip
    run.log_metric(key, 1.5)
    dataset = DatasetInput(
        name=_text(MAX_DATASET_NAME_LENGTH), digest=_text(MAX_DATASET_DIGEST_LENGTH),
        source_type="local", source=_text(65535), tags={"ctx": _text(500)},
    )  # fmt: skip
    run.log_inputs([dataset])
    await run.end()
    got = await tk.get_run(run.run_id)
    assert got.info.run_name == _text(MAX_RUN_NAME_LENGTH)
    assert got.info.user_id == _text(MAX_USER_LENGTH)
    assert got.data.params == {key: _text(MAX_PARAM_VALUE_LENGTH)}
    assert got.data.tags[key] == _text(MAX_TAG_VALUE_LENGTH)
    assert got.data.metrics == {key: 1.5}
    assert [(d.name, d.digest, d.source) for d in got.inputs] == [
        (dataset.name, dataset.digest, dataset.source)
    ]
    experiment = await tk.get_experiment(exp)
    assert experiment.name == _text(MAX_EXPERIMENT_NAME_LENGTH)
    assert experiment.tags == {key: _text(MAX_EXPERIMENT_TAG_VALUE_LENGTH)}
    assert tk.statistics().projection_errors == 0


BAD_TEXT = {
    "NUL": "a\x00b",
    "lone surrogate": "a\ud800b",
    "lone low surrogate": "\udfffz",
}


@pytest.mark.parametrize("what", sorted(BAD_TEXT))
async def test_text_no_database_can_store_is_refused_everywhere(tk: Tracker, what: str) -> None:
    """NUL (PostgreSQL cannot store it) and lone surrogates (no UTF-8 column can) are refused
    in every string field at the call site; nothing reaches the log, and the store stays
    healthy for the next write."""
    bad = BAD_TEXT[what]
    run = await tk.start_run("bad-values")
    attempts = [
        lambda: run.set_tag("k", bad),
        lambda: run.log_param("p", bad),
        lambda: run.log_inputs([DatasetInput(name=bad, digest="d", source_type="s", source="s")]),
        lambda: run.log_inputs([DatasetInput(name="n", digest="d", source_type="s", source=bad)]),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidInputError, match=r"NUL|surrogate"):
            attempt()
    for coro in (
        lambda: tk.start_run("bad-values", name=bad),
        lambda: tk.start_run("bad-values", user=bad),
        lambda: tk.create_experiment(bad),
        lambda: tk.set_experiment_tag("0", "k", bad),
        lambda: tk.update_run(run.run_id, run_name=bad),
        lambda: tk.create_run("0", tags={"k": bad}),
    ):
        with pytest.raises(InvalidInputError, match=r"NUL|surrogate"):
            await coro()
    run.set_tag("k", "fine")
    await run.end()
    assert (await tk.get_run(run.run_id)).data.tags["k"] == "fine"
    assert tk.statistics().projection_errors == 0


@pytest.mark.parametrize(
    "call",
    [
        "run name", "user", "tag value", "param value", "experiment name", "tag key",
        "dataset digest", "end_time", "run-name tag", "run-name tags", "run-name tag at create",
        "run-name tag in a batch",
    ],
)  # fmt: skip
async def test_values_past_their_limits_are_refused_at_the_call(tk: Tracker, call: str) -> None:
    """One past the limit is an InvalidInputError saying so, before anything is queued; the
    defects seen on PostgreSQL (a 300-character run name, a string end_time) included."""
    run = await tk.start_run("limits")
    position = await tk.flush()
    with pytest.raises(InvalidInputError):
        if call == "run name":
            await tk.start_run("limits", name="x" * (MAX_RUN_NAME_LENGTH + 1))
        elif call == "user":
            await tk.start_run("limits", user="x" * (MAX_USER_LENGTH + 1))
        elif call == "tag value":
            run.set_tag("k", "x" * (MAX_TAG_VALUE_LENGTH + 1))
        elif call == "param value":
            run.log_param("k", "x" * (MAX_PARAM_VALUE_LENGTH + 1))
        elif call == "experiment name":
            await tk.create_experiment("x" * (MAX_EXPERIMENT_NAME_LENGTH + 1))
        elif call == "tag key":
            run.set_tag("k" * (MAX_KEY_LENGTH + 1), "v")
        elif call == "dataset digest":
            digest = "x" * (MAX_DATASET_DIGEST_LENGTH + 1)
            run.log_inputs([DatasetInput(name="n", digest=digest, source_type="s", source="s")])
        elif call == "run-name tag":
            # The tag sets the run's name: its limit is the name's, not a tag's.
            run.set_tag(RUN_NAME_TAG, "x" * (MAX_RUN_NAME_LENGTH + 1))
        elif call == "run-name tags":
            run.set_tags({"other": "fine", RUN_NAME_TAG: "x" * (MAX_RUN_NAME_LENGTH + 1)})
        elif call == "run-name tag at create":
            await tk.create_run("0", tags={RUN_NAME_TAG: "x" * (MAX_RUN_NAME_LENGTH + 1)})
        elif call == "run-name tag in a batch":
            run.log_batch(tags={RUN_NAME_TAG: "x" * (MAX_RUN_NAME_LENGTH + 1)})
        else:
            await tk.update_run(run.run_id, end_time="soon")  # type: ignore[arg-type]
    assert await tk.flush() == position  # nothing was appended


async def test_the_run_name_tag_takes_a_run_name_up_to_its_limit(tk: Tracker) -> None:
    """`mlflow.runName` set as a tag, at the run name's limit in characters of every width,
    renames the run on every backend (its column is the run name's), with no projection error;
    one character more is refused with a message naming the run name's limit."""
    run = await tk.start_run("limits")
    name = _text(MAX_RUN_NAME_LENGTH)
    run.set_tags({"other": "kept", RUN_NAME_TAG: name})
    await tk.flush()
    got = await tk.get_run(run.run_id)
    assert got.info.run_name == name
    assert got.data.tags[RUN_NAME_TAG] == name and got.data.tags["other"] == "kept"
    with pytest.raises(
        InvalidInputError, match=f"run's name, whose limit is {MAX_RUN_NAME_LENGTH}"
    ):
        run.set_tag(RUN_NAME_TAG, name + "x")
    assert tk.statistics().projection_errors == 0
    await run.end()
