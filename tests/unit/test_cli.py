"""The command line, run in-process against real stores."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click
import orjson
import pytest
from click.testing import CliRunner, Result

import tracker
from tests.backends import POSTGRES_DSN, postgres_schema
from tracker.cli import main

SECRET = "s3cretpw"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    return {
        "TRACKER_TRACKING_URI": str(tmp_path / "store"),
        "MLFLOW_TRACKING_URI": None,
        "NO_COLOR": None,
    }


def cli(env: dict[str, str | None], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def ok(env: dict[str, str | None], *args: str) -> str:
    result = cli(env, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def fails(env: dict[str, str | None], *args: str) -> str:
    """The one error line of a failed command (exit status 1, no traceback)."""
    result = cli(env, *args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A store with two experiments, runs with metrics and a run with artifacts."""
    store = str(tmp_path / "store")
    (tmp_path / "files" / "ck").mkdir(parents=True)
    (tmp_path / "files" / "ck" / "model.pt").write_bytes(b"w" * 3000)

    async def seed() -> dict[str, str]:
        async with tracker.Tracker(store) as tk:
            a = await tk.start_run("mnist", name="alpha", params={"lr": 0.1})
            for step in range(30):
                a.log_metric("loss", 1 / (step + 1), step=step)
            await a.log_artifact(tmp_path / "files" / "ck" / "model.pt", "checkpoints")
            await a.log_text("hello", "notes.md")
            await a.end()
            b = await tk.start_run("cifar", name="beta")
            b.log_metric("acc", 0.5, step=1)
            await b.end("FAILED")
            return {"alpha": a.run_id, "beta": b.run_id}

    yield asyncio.run(seed())


def test_demo_then_list_show_replay_rebuild(env: dict[str, str | None]) -> None:
    """demo logs a run that runs list/show/replay/rebuild then find and reproduce."""
    out = ok(env, "demo", "--epochs", "2", "--steps", "300")
    assert "logged 1,802 points" in out
    runs = orjson.loads(ok(env, "runs", "list", "--json"))
    assert [r["info"]["status"] for r in runs] == ["FINISHED"]
    run_id = runs[0]["info"]["run_id"]
    assert f"try: tracker runs show {run_id}" in out
    shown = orjson.loads(ok(env, "runs", "show", run_id, "--json"))
    assert shown["info"]["run_id"] == run_id and shown["data"]["params"]["epochs"] == "2"
    assert shown["experiment_name"] == "demo" and shown["artifacts"] == []
    assert set(shown["data"]["metrics"]) == {
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "val/accuracy",
    }
    lines = [orjson.loads(x) for x in ok(env, "replay", run_id).splitlines()]
    assert lines[0]["type"] == "RunCreated" and lines[-1]["type"] == "RunStatusChanged"
    assert sum(len(x["data"].get("metrics", [])) for x in lines) == 1802
    first = ok(env, "replay", run_id, "--until", str(lines[0]["position"]))
    assert len(first.splitlines()) == 1
    assert f"position {lines[-1]['position']}" in ok(env, "rebuild")
    assert orjson.loads(ok(env, "runs", "show", run_id, "--json")) == shown


def test_runs_list_has_a_header_names_status_duration_and_metrics(
    env: dict[str, str | None], seeded: dict[str, str]
) -> None:
    """The table names experiments (not ids), statuses, durations and latest metrics."""
    out = ok(env, "runs", "list")
    header, *rows = out.strip().splitlines()
    for column in (
        "Run ID",
        "Experiment",
        "Name",
        "Status",
        "Started",
        "Duration",
        "Latest metrics",
    ):
        assert column in header
    assert len(rows) == 2
    by_id = {row.split()[0]: row for row in rows}
    alpha, beta = by_id[seeded["alpha"]], by_id[seeded["beta"]]
    assert "mnist" in alpha and "FINISHED" in alpha and "loss=0.0333333" in alpha
    assert "cifar" in beta and "FAILED" in beta and "acc=0.5" in beta
    assert rows[0].startswith(seeded["beta"])  # newest first
    assert all(row.split()[-2].endswith("s") for row in rows)  # duration column
    assert "\x1b[" not in out  # no colour when not a terminal
    failed = orjson.loads(ok(env, "runs", "list", "--status", "FAILED", "--json"))
    assert [r["info"]["run_id"] for r in failed] == [seeded["beta"]]
    assert failed[0]["experiment_name"] == "cifar"


