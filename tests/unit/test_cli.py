"""The command line, run in-process against a real store."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from tracker.cli import main


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"TRACKER_TRACKING_URI": str(tmp_path / "store")}


def test_demo_then_list_show_replay_rebuild(env: dict[str, str]) -> None:
    """demo logs a run that runs list/show/replay/rebuild then find and reproduce."""
    r = CliRunner()
    out = r.invoke(main, ["demo", "--epochs", "2", "--steps", "300"], env=env)
    assert out.exit_code == 0, out.output
    assert "logged 1,802 points" in out.output
    listing = r.invoke(main, ["runs", "list"], env=env)
    assert listing.exit_code == 0 and "FINISHED" in listing.output
    run_id = listing.output.split()[0]
    shown = orjson.loads(r.invoke(main, ["runs", "show", run_id], env=env).output)
    assert shown["info"]["run_id"] == run_id and shown["data"]["params"]["epochs"] == "2"
    assert set(shown["data"]["metrics"]) == {
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "val/accuracy",
    }
    lines = [
        orjson.loads(x) for x in r.invoke(main, ["replay", run_id], env=env).output.splitlines()
    ]
    assert lines[0]["type"] == "RunCreated" and lines[-1]["type"] == "RunStatusChanged"
    assert sum(len(x["data"].get("metrics", [])) for x in lines) == 1802
    first = r.invoke(main, ["replay", run_id, "--until", str(lines[0]["position"])], env=env)
    assert len(first.output.splitlines()) == 1
    rebuilt = r.invoke(main, ["rebuild"], env=env)
    assert rebuilt.exit_code == 0 and f"position {lines[-1]['position']}" in rebuilt.output
    again = orjson.loads(r.invoke(main, ["runs", "show", run_id], env=env).output)
    assert again == shown


def test_errors_are_messages_not_tracebacks(env: dict[str, str], tmp_path: Path) -> None:
    """Unknown runs and bad URIs exit non-zero with a message saying what is wrong."""
    r = CliRunner()
    missing = r.invoke(main, ["runs", "show", "f" * 32], env=env)
    assert missing.exit_code == 1 and "not found" in missing.output
    bad = r.invoke(main, ["runs", "list", "--backend-store-uri", "sqlite:///:memory:"])
    assert bad.exit_code == 1 and "in-memory" in bad.output
    ok = r.invoke(main, ["db", "upgrade", f"sqlite:///{tmp_path}/x.db"])
    assert ok.exit_code == 0 and "schema at version 2" in ok.output
