"""Our answers against MLflow's own, recorded from `mlflow server` 3.17.2 by
tests/server/mlflow_compat/record.py (the command is in that file and in the recording)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import ServerProcess
from tests.server.mlflow_compat import scenario

RECORDING = Path(__file__).parent / "mlflow_compat" / "mlflow-3.17.2.json"

# Where we answer differently on purpose, and why. Everything else must match.
KNOWN_DIFFERENCES = {
    # MLflow's SQL store leaks the IntegrityError and the SQL into the message.
    "create taken name": "message: ours names the experiment without the SQL",
    # MLflow's wording comes from its repository classes; the codes and statuses match.
    "download missing artifact": "message wording",
    "delete experiment again": "message: ours says the experiment is deleted",
    "tag a deleted experiment": "message: ours says the experiment is deleted",
    "restore an active experiment": "message: ours says the experiment is not deleted",
    # MLflow's FastAPI upload route answers an empty body; its Flask route and proto say {}.
    "upload artifact": "body: ours is {}",
    "upload second artifact": "body: ours is {}",
    # MLflow's Flask answers an HTML page; its own client reads any 404 the same way.
    "unknown endpoint": "body: ours is empty",
}


def _normalise(body: Any) -> Any:
    """What both servers' answers go through before comparing: the optional extra error keys
    MLflow 3 adds (sqlstate, error_class) are dropped; key/value lists are compared as sets;
    the mlflow.user tag (Tracker records the run's user as that tag too) is left out."""
    if isinstance(body, list):
        items = [_normalise(v) for v in body]
        if all(isinstance(v, dict) and set(v) <= {"key", "value", "timestamp", "step"}
               for v in items):  # fmt: skip
            items = sorted(
                (v for v in items if v.get("key") != "mlflow.user"), key=lambda v: v["key"]
            )
        return items
    if isinstance(body, dict):
        return {k: _normalise(v) for k, v in body.items() if k not in ("sqlstate", "error_class")}
    return body


@pytest.fixture(scope="module")
def answers(mlflow_server: ServerProcess) -> list[dict[str, Any]]:
    return scenario.run(mlflow_server.url)


def test_the_recording_matches_the_scenario() -> None:
    """The recording holds one answer per scenario step, in order (re-record if not)."""
    recorded = json.loads(RECORDING.read_text())
    assert [a["step"] for a in recorded["answers"]] == [s.name for s in scenario.STEPS]
    assert recorded["mlflow_version"] == "3.17.2"


@pytest.mark.parametrize("step", scenario.STEPS, ids=lambda s: s.name)
def test_answers_match_mlflow(answers: list[dict[str, Any]], step: scenario.Step) -> None:
    """Each call gets MLflow's status, error code and (unless listed in KNOWN_DIFFERENCES
    with a reason) MLflow's body and headers."""
    recorded = json.loads(RECORDING.read_text())["answers"]
    index = [s.name for s in scenario.STEPS].index(step.name)
    ours = answers[index]
    theirs = recorded[index]
    assert ours["status"] == theirs["status"], ours
    if step.compare == "status":
        return
    if step.compare == "code" or step.name in KNOWN_DIFFERENCES:
        assert ours["body"]["error_code"] == theirs["body"]["error_code"]
        return
    assert _normalise(ours["body"]) == _normalise(theirs["body"])
    assert ours["headers"] == theirs["headers"]


def test_known_differences_are_real(answers: list[dict[str, Any]]) -> None:
    """Every listed difference still exists (an entry that no longer differs is removed)."""
    recorded = json.loads(RECORDING.read_text())["answers"]
    names = [s.name for s in scenario.STEPS]
    for name in KNOWN_DIFFERENCES:
        index = names.index(name)
        assert _normalise(answers[index]["body"]) != _normalise(recorded[index]["body"]), name