def test_experiment_is_a_name_or_an_id(env: dict[str, str | None], seeded: dict[str, str]) -> None:
    """--experiment takes a name or an id; when neither matches it says what it tried."""
    by_name = orjson.loads(ok(env, "runs", "list", "--experiment", "mnist", "--json"))
    assert [r["info"]["run_id"] for r in by_name] == [seeded["alpha"]]
    experiment_id = by_name[0]["info"]["experiment_id"]
    by_id = orjson.loads(ok(env, "runs", "list", "-e", experiment_id, "--json"))
    assert by_id == by_name
    both = orjson.loads(ok(env, "runs", "list", "-e", "mnist", "-e", "cifar", "--json"))
    assert len(both) == 2
    word = fails(env, "runs", "list", "--experiment", "mnsit")
    assert "no experiment is named 'mnsit'" in word and "'mnist' (id 1)" in word
    number = fails(env, "runs", "list", "--experiment", "42")
    assert "named '42' or has id 42" in number
    assert "No runs in 'Default'." in ok(env, "runs", "list", "-e", "Default")


def test_experiments_list_create_rename_delete_restore(
    env: dict[str, str | None], seeded: dict[str, str]
) -> None:
    """Each experiments subcommand does its change, by name or by id."""
    created = orjson.loads(
        ok(env, "experiments", "create", "svhn", "--tag", "team=vision", "--json")
    )
    assert created["name"] == "svhn" and created["tags"] == {"team": "vision"}
    eid = created["experiment_id"]
    assert "already exists" in fails(env, "experiments", "create", "svhn")
    assert "KEY=VALUE" in cli(env, "experiments", "create", "x", "--tag", "novalue").output
    assert f"renamed experiment {eid} from 'svhn' to 'svhn2'" in ok(
        env, "experiments", "rename", "svhn", "svhn2"
    )
    assert "deleted experiment 'svhn2'" in ok(env, "experiments", "delete", eid)
    active = orjson.loads(ok(env, "experiments", "list", "--json"))
    assert {e["name"] for e in active} == {"Default", "mnist", "cifar"}
    deleted = orjson.loads(ok(env, "experiments", "list", "--view", "deleted", "--json"))
    assert [(e["name"], e["lifecycle_stage"]) for e in deleted] == [("svhn2", "deleted")]
    assert "restored experiment 'svhn2'" in ok(env, "experiments", "restore", "svhn2")
    table = ok(env, "experiments", "list")
    assert table.splitlines()[0].split()[:4] == ["ID", "Name", "Stage", "Runs"]
    mnist = next(line for line in table.splitlines() if " mnist " in line)
    assert " active " in mnist and " 1 " in mnist and "svhn2" in table
    assert "cannot be deleted" in fails(env, "experiments", "delete", "Default")


def test_metrics_history_as_table_csv_and_json(
    env: dict[str, str | None], seeded: dict[str, str]
) -> None:
    """metrics history prints every point (CSV and JSON for scripts); a wrong key lists
    the run's metrics."""
    rid = seeded["alpha"]
    table = ok(env, "metrics", "history", rid, "loss")
    assert "30 points" in table and "Step" in table and "0.0333333" in table
    rows = list(csv.reader(io.StringIO(ok(env, "metrics", "history", rid, "loss", "--csv"))))
    assert rows[0] == ["step", "timestamp", "value"] and len(rows) == 31
    assert [int(r[0]) for r in rows[1:]] == list(range(30))
    assert float(rows[-1][2]) == 1 / 30  # full precision, not a rounded display
    points = orjson.loads(ok(env, "metrics", "history", rid, "loss", "--json"))
    assert [p["step"] for p in points] == list(range(30)) and points[0]["key"] == "loss"
    assert "its metrics: loss" in fails(env, "metrics", "history", rid, "los")
    assert "not found" in fails(env, "metrics", "history", "f" * 32, "loss")


def test_artifacts_list_download_and_runs_show(
    env: dict[str, str | None], seeded: dict[str, str], tmp_path: Path
) -> None:
    """artifacts list/download reach the run's files, and runs show lists them."""
    rid = seeded["alpha"]
    top = orjson.loads(ok(env, "artifacts", "list", rid, "--json"))
    assert top == [
        {"path": "checkpoints", "is_dir": True, "size": None},
        {"path": "notes.md", "is_dir": False, "size": 5},
    ]
    assert "checkpoints/model.pt" in ok(env, "artifacts", "list", rid, "checkpoints")
    one = tmp_path / "one"
    got = ok(env, "artifacts", "download", rid, "checkpoints/model.pt", "--dst", str(one))
    assert got.strip() == str(one / "model.pt") and (one / "model.pt").stat().st_size == 3000
    every = tmp_path / "every"
    ok(env, "artifacts", "download", rid, "-d", str(every))
    assert sorted(p.relative_to(every).as_posix() for p in every.rglob("*") if p.is_file()) == [
        "checkpoints/model.pt",
        "notes.md",
    ]
    assert "has no artifacts" in fails(env, "artifacts", "download", seeded["beta"])
    assert "No artifacts in run" in ok(env, "artifacts", "list", seeded["beta"])
    shown = ok(env, "runs", "show", rid)
    for text in (
        "alpha",
        "mnist (id 1)",
        "FINISHED",
        "lr",
        "0.1",
        "checkpoints/model.pt",
        "2.9 KiB",
    ):
        assert text in shown
    assert orjson.loads(ok(env, "runs", "show", rid, "--json"))["artifacts"] == [
        {"path": "checkpoints/model.pt", "is_dir": False, "size": 3000},
        {"path": "notes.md", "is_dir": False, "size": 5},
    ]


