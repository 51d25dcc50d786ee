"""The CLI and a user's script as real processes: failures exit promptly with one clear line,
and a terminal gets colour and progress bars."""

from __future__ import annotations

import os
import pty
import select
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MLFLOW_PYTHON = Path("/opt/mlflow-venv/bin/python")
DEADLINE = 30.0
"""Seconds a failing command may take before the test calls it hung (it takes about one)."""

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, tracker
    async def main():
        async with tracker.Tracker(sys.argv[1]) as tk:
            await tk.start_run("mnist")
    asyncio.run(main())
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TRACKING_URI")}
    env.pop("NO_COLOR", None)
    return {**env, "PYTHONPATH": str(REPO), **extra}


def run(args: list[str], cwd: Path, wrap: list[str] | None = None) -> tuple[int, str, str, float]:
    """Run a process with a deadline; (status, stdout, stderr, seconds)."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [*(wrap or []), *args], cwd=cwd, env=_env(), capture_output=True, text=True,
            timeout=DEADLINE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{args} hung: still running after {DEADLINE}s; stderr: {exc.stderr!r}")
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def tracker_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tracker.cli", *args]


# -- broken stores: each builder makes one under `where` and returns the URI to give ----------


def corrupt_file(where: Path) -> str:
    where.mkdir()
    (where / "tracker.db").write_bytes(os.urandom(64 * 1024))
    return str(where)


def directory_for_file(where: Path) -> str:
    (where / "tracker.db").mkdir(parents=True)
    return str(where)


_mlflow_db: list[bytes] = []


def mlflow_database(where: Path) -> str:
    """A database made by MLflow itself when its full install is there (once per session,
    then copied), else one with the tables MLflow's migrations create first."""
    where.mkdir()
    db = where / "mlflow.db"
    if not _mlflow_db and MLFLOW_PYTHON.exists():
        made = subprocess.run(
            [str(MLFLOW_PYTHON), "-c",
             "import mlflow, sys; mlflow.set_tracking_uri(sys.argv[1]); mlflow.create_experiment('x')",
             f"sqlite:///{db}"],
            capture_output=True, timeout=120,
        )  # fmt: skip
        if made.returncode == 0:
            _mlflow_db.append(db.read_bytes())
    if _mlflow_db:
        db.write_bytes(_mlflow_db[0])
        return f"sqlite:///{db}"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")
    return f"sqlite:///{db}"


BROKEN: dict[str, tuple[Callable[[Path], str], str]] = {
    "corrupt tracker.db": (corrupt_file, "not a usable SQLite file"),
    "a directory where tracker.db should be": (directory_for_file, "tracker.db"),
    "an MLflow database": (mlflow_database, "MLflow tracking database"),
}


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("command", [("runs", "list"), ("demo", "--epochs", "1", "--steps", "10")])
def test_a_broken_store_is_one_line_and_a_prompt_exit(
    tmp_path: Path, case: str, command: tuple[str, ...]
) -> None:
    """runs list and demo on a broken store exit 1 within seconds with one clear line."""
    build, says = BROKEN[case]
    uri = build(tmp_path / "store")
    status, out, err, seconds = run(tracker_cli(*command, "--backend-store-uri", uri), tmp_path)
    assert status == 1 and out == ""
    assert says in _one_error_line(err)
    assert seconds < DEADLINE


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_users_asyncio_script_exits_after_a_failed_open(tmp_path: Path, case: str) -> None:
    """The four-line asyncio script raises the store's error and the process ends."""
    build, says = BROKEN[case]
    uri = build(tmp_path / "store")
    status, _, err, _ = run([sys.executable, "-c", SCRIPT, uri], tmp_path)
    assert status == 1
    assert err.strip().splitlines()[-1].startswith("tracker.errors.StoreError: ")
    assert says in err


