"""MLflow's fluent API (and its async logging) against `tracker server`, on SQLite and on
PostgreSQL."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.server.conftest import ServerProcess

pytestmark = pytest.mark.parametrize("mlflow_server", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def fluent(mlflow_url: str) -> Iterator[str]:
    """The fluent API pointed at the server; any run left active is ended afterwards."""
    mlflow.set_tracking_uri(mlflow_url)
    yield mlflow_url
    mlflow.end_run()
    mlflow.config.enable_async_logging(False)


def test_a_training_run(fluent: str, tmp_path: Path) -> None:
    """set_experiment, start_run, params, metrics, tags, text and file artifacts, end: all of
    it reads back through search_runs, get_metric_history and download_artifacts."""
    name = f"fluent-{secrets.token_hex(4)}"
    mlflow.set_experiment(name)
    with mlflow.start_run(run_name="train") as run:
        mlflow.log_param("lr", 0.001)
        mlflow.log_params({"batch": 32, "optimizer": "adam"})
        for step in range(20):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.75, "nan": math.nan}, step=19)
        mlflow.set_tags({"team": "vision"})
        mlflow.log_text("notes", "docs/notes.md")
        weights = tmp_path / "weights.bin"
        weights.write_bytes(b"\x00\x01" * 1000)
        mlflow.log_artifact(str(weights), artifact_path="model")
        mlflow.log_dict({"a": 1}, "config.json")
        run_id = run.info.run_id
    runs = mlflow.search_runs(experiment_names=[name], output_format="list")
    assert [r.info.run_id for r in runs] == [run_id]
    got = runs[0]
    assert got.info.status == "FINISHED" and got.info.end_time is not None
    assert got.data.params == {"lr": "0.001", "batch": "32", "optimizer": "adam"}
    assert got.data.metrics["loss"] == 1.0 / 20 and got.data.metrics["acc"] == 0.75
    assert math.isnan(got.data.metrics["nan"])
    assert got.data.tags["team"] == "vision" and got.data.tags["mlflow.runName"] == "train"
    history = MlflowClient().get_metric_history(run_id, "loss")
    assert [m.step for m in history] == list(range(20))
    out = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "dl")))
    assert (out / "docs" / "notes.md").read_text() == "notes"
    assert (out / "model" / "weights.bin").read_bytes() == weights.read_bytes()
    assert json.loads((out / "config.json").read_text()) == {"a": 1}


def test_log_artifacts_tree(fluent: str, mlflow_server: ServerProcess, tmp_path: Path) -> None:
    """log_artifacts uploads a directory tree, keeping its layout under the destination."""
    tree = tmp_path / "plots"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("b")
    mlflow.set_experiment(f"tree-{secrets.token_hex(4)}")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tree), artifact_path="plots")
    root = (
        mlflow_server.artifacts / run.info.experiment_id / run.info.run_id / "artifacts" / "plots"
    )
    assert (root / "a.txt").read_text() == "a" and (root / "sub" / "b.txt").read_text() == "b"
    listed = MlflowClient().list_artifacts(run.info.run_id, "plots")
    assert [(f.path, f.is_dir) for f in listed] == [("plots/a.txt", False), ("plots/sub", True)]


def test_async_logging(fluent: str) -> None:
    """synchronous=False calls (which reach the server as log-batch) are all stored once
    their operations are waited on."""
    mlflow.set_experiment(f"async-{secrets.token_hex(4)}")
    with mlflow.start_run() as run:
        operations = [
            mlflow.log_metric("x", float(step), step=step, synchronous=False) for step in range(50)
        ]
        operations.append(mlflow.log_param("p", "v", synchronous=False))
        operations.append(mlflow.set_tag("t", "w", synchronous=False))
        for op in operations:
            op.wait()
        run_id = run.info.run_id
    history = MlflowClient().get_metric_history(run_id, "x")
    assert [m.value for m in history] == [float(s) for s in range(50)]
    data = MlflowClient().get_run(run_id).data
    assert data.params == {"p": "v"} and data.tags["t"] == "w"


def test_async_logging_enabled_globally(fluent: str) -> None:
    """With async logging on for everything, flush_async_logging leaves every point stored."""
    mlflow.config.enable_async_logging(True)
    mlflow.set_experiment(f"async-all-{secrets.token_hex(4)}")
    with mlflow.start_run() as run:
        for step in range(200):
            mlflow.log_metrics({"a": step * 1.0, "b": -step * 1.0}, step=step)
        mlflow.flush_async_logging()
        run_id = run.info.run_id
    client = MlflowClient()
    assert len(client.get_metric_history(run_id, "a")) == 200
    assert [m.value for m in client.get_metric_history(run_id, "b")][-1] == -199.0


def test_nested_runs(fluent: str) -> None:
    """A nested run records its parent in mlflow.parentRunId."""
    mlflow.set_experiment(f"nested-{secrets.token_hex(4)}")
    with mlflow.start_run() as parent, mlflow.start_run(nested=True) as child:
        pass
    tags = MlflowClient().get_run(child.info.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent.info.run_id