def test_replay_to_a_file(
    env: dict[str, str | None], seeded: dict[str, str], tmp_path: Path
) -> None:
    """replay -o writes the JSON lines to a file and says how many; unknown runs write none."""
    out = tmp_path / "events.jsonl"
    result = cli(env, "replay", seeded["alpha"], "-o", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    events = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert f"{len(events)} events written" in result.stderr
    assert events[0]["type"] == "RunCreated" and events[-1]["type"] == "RunStatusChanged"
    missing = tmp_path / "none.jsonl"
    assert "not found" in fails(env, "replay", "f" * 32, "-o", str(missing))
    assert not missing.exists()
    assert "--until" in cli(env, "replay", seeded["alpha"], "--until", "yesterday").output


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_every_command_takes_backend_store_uri() -> None:
    """Each command has --backend-store-uri, read from both environment variables."""
    commands = list(_commands(main))
    assert len(commands) >= 14
    for path in commands:
        if path in (("server",), ("ui",)):
            # MLflow's server and ui read MLFLOW_BACKEND_STORE_URI: MLFLOW_TRACKING_URI names
            # the server itself for its clients, so it must not be the server's own backend.
            continue
        if path == ("sync",):
            continue  # it opens no store: it sends an outbox directory to a server's URL
        command = main
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        options = {o for p in command.params for o in getattr(p, "opts", ())}
        assert "--backend-store-uri" in options, path
        param = next(p for p in command.params if "--backend-store-uri" in p.opts)
        assert param.envvar == ["TRACKER_TRACKING_URI", "MLFLOW_TRACKING_URI"], path


def test_db_upgrade_takes_the_uri_either_way(tmp_path: Path) -> None:
    """db upgrade accepts a positional URI or --backend-store-uri, and refuses two."""
    env: dict[str, str | None] = {"TRACKER_TRACKING_URI": None, "MLFLOW_TRACKING_URI": None}
    positional = f"sqlite:///{tmp_path}/a.db"
    assert "schema at version 2" in ok(env, "db", "upgrade", positional)
    option = f"sqlite:///{tmp_path}/b.db"
    as_json = orjson.loads(ok(env, "db", "upgrade", "--backend-store-uri", option, "--json"))
    assert as_json == {"schema_version": 2, "uri": option} and (tmp_path / "b.db").is_file()
    both = cli(env, "db", "upgrade", positional, "--backend-store-uri", option)
    assert both.exit_code == 2 and "give the URI once" in both.output
    env["TRACKER_TRACKING_URI"] = str(tmp_path / "elsewhere")  # the argument beats the env
    assert "a.db" in ok(env, "db", "upgrade", positional)
    assert not (tmp_path / "elsewhere").exists()


READS = [
    ("runs", "list"),
    ("runs", "show", "f" * 32),
    ("replay", "f" * 32),
    ("rebuild",),
    ("experiments", "list"),
    ("experiments", "rename", "x", "y"),
    ("experiments", "delete", "x"),
    ("experiments", "restore", "x"),
    ("metrics", "history", "f" * 32, "loss"),
    ("artifacts", "list", "f" * 32),
    ("artifacts", "download", "f" * 32),
]


@pytest.mark.parametrize("args", READS, ids=lambda a: " ".join(a[:2]))
def test_reads_never_create_a_store(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A read of a mistyped store says none exists there and creates nothing."""
    where = tmp_path / "mistyped"
    env: dict[str, str | None] = {"TRACKER_TRACKING_URI": None, "MLFLOW_TRACKING_URI": None}
    line = fails(env, *args, "--backend-store-uri", str(where))
    assert "no tracker store at" in line and "mistyped" in line
    assert list(tmp_path.iterdir()) == []


def test_mlflow_tracking_uri_is_used_when_ours_is_unset(
    tmp_path: Path, seeded: dict[str, str]
) -> None:
    """A shell set up for MLflow ($MLFLOW_TRACKING_URI) works; ours wins when both are set."""
    env: dict[str, str | None] = {
        "TRACKER_TRACKING_URI": None,
        "MLFLOW_TRACKING_URI": str(tmp_path / "store"),
    }
    assert len(orjson.loads(ok(env, "runs", "list", "--json"))) == 2
    env["TRACKER_TRACKING_URI"] = str(tmp_path / "other")
    assert "other" in fails(env, "runs", "list")


def test_uris_that_are_not_paths_are_refused(tmp_path: Path) -> None:
    """:::/// and an MLflow server URL are refused with what to write; nothing is created."""
    env: dict[str, str | None] = {"TRACKER_TRACKING_URI": None, "MLFLOW_TRACKING_URI": None}
    with CliRunner().isolated_filesystem(temp_dir=tmp_path) as here:
        for uri, says in (
            (":::///", "neither a path"),
            ("http://127.0.0.1:5000", "MLflow tracking server"),
        ):
            for args in (("runs", "list"), ("demo", "--steps", "1", "--epochs", "1")):
                line = fails(env, *args, "--backend-store-uri", uri)
                assert says in line and "sqlite:///path.db" in line
        assert list(Path(here).iterdir()) == []


def _with_password(dsn: str, schema: str) -> str:
    parts = urlsplit(dsn)
    netloc = f"{parts.username or 'postgres'}:{SECRET}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc, query=f"search_path={schema}"))


@pytest.fixture
def pg_schemas() -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL schemas, dropped afterwards (the CLI runs its own loops)."""
    loop = asyncio.new_event_loop()
    first, second = postgres_schema(), postgres_schema()
    try:
        names = (
            loop.run_until_complete(first.__aenter__()),
            loop.run_until_complete(second.__aenter__()),
        )
        yield names
        loop.run_until_complete(second.__aexit__(None, None, None))
        loop.run_until_complete(first.__aexit__(None, None, None))
    finally:
        loop.close()


def test_a_password_in_the_uri_is_never_printed(pg_schemas: tuple[str, str]) -> None:
    """demo, db upgrade, errors about the store, driver errors and refused URIs all mask
    the password (PostgreSQL here trusts loopback, so the password is not checked)."""
    uri = _with_password(POSTGRES_DSN, pg_schemas[0])
    masked = uri.replace(SECRET, "***")
    env: dict[str, str | None] = {"TRACKER_TRACKING_URI": uri, "MLFLOW_TRACKING_URI": None}

    def run(*args: str) -> Result:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        assert SECRET not in result.output, result.output
        return result

    demo = run("demo", "--epochs", "1", "--steps", "10")
    assert demo.exit_code == 0 and f"store: {masked}" in demo.stdout
    assert orjson.loads(run("db", "upgrade", "--json").stdout)["uri"] == masked
    assert run("db", "upgrade", uri).stdout.strip() == f"schema at version 2: {masked}"
    listed = run("runs", "list", "--json")
    assert listed.exit_code == 0 and len(orjson.loads(listed.stdout)) == 1
    empty = _with_password(POSTGRES_DSN, pg_schemas[1])
    missing = run("runs", "list", "--backend-store-uri", empty)
    assert missing.exit_code == 1 and "no tracker store at" in missing.stderr
    assert empty.replace(SECRET, "***") in missing.stderr
    typo = run("runs", "list", "--backend-store-uri", uri.replace("postgresql:", "postgress:"))
    assert typo.exit_code == 1 and "'postgress://postgres:***@" in typo.stderr
    refused = run(
        "experiments", "list", "--backend-store-uri", f"mysql://root:{SECRET}@127.0.0.1:1/x"
    )
    assert refused.exit_code == 1 and "127.0.0.1" in refused.stderr
    rejected = run(
        "runs", "list", "--backend-store-uri", f"postgresql://postgres:{SECRET}@/x?host=:"
    )
    assert rejected.exit_code == 1 and rejected.stderr.startswith("Error: ")


def test_warnings_logged_during_a_command_are_masked(env: dict[str, str | None]) -> None:
    """Once a command has run, a writer warning naming a store URI reaches stderr with its
    password masked."""
    runner = CliRunner()
    with runner.isolation(env=env) as (_, err, _):
        with pytest.raises(SystemExit) as exit_info:
            main.main(["experiments", "list"], prog_name="tracker")
        assert exit_info.value.code == 1  # no store there yet: a read does not create one
        logging.getLogger("tracker.writer").warning(
            "append failed (%s); retrying", f"postgresql://postgres:{SECRET}@db/x"
        )
        shown = err.getvalue().decode()
    assert "warning: append failed (postgresql://postgres:***@db/x); retrying" in shown
    assert SECRET not in shown
