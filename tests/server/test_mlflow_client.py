"""MLflow's own MlflowClient against `tracker server`: every tracking endpoint and its errors."""

from __future__ import annotations

import math
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException, RestException

from tests.server.conftest import ServerProcess


def unique(prefix: str = "exp") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def client(mlflow_url: str) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_url)


def error_code(info: pytest.ExceptionInfo[MlflowException]) -> str:
    return info.value.error_code


# -- experiments ---------------------------------------------------------------------------


def test_create_get_and_get_by_name(client: MlflowClient) -> None:
    """An experiment created with tags reads back by id and by name, with a proxied artifact
    location, and a name nobody used reads back as None."""
    name = unique()
    exp_id = client.create_experiment(name, tags={"team": "vision", "empty": ""})
    exp = client.get_experiment(exp_id)
    assert (exp.name, exp.lifecycle_stage) == (name, "active")
    assert exp.tags == {"team": "vision", "empty": ""}
    assert exp.artifact_location == f"mlflow-artifacts:/{exp_id}"
    assert exp.creation_time > 0 and exp.last_update_time >= exp.creation_time
    by_name = client.get_experiment_by_name(name)
    assert by_name is not None and by_name.experiment_id == exp_id
    assert client.get_experiment_by_name(unique("missing")) is None


def test_experiment_errors(client: MlflowClient) -> None:
    """A taken name is RESOURCE_ALREADY_EXISTS (HTTP 400), a missing id is
    RESOURCE_DOES_NOT_EXIST (404), an empty name is INVALID_PARAMETER_VALUE."""
    name = unique()
    client.create_experiment(name)
    with pytest.raises(RestException) as taken:
        client.create_experiment(name)
    assert error_code(taken) == "RESOURCE_ALREADY_EXISTS"
    assert taken.value.get_http_status_code() == 400
    with pytest.raises(RestException) as missing:
        client.get_experiment("987654321")
    assert error_code(missing) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as empty:
        client.create_experiment("")
    assert error_code(empty) == "INVALID_PARAMETER_VALUE"


def test_search_experiments_pages_and_view_types(client: MlflowClient) -> None:
    """Paging with max_results=2 visits every experiment once; a deleted one shows only under
    DELETED_ONLY and ALL."""
    prefix = unique("paged")
    ids = [client.create_experiment(f"{prefix}-{i}") for i in range(5)]
    seen: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=2, page_token=token)
        assert len(page) <= 2
        seen += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    client.delete_experiment(ids[0])
    active = {e.experiment_id for e in client.search_experiments(max_results=1000)}
    deleted = {
        e.experiment_id
        for e in client.search_experiments(view_type=ViewType.DELETED_ONLY, max_results=1000)
    }
    every = {e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)}
    assert ids[0] not in active and ids[0] in deleted and ids[0] in every
    assert set(ids[1:]) <= active


def test_rename_delete_restore(client: MlflowClient, mlflow_url: str) -> None:
    """Rename, delete (its runs go with it) and restore (they come back); deleting twice is
    404, renaming a deleted experiment is INVALID_STATE (HTTP 500, which MLflow's client only
    retries), restoring an active one 404."""
    exp_id = client.create_experiment(unique())
    run = client.create_run(exp_id)
    new_name = unique("renamed")
    client.rename_experiment(exp_id, new_name)
    assert client.get_experiment(exp_id).name == new_name
    client.delete_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "deleted"
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    with pytest.raises(RestException) as twice:
        client.delete_experiment(exp_id)
    assert error_code(twice) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException, match="500"):
        client.rename_experiment(exp_id, unique())
    rename = requests.post(
        f"{mlflow_url}/api/2.0/mlflow/experiments/update",
        json={"experiment_id": exp_id, "new_name": unique()}, timeout=30,
    )  # fmt: skip
    assert rename.status_code == 500 and rename.json()["error_code"] == "INVALID_STATE"
    client.restore_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "active"
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "active"
    with pytest.raises(RestException) as restore:
        client.restore_experiment(exp_id)
    assert error_code(restore) == "RESOURCE_DOES_NOT_EXIST"


