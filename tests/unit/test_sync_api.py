"""The sync facade does what the async API does, from a plain loop, against a real store."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tracker import Metric, SyncTracker
from tracker.errors import InvalidStateError, NotFoundError, StoreError


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tracker-loop"]


def test_a_training_script_saves_checkpoints_and_reads_them_back(tmp_path: Path) -> None:
    """log_artifact(s)/log_text/log_dict store files; list/download_artifacts find them."""
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"\x00weights" * 1000)
    plots = tmp_path / "plots"
    (plots / "sub").mkdir(parents=True)
    (plots / "a.txt").write_text("a")
    (plots / "sub" / "b.txt").write_text("bb")
    with SyncTracker(str(tmp_path / "store")) as tk, tk.start_run("mnist") as run:
        for step in range(100):
            run.log_metric("loss", 1 / (step + 1), step=step)
        info = run.log_artifact(ckpt, artifact_path="checkpoints")
        assert info.path == "checkpoints/model.pt" and info.size == 8000
        assert sorted(i.path for i in run.log_artifacts(plots, "plots")) == [
            "plots/a.txt",
            "plots/sub/b.txt",
        ]
        run.log_text("hello", "notes.md")
        run.log_dict({"lr": 3e-4, "layers": [64, 32]}, "config.yaml")
        top = {e.path: e.is_dir for e in tk.list_artifacts(run.run_id)}
        assert top == {"checkpoints": True, "plots": True, "notes.md": False, "config.yaml": False}
        got = tk.download_artifacts(run.run_id, "checkpoints", tmp_path / "restore")
        assert (got / "model.pt").read_bytes() == ckpt.read_bytes()
        assert (
            "lr: 0.0003" in tk.download_artifacts(run.run_id, "config.yaml", tmp_path).read_text()
        )
        run_id = run.run_id
    with SyncTracker(str(tmp_path / "store"), create=False) as tk:
        view = tk.get_run(run_id)
        assert view.info.status == "FINISHED" and view.data.metrics["loss"] == 1 / 100


def test_experiments_and_runs_by_id(tmp_path: Path) -> None:
    """Experiment CRUD, run-id writes, update/delete/restore and search work synchronously."""
    with SyncTracker(str(tmp_path / "store")) as tk:
        exp = tk.create_experiment("cifar", tags={"team": "vision"})
        tk.rename_experiment(exp, "cifar10")
        assert tk.get_experiment(exp).name == "cifar10"
        tk.set_experiment_tag(exp, "owner", "ana")
        tk.delete_experiment_tag(exp, "team")
        assert tk.get_experiment(exp).tags == {"owner": "ana"}
        created = tk.create_run(exp, run_name="by-id")
        rid = created.info.run_id
        tk.log_batch(rid, [Metric("acc", 0.5, 1000, 3)], params={"seed": 1}, tags={"t": "x"})
        tk.log_metric(rid, "acc", 0.75, step=4)
        tk.log_param(rid, "depth", 18)
        tk.set_tag(rid, "u", "v")
        tk.delete_tag(rid, "t")
        tk.log_inputs(rid, [])
        tk.update_run(rid, run_name="renamed")
        tk.set_terminated(rid, "FAILED")
        view = tk.get_run(rid)
        assert view.info.run_name == "renamed" and view.info.status == "FAILED"
        assert view.data.params == {"seed": "1", "depth": "18"}
        assert view.data.metrics == {"acc": 0.75} and "t" not in view.data.tags
        history = tk.get_metric_history(rid, "acc")
        assert [(m.step, m.value) for m in history] == [(3, 0.5), (4, 0.75)]
        tk.delete_run(rid)
        assert len(tk.search_runs(exp)) == 0
        assert [r.info.run_id for r in tk.search_runs(exp, view_type="DELETED_ONLY")] == [rid]
        tk.restore_run(rid)
        assert [r.info.run_id for r in tk.search_runs([exp])] == [rid]
        tk.delete_experiment(exp)
        names = {e.name for e in tk.search_experiments(view_type="ALL")}
        assert names == {"Default", "cifar10"}
        assert [e.name for e in tk.search_experiments()] == ["Default"]
        tk.restore_experiment(exp)
        assert tk.get_experiment_by_name("cifar10") is not None


def test_replay_is_an_iterator_and_time_travel_works(tmp_path: Path) -> None:
    """replay yields events lazily across chunks; run_state_at and wait_until block."""
    with SyncTracker(str(tmp_path / "store"), max_batch=1) as tk:
        run = tk.start_run("replay")
        for i in range(1200):  # more events than one chunk fetched from the loop thread
            run.log_param(f"p{i}", i)
        position = tk.flush()
        tk.wait_until(position, timeout=5)
        events = tk.replay(run.run_id)
        first = next(events)
        assert type(first.event).__name__ == "RunCreated"
        rest = list(events)
        assert len(rest) >= 1200 and rest[-1].position == position
        assert [r.position for r in rest] == sorted(r.position for r in rest)
        early = tk.run_state_at(run.run_id, rest[99].position)
        assert len(early.data.params) < 1200 <= len(tk.get_run(run.run_id).data.params)
        partial = tk.replay(run.run_id)
        next(partial)
        partial.close()  # an iterator abandoned early closes its generator on the loop
        assert len(list(tk.replay(run.run_id, until=first.position))) == 1
        run.end()


def test_a_failed_open_leaves_no_thread_and_calls_when_closed_raise(tmp_path: Path) -> None:
    """A store that cannot open stops the loop thread; a call on a closed tracker raises
    InvalidStateError at once instead of waiting for a loop that never runs."""
    before = len(_loop_threads())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tracker.db").write_bytes(b"garbage" * 1000)
    with (
        pytest.raises(StoreError, match="not a usable SQLite file"),
        SyncTracker(str(tmp_path / "bad")),
    ):
        pass
    assert len(_loop_threads()) == before
    with pytest.raises(NotFoundError, match="no tracker store"):
        SyncTracker(str(tmp_path / "missing"), create=False).open()
    assert len(_loop_threads()) == before and not (tmp_path / "missing").exists()

    outcome: list[BaseException] = []

    def call_closed() -> None:
        try:
            SyncTracker(str(tmp_path / "never")).get_experiment("0")
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call_closed)
    caller.start()
    caller.join(timeout=10)
    assert not caller.is_alive(), "a call on an unopened SyncTracker hung"
    assert isinstance(outcome[0], InvalidStateError)


def test_statistics_can_be_read_after_close(tmp_path: Path) -> None:
    """Statistics are read on the loop thread while it runs, and still answer once closed."""
    with SyncTracker(str(tmp_path)) as tk, tk.start_run("s") as run:
        run.log_metric("m", 1.0)
        tk.flush()
        assert tk.statistics().points_written == 1
    assert tk.statistics().points_written == 1