def test_a_missing_store_is_reported_and_not_created(tmp_path: Path) -> None:
    """Reads of a path holding no store exit 1, say so, and leave no directory behind."""
    for args in (("runs", "list"), ("runs", "list", "--backend-store-uri", "./mistyped")):
        status, _, err, _ = run(tracker_cli(*args), tmp_path)
        assert status == 1 and "no tracker store at" in _one_error_line(err)
    assert list(tmp_path.iterdir()) == []
    status, out, _, _ = run(tracker_cli("demo", "--epochs", "1", "--steps", "10"), tmp_path)
    assert (
        status == 0 and "store: sqlite:///mlruns/tracker.db" in out
    )  # writes do create the default store


def _read_only(directory: Path) -> list[str]:
    """A command prefix under which `directory` is read-only: as root (which ignores file
    modes), a private mount namespace with the directory bind-mounted read-only; otherwise
    the directory's write bits are cleared."""
    if os.geteuid() != 0:
        for path in [directory, *directory.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        return []
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to make a read-only bind mount as root")
    d = str(directory)
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount --bind "{d}" "{d}" && mount -o remount,bind,ro "{d}" && exec "$@"', "sh"]  # fmt: skip
    probe = subprocess.run([*wrap, "touch", f"{d}/probe"], capture_output=True, text=True)
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot make a read-only bind mount here: {probe.stderr.strip()}")
    return wrap


def test_a_read_only_store_is_one_line_and_a_prompt_exit(tmp_path: Path) -> None:
    """A store on a read-only mount: the CLI and a script exit 1 promptly, no traceback."""
    store = tmp_path / "store"
    status, _, err, _ = run(
        tracker_cli("demo", "--epochs", "1", "--steps", "10", "--backend-store-uri", str(store)),
        tmp_path,
    )
    assert status == 0, err
    for leftover in store.glob("tracker.db-*"):  # WAL files go at close; be sure
        leftover.unlink()
    wrap = _read_only(store)
    for args in (("runs", "list"), ("demo", "--epochs", "1", "--steps", "10")):
        status, out, err, _ = run(
            tracker_cli(*args, "--backend-store-uri", str(store)), tmp_path, wrap
        )
        assert status == 1 and out == ""
        assert "tracker.db" in _one_error_line(err)
    status, _, err, _ = run([sys.executable, "-c", SCRIPT, str(store)], tmp_path, wrap)
    assert status == 1 and "tracker.errors.StoreError" in err


@pytest.mark.parametrize("uri", [":::///", "http://127.0.0.1:5000"])
def test_a_uri_that_is_no_store_is_refused_promptly(tmp_path: Path, uri: str) -> None:
    """A URI that is neither a path nor a store scheme is one line, and creates nothing."""
    status, _, err, _ = run(tracker_cli("runs", "list", "--backend-store-uri", uri), tmp_path)
    assert status == 1 and "sqlite:///path.db" in _one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def run_in_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run a process on a pseudo-terminal (stdout and stderr); (status, everything shown)."""
    leader, follower = pty.openpty()
    env = _env(TERM="xterm-256color", COLUMNS="120")
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the follower side closed: the process is gone
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"{args} hung on a terminal")
        return proc.wait(timeout=DEADLINE), shown.decode(errors="replace")
    finally:
        os.close(leader)


def test_a_terminal_gets_colour_and_progress_bars(tmp_path: Path) -> None:
    """On a terminal, demo and rebuild draw progress bars and runs list colours statuses;
    piped, the same commands print plain text."""
    store = str(tmp_path / "store")
    status, shown = run_in_terminal(
        tracker_cli("demo", "--epochs", "2", "--steps", "20000", "--backend-store-uri", store),
        tmp_path,
    )
    assert status == 0, shown
    assert "training" in shown and "━" in shown and "/40000" in shown
    status, shown = run_in_terminal(tracker_cli("rebuild", "--backend-store-uri", store), tmp_path)
    assert status == 0 and "rebuilding views" in shown and "views rebuilt" in shown
    status, shown = run_in_terminal(
        tracker_cli("runs", "list", "--backend-store-uri", store), tmp_path
    )
    assert status == 0 and "\x1b[32mFINISHED" in shown  # green
    status, out, err, _ = run(tracker_cli("runs", "list", "--backend-store-uri", store), tmp_path)
    assert status == 0 and "FINISHED" in out and "\x1b[" not in out + err