def test_experiment_tags(client: MlflowClient) -> None:
    """Set and delete experiment tags; deleting a missing tag is 404; tagging a deleted
    experiment is INVALID_PARAMETER_VALUE."""
    exp_id = client.create_experiment(unique())
    client.set_experiment_tag(exp_id, "stage", "dev")
    client.set_experiment_tag(exp_id, "stage", "prod")
    assert client.get_experiment(exp_id).tags == {"stage": "prod"}
    client.delete_experiment_tag(exp_id, "stage")
    assert client.get_experiment(exp_id).tags == {}
    with pytest.raises(RestException) as missing:
        client.delete_experiment_tag(exp_id, "stage")
    assert error_code(missing) == "RESOURCE_DOES_NOT_EXIST"
    client.delete_experiment(exp_id)
    with pytest.raises(RestException) as deleted:
        client.set_experiment_tag(exp_id, "k", "v")
    assert error_code(deleted) == "INVALID_PARAMETER_VALUE"


# -- runs ----------------------------------------------------------------------------------


def test_create_and_get_run(client: MlflowClient) -> None:
    """A run created with a name, a start time and tags reads back RUNNING with a proxied
    artifact URI and the run name as a tag."""
    exp_id = client.create_experiment(unique())
    run = client.create_run(exp_id, start_time=1234, tags={"k": "v"}, run_name="first")
    info = run.info
    assert (info.run_name, info.status, info.start_time, info.experiment_id) == (
        "first", "RUNNING", 1234, exp_id,
    )  # fmt: skip
    assert info.artifact_uri == f"mlflow-artifacts:/{exp_id}/{info.run_id}/artifacts"
    assert len(info.run_id) == 32 and info.run_id == info.run_id.lower()
    got = client.get_run(info.run_id)
    assert got.data.tags["k"] == "v" and got.data.tags["mlflow.runName"] == "first"
    assert got.info.lifecycle_stage == "active" and got.info.end_time is None


def test_run_errors(client: MlflowClient) -> None:
    """A missing run is 404; a run in a missing experiment is 404, in a deleted one 400; a
    run name that contradicts the mlflow.runName tag is 400."""
    with pytest.raises(RestException) as missing:
        client.get_run("0" * 32)
    assert error_code(missing) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(RestException) as no_experiment:
        client.create_run("987654321")
    assert error_code(no_experiment) == "RESOURCE_DOES_NOT_EXIST"
    exp_id = client.create_experiment(unique())
    with pytest.raises(RestException) as conflict:
        client.create_run(exp_id, run_name="a", tags={"mlflow.runName": "b"})
    assert error_code(conflict) == "INVALID_PARAMETER_VALUE"
    client.delete_experiment(exp_id)
    with pytest.raises(RestException) as deleted:
        client.create_run(exp_id)
    assert error_code(deleted) == "INVALID_PARAMETER_VALUE"


def test_update_terminate_delete_restore(client: MlflowClient) -> None:
    """update_run renames and sets status; set_terminated ends the run; a deleted run reads
    but refuses writes; restore makes it writable again."""
    exp_id = client.create_experiment(unique())
    run_id = client.create_run(exp_id).info.run_id
    client.update_run(run_id, status="SCHEDULED", name="renamed")
    got = client.get_run(run_id)
    assert (got.info.status, got.info.run_name) == ("SCHEDULED", "renamed")
    assert got.data.tags["mlflow.runName"] == "renamed"
    client.set_terminated(run_id, "FAILED", end_time=99_999)
    ended = client.get_run(run_id).info
    assert (ended.status, ended.end_time) == ("FAILED", 99_999)
    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    with pytest.raises(MlflowException) as refused:
        client.log_param(run_id, "p", "v")
    assert error_code(refused) == "INVALID_PARAMETER_VALUE"
    assert "active" in refused.value.message
    client.restore_run(run_id)
    client.log_param(run_id, "p", "v")
    assert client.get_run(run_id).data.params == {"p": "v"}


