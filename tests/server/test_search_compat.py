"""Our searches and metric histories against MLflow's own answers, recorded from `mlflow
server` 3.17.2 by tests/server/mlflow_compat/record_search.py (the command is in that file and
in the recording): the same data set, the same queries, the same runs in the same order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import ServerProcess
from tests.server.mlflow_compat import search_scenario

RECORDING = Path(__file__).parent / "mlflow_compat" / "search_answers.json"

Answer = dict[str, Any]


@dataclass(frozen=True)
class Difference:
    """Where we answer a query differently on purpose: why, and our whole answer."""

    reason: str
    ours: Answer

    def expected(self, theirs: Answer) -> Answer:
        return {"query": theirs["query"], **self.ours}


KNOWN_DIFFERENCES: dict[str, Difference] = {
    # MLflow's SQL store runs SQLite's LIKE without an ESCAPE clause, so there a backslash is
    # an ordinary character; on PostgreSQL and MySQL (MLflow's usual production stores) it
    # escapes the next character. Ours escapes on every backend, so a filter means the same
    # wherever it runs (tracker.search.sql.like_pattern).
    "tag LIKE, escaped wildcard": Difference(
        "backslash escapes", {"status": 200, "pages": [["r03"]]}
    ),
    "run_name LIKE, escaped _": Difference(
        "backslash escapes", {"status": 200, "pages": [["R10_x"]]}
    ),
    # SearchExperiments.max_results has no default in MLflow's proto, so its server reads a
    # missing one as 0 and refuses it; its REST docs let a server choose the default, and its
    # client always sends one. Ours takes 1000, SearchRuns' default in the same proto.
    "experiments without max_results": Difference(
        "a default page size",
        {"status": 200, "pages": [["Search C", "search-b", "search-a", "Default"]]},
    ),
}


def _recorded() -> dict[str, Answer]:
    return {a["query"]: a for a in json.loads(RECORDING.read_text())["answers"]}


@pytest.fixture(scope="module")
def answers(mlflow_server: ServerProcess) -> dict[str, Answer]:
    return {a["query"]: a for a in search_scenario.run(mlflow_server.url)}


def test_the_recording_matches_the_scenario() -> None:
    """The recording holds one answer per query, in order (re-record if not)."""
    recorded = json.loads(RECORDING.read_text())
    assert [a["query"] for a in recorded["answers"]] == [q.name for q in search_scenario.QUERIES]
    assert recorded["mlflow_version"] == "3.17.2"


# Our server on each store must answer as MLflow's did: the compiled SQL differs per dialect.
@pytest.mark.parametrize("mlflow_server", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("query", search_scenario.QUERIES, ids=lambda q: q.name)
def test_answers_match_mlflow(answers: dict[str, Answer], query: search_scenario.Query) -> None:
    """Each query returns MLflow's runs or experiments in MLflow's order, page by page, its
    history points, and its status and error code; or, where KNOWN_DIFFERENCES lists the
    query with a reason, exactly the answer listed there."""
    theirs = _recorded()[query.name]
    difference = KNOWN_DIFFERENCES.get(query.name)
    expected = theirs if difference is None else difference.expected(theirs)
    assert answers[query.name] == expected


def test_known_differences_are_real() -> None:
    """Every listed difference names a query and still differs from MLflow's answer (an
    entry that no longer differs is removed)."""
    recorded = _recorded()
    for name, difference in KNOWN_DIFFERENCES.items():
        assert difference.expected(recorded[name]) != recorded[name], name
