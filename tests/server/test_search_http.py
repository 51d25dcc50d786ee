"""MLflow's client searching runs and experiments through `tracker server`: filters and
order_by go through to the database, paging follows tokens, a bad filter is a 400."""

from __future__ import annotations

import secrets

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException


@pytest.fixture
def client(mlflow_url: str) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_url)


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_search_runs_filters_and_orders_through_the_server(client: MlflowClient) -> None:
    """search_runs with a three-clause filter and order_by returns the matching runs in
    order, a missing metric sorting last; MLflow's paged iterator sees every run once."""
    exp = client.create_experiment(_unique("search"))
    ids = {}
    for i, (acc, lr, team) in enumerate(
        [
            (0.9, "0.1", "ml"),
            (0.5, "0.1", "ML"),
            (None, "0.1", "ml-ops"),
            (0.7, "0.2", "ml"),
            (0.8, "0.1", "mlx"),
        ]
    ):
        run = client.create_run(exp, run_name=f"r{i}", start_time=1000 + i)
        metrics = [] if acc is None else [Metric("acc", acc, 1, 0)]
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param("lr", lr)],
                         tags=[RunTag("team", team)])  # fmt: skip
        ids[f"r{i}"] = run.info.run_id

    def names(filter_string: str, order_by: list[str] | None = None, **kw: object) -> list[str]:
        found = client.search_runs([exp], filter_string, order_by=order_by, **kw)  # type: ignore[arg-type]
        return [r.info.run_name for r in found]

    text = "metrics.acc > 0.6 AND params.lr = '0.1' AND tags.team LIKE 'ml%'"
    assert names(text, ["metrics.acc DESC"]) == ["r0", "r4"]
    assert names("tags.team ILIKE 'ML'", ["attributes.start_time"]) == ["r0", "r1", "r3"]
    assert names("", ["metrics.acc"]) == ["r1", "r3", "r4", "r0", "r2"]  # missing last
    assert names("params.lr = '0.1'", ["metrics.acc DESC"], max_results=2) == ["r0", "r4"]
    assert names(f"attributes.run_id IN ('{ids['r1']}', '{ids['r3']}')") == ["r3", "r1"]
    # Following next_page_token, two at a time, as MLflow's paged helpers do.
    paged, token = [], None
    while True:
        page = client.search_runs([exp], "", order_by=["params.lr DESC", "tags.team"],
                                  max_results=2, page_token=token)  # fmt: skip
        paged += [r.info.run_name for r in page]
        if not (token := page.token):
            break
    assert paged == ["r3", "r1", "r0", "r2", "r4"]  # "ML" < "ml" by code point


def test_search_experiments_filters_through_the_server(client: MlflowClient) -> None:
    """search_experiments with name LIKE/ILIKE, a tag, and an order."""
    stem = _unique("exps")
    a = client.create_experiment(f"{stem}-a", tags={"team": "ml"})
    b = client.create_experiment(f"{stem.upper()}-B")
    client.create_experiment(f"{stem}-c", tags={"team": "ops"})
    found = client.search_experiments(filter_string=f"name LIKE '{stem}-%'", order_by=["name"])
    assert [e.name for e in found] == [f"{stem}-a", f"{stem}-c"]
    found = client.search_experiments(filter_string=f"name ILIKE '{stem}-%'",
                                      order_by=["name DESC"])  # fmt: skip
    assert [e.experiment_id for e in found][-1] == b
    found = client.search_experiments(
        filter_string=f"tags.team = 'ml' AND name LIKE '{stem}%'", view_type=ViewType.ALL
    )
    assert [e.experiment_id for e in found] == [a]


def test_a_malformed_filter_is_a_400_with_the_parsers_message(client: MlflowClient) -> None:
    """A filter with OR, or an unknown attribute, is INVALID_PARAMETER_VALUE saying where."""
    with pytest.raises(MlflowException) as info:
        client.search_runs(["0"], "metrics.acc > 0 OR params.lr = '1'")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "OR at column 17 is not supported" in info.value.message
    with pytest.raises(MlflowException) as info:
        client.search_experiments(filter_string="colour = 'red'")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "unknown attribute 'colour' at column 1" in info.value.message
    with pytest.raises(MlflowException) as info:
        client.search_runs(["0"], order_by=["metrics.acc SIDEWAYS"])
    assert "unexpected 'SIDEWAYS' at column 13" in info.value.message