def test_search_runs(client: MlflowClient) -> None:
    """Runs come back newest first in pages; deleted runs only with DELETED_ONLY or ALL; a
    filter selects and order_by sorts; an OR is refused as MLflow refuses it."""
    exp_id = client.create_experiment(unique())
    ids = [client.create_run(exp_id, start_time=1000 + i).info.run_id for i in range(5)]
    seen: list[str] = []
    token = None
    while True:
        page = client.search_runs([exp_id], max_results=2, page_token=token)
        seen += [r.info.run_id for r in page]
        token = page.token
        if not token:
            break
    assert seen == ids[::-1]
    client.delete_run(ids[0])
    assert ids[0] not in [r.info.run_id for r in client.search_runs([exp_id])]
    deleted = client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted] == [ids[0]]
    assert len(client.search_runs([exp_id], run_view_type=ViewType.ALL)) == 5
    for i, run_id in enumerate(ids[1:], start=1):
        client.log_metric(run_id, "acc", i / 4)
    found = client.search_runs(
        [exp_id], filter_string="metrics.acc > 0.5", order_by=["metrics.acc"]
    )
    assert [r.info.run_id for r in found] == ids[3:]
    with pytest.raises(RestException) as refused:
        client.search_runs([exp_id], filter_string="metrics.acc > 0.5 OR params.p = 'x'")
    assert error_code(refused) == "INVALID_PARAMETER_VALUE"


def test_metrics_and_history(client: MlflowClient) -> None:
    """Metrics with steps, NaN and both infinities round-trip through log_metric and
    get_metric_history; run.data.metrics holds the point with the largest step."""
    run_id = client.create_run(client.create_experiment(unique())).info.run_id
    values = [0.5, math.nan, math.inf, -math.inf, 2.0]
    for step, value in enumerate(values):
        client.log_metric(run_id, "m", value, timestamp=1000 + step, step=step)
    history = client.get_metric_history(run_id, "m")
    assert [(m.step, m.timestamp) for m in history] == [(i, 1000 + i) for i in range(5)]
    got = [m.value for m in history]
    assert got[0] == 0.5 and math.isnan(got[1]) and got[2] == math.inf and got[3] == -math.inf
    assert client.get_run(run_id).data.metrics == {"m": 2.0}
    assert client.get_metric_history(run_id, "never-logged") == []


def test_params_are_write_once(client: MlflowClient) -> None:
    """The same param value again is accepted; a different one is refused with MLflow's
    message and not stored."""
    run_id = client.create_run(client.create_experiment(unique())).info.run_id
    client.log_param(run_id, "lr", "0.1")
    client.log_param(run_id, "lr", "0.1")
    with pytest.raises(MlflowException) as conflict:
        client.log_param(run_id, "lr", "0.2")
    assert error_code(conflict) == "INVALID_PARAMETER_VALUE"
    assert "Changing param values is not allowed" in conflict.value.message
    assert client.get_run(run_id).data.params == {"lr": "0.1"}


def test_tags(client: MlflowClient) -> None:
    """set_tag overwrites, empty values are kept, delete_tag removes; deleting a missing tag
    is 404."""
    run_id = client.create_run(client.create_experiment(unique())).info.run_id
    client.set_tag(run_id, "k", "1")
    client.set_tag(run_id, "k", "2")
    client.set_tag(run_id, "empty", "")
    tags = client.get_run(run_id).data.tags
    assert tags["k"] == "2" and tags["empty"] == ""
    client.delete_tag(run_id, "k")
    assert "k" not in client.get_run(run_id).data.tags
    with pytest.raises(RestException) as missing:
        client.delete_tag(run_id, "k")
    assert error_code(missing) == "RESOURCE_DOES_NOT_EXIST"


