"""Tracker's entities as MLflow's REST API writes them (protobuf JSON, empty lists left out)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from tracker.artifacts.base import ArtifactEntry
from tracker.entities import DatasetInputInfo, Experiment, Metric, RunInfo, RunView
from tracker.server.protocol import double

JSON = dict[str, Any]

# MLflow 3 answers every experiment with its workspace; without workspaces it is this one.
DEFAULT_WORKSPACE: Final = "default"


def _pairs(items: Mapping[str, str]) -> list[JSON]:
    return [{"key": k, "value": v} for k, v in items.items()]


def _without_empty(obj: JSON) -> JSON:
    # Protobuf's JSON leaves out repeated fields that are empty.
    return {k: v for k, v in obj.items() if v != []}


def experiment_json(e: Experiment) -> JSON:
    return _without_empty(
        {
            "experiment_id": e.experiment_id,
            "name": e.name,
            "artifact_location": e.artifact_location,
            "lifecycle_stage": e.lifecycle_stage,
            "last_update_time": e.last_update_time,
            "creation_time": e.creation_time,
            "tags": _pairs(e.tags),
            "workspace": DEFAULT_WORKSPACE,
        }
    )


def run_info_json(info: RunInfo) -> JSON:
    out: JSON = {
        "run_uuid": info.run_id,
        "experiment_id": info.experiment_id,
        "run_name": info.run_name,
        "user_id": info.user_id,
        "status": info.status,
        "start_time": info.start_time,
    }
    if info.end_time is not None:
        out["end_time"] = info.end_time
    out["artifact_uri"] = info.artifact_uri
    out["lifecycle_stage"] = info.lifecycle_stage
    out["run_id"] = info.run_id
    return out


def _dataset_input_json(d: DatasetInputInfo) -> JSON:
    dataset: JSON = {
        "name": d.name,
        "digest": d.digest,
        "source_type": d.source_type,
        "source": d.source,
    }
    if d.schema is not None:
        dataset["schema"] = d.schema
    if d.profile is not None:
        dataset["profile"] = d.profile
    return _without_empty({"tags": _pairs(d.tags), "dataset": dataset})


def run_json(run: RunView, *, outputs: bool = True) -> JSON:
    """MLflow's Run. `outputs=False` for createRun, which MLflow answers without them."""
    # Each metric's latest point, with its timestamp and step, as MLflow sends it.
    latest = run.data.latest
    metrics = [
        metric_json(latest[k]) if k in latest else {"key": k, "value": double(v)}
        for k, v in run.data.metrics.items()
    ]
    data = _without_empty(
        {"metrics": metrics, "params": _pairs(run.data.params), "tags": _pairs(run.data.tags)}
    )
    inputs = _without_empty({"dataset_inputs": [_dataset_input_json(d) for d in run.inputs]})
    out: JSON = {"info": run_info_json(run.info), "data": data, "inputs": inputs}
    if outputs:
        out["outputs"] = {}
    return out


def metric_json(m: Metric) -> JSON:
    return {"key": m.key, "value": double(m.value), "timestamp": m.timestamp, "step": m.step}


def file_info_json(path: str, entry: ArtifactEntry) -> JSON:
    """MLflow's FileInfo; directories carry no size."""
    out: JSON = {"path": path, "is_dir": entry.is_dir}
    if not entry.is_dir and entry.size is not None:
        out["file_size"] = entry.size
    return out