def test_log_batch(client: MlflowClient) -> None:
    """log_batch stores metrics, params and tags together; a conflicting param refuses the
    whole batch, so none of its tags or metrics are stored."""
    run_id = client.create_run(client.create_experiment(unique())).info.run_id
    metrics = [Metric("loss", 1.0 / (i + 1), 5000 + i, i) for i in range(100)]
    client.log_batch(run_id, metrics=metrics, params=[Param("a", "1")], tags=[RunTag("t", "x")])
    got = client.get_run(run_id)
    assert got.data.params == {"a": "1"} and got.data.tags["t"] == "x"
    assert len(client.get_metric_history(run_id, "loss")) == 100
    with pytest.raises(RestException) as conflict:
        client.log_batch(
            run_id, metrics=[Metric("other", 1.0, 1, 0)], params=[Param("a", "2")],
            tags=[RunTag("late", "y")],
        )  # fmt: skip
    assert error_code(conflict) == "INVALID_PARAMETER_VALUE"
    assert "'old_value': '1', 'new_value': '2'" in conflict.value.message
    after = client.get_run(run_id)
    assert "late" not in after.data.tags and "other" not in after.data.metrics


def test_log_inputs(client: MlflowClient) -> None:
    """Datasets logged as run inputs come back in run.inputs with their tags."""
    run_id = client.create_run(client.create_experiment(unique())).info.run_id
    dataset = Dataset("mnist", "d1g3st", "local", "/data/mnist", schema='{"a": 1}', profile="{}")
    client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])])
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    got = inputs[0]
    assert (got.dataset.name, got.dataset.digest, got.dataset.source) == (
        "mnist", "d1g3st", "/data/mnist",
    )  # fmt: skip
    assert got.dataset.schema == '{"a": 1}'
    assert [(t.key, t.value) for t in got.tags] == [("mlflow.data.context", "train")]


def test_artifacts_through_the_proxy(
    client: MlflowClient, mlflow_server: ServerProcess, tmp_path: Path
) -> None:
    """log_artifact uploads through the proxy into the artifacts destination; list_artifacts
    and download_artifacts read it back."""
    exp_id = client.create_experiment(unique())
    run_id = client.create_run(exp_id).info.run_id
    local = tmp_path / "weights.bin"
    local.write_bytes(secrets.token_bytes(3 << 20))
    client.log_artifact(run_id, str(local), artifact_path="model")
    client.log_text(run_id, "hello", "notes/readme.txt")
    top = client.list_artifacts(run_id)
    assert [(f.path, f.is_dir) for f in top] == [("model", True), ("notes", True)]
    inner = client.list_artifacts(run_id, "model")
    assert [(f.path, f.file_size) for f in inner] == [("model/weights.bin", 3 << 20)]
    stored = mlflow_server.artifacts / exp_id / run_id / "artifacts" / "model" / "weights.bin"
    assert stored.read_bytes() == local.read_bytes()
    out = Path(client.download_artifacts(run_id, "model", str(tmp_path / "restore")))
    assert (out / "weights.bin").read_bytes() == local.read_bytes()
    # MLflow's client lists mlflow-artifacts: roots through the proxy itself.
    with pytest.raises(requests.HTTPError, match="Invalid path"):
        client.list_artifacts(run_id, "../../etc")


def test_ajax_api_mirrors_the_api(mlflow_url: str) -> None:
    """Every tracking path is also served under /ajax-api/2.0/mlflow, as the UI calls it."""
    got = requests.get(
        f"{mlflow_url}/ajax-api/2.0/mlflow/experiments/get", params={"experiment_id": "0"},
        timeout=30,
    )  # fmt: skip
    assert got.status_code == 200
    assert got.json()["experiment"]["name"] == "Default"


def test_mlflow_experiments_cli(mlflow_url: str) -> None:
    """`mlflow experiments create/delete/search` work against the server (each call starts
    MLflow's CLI, which takes seconds, so only three)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_url}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "mlflow", "experiments", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    name = unique("cli")
    created = cli("create", "--experiment-name", name)
    exp_id = created.split("with id")[1].split()[0]
    cli("delete", "--experiment-id", exp_id)
    listed = cli("search", "--view", "deleted_only")
    assert [line.split()[:2] for line in listed.splitlines() if name in line] == [[exp_id, name]]
