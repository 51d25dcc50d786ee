"""The `tracker` command line: inspect runs, replay their history, rebuild views, demo."""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, TypeVar

import click
import orjson

from tracker.client import Tracker
from tracker.entities import RunView
from tracker.errors import TrackerError
from tracker.projections.views import Projector
from tracker.serialization import recorded_to_json
from tracker.stores import ENV_URI, store_from_uri

T = TypeVar("T")

uri_option = click.option(
    "--backend-store-uri",
    "uri",
    envvar=ENV_URI,
    default=None,
    help=f"Where runs are recorded (default: ${ENV_URI}, else ./mlruns).",
)


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except TrackerError as exc:
        raise click.ClickException(str(exc)) from exc


def _ms(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts / 1000).isoformat(sep=" ", timespec="seconds")


@click.group()
@click.version_option(package_name="tracker")
def main() -> None:
    """An async, event-sourced experiment tracker."""


@main.group()
def runs() -> None:
    """List and show runs."""


@runs.command("list")
@uri_option
@click.option(
    "--experiment-id", "experiment_ids", multiple=True, help="Experiment id (repeatable)."
)
@click.option("--max-results", default=100, show_default=True)
def runs_list(uri: str | None, experiment_ids: tuple[str, ...], max_results: int) -> None:
    """Runs, newest first, with their latest metrics."""

    async def go() -> None:
        async with Tracker(uri) as tk:
            ids = list(experiment_ids)
            if not ids:
                ids = [e.experiment_id for e in await tk.search_experiments(max_results=50_000)]
            page = await tk.search_runs(ids, max_results=max_results)
            for r in page:
                metrics = ", ".join(f"{k}={v:.6g}" for k, v in sorted(r.data.metrics.items())[:4])
                click.echo(
                    f"{r.info.run_id}  exp={r.info.experiment_id:<4} {r.info.status:<9} "
                    f"{_ms(r.info.start_time)}  {r.info.run_name}  {metrics}"
                )
            if not page.items:
                click.echo("no runs")

    _run(go())


def _run_json(r: RunView) -> dict[str, Any]:
    return {
        "info": {**{f: getattr(r.info, f) for f in r.info.__slots__}},
        "data": {"params": r.data.params, "tags": r.data.tags, "metrics": r.data.metrics},
    }


@runs.command("show")
@uri_option
@click.argument("run_id")
def runs_show(uri: str | None, run_id: str) -> None:
    """One run as JSON: info, params, tags and latest metrics."""

    async def go() -> None:
        async with Tracker(uri) as tk:
            run = await tk.get_run(run_id)
            click.echo(
                orjson.dumps(
                    _run_json(run), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
                ).decode()
            )

    _run(go())


def _parse_until(value: str | None) -> int | datetime | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("give a log position (an integer) or an ISO time") from None


@main.command()
@uri_option
@click.argument("run_id")
@click.option("--until", help="Stop at this log position (integer) or ISO time, inclusive.")
def replay(uri: str | None, run_id: str, until: str | None) -> None:
    """A run's events in order, as JSON lines."""
    at = _parse_until(until)

    async def go() -> None:
        async with Tracker(uri) as tk:
            found = False
            async for rec in tk.replay(run_id, until=at):
                found = True
                sys.stdout.buffer.write(orjson.dumps(recorded_to_json(rec)) + b"\n")
            if not found:
                raise click.ClickException(f"no events for run {run_id}")

    _run(go())


@main.command()
@uri_option
def rebuild(uri: str | None) -> None:
    """Drop the views and rebuild them from the event log."""

    async def go() -> None:
        store = store_from_uri(uri)
        await store.open()
        try:
            total = await store.head()
            projector = Projector(store)
            with click.progressbar(length=total, label="rebuilding views", file=sys.stderr) as bar:
                position = await projector.rebuild(progress=bar.update)
            click.echo(f"views rebuilt to position {position}")
        finally:
            await store.aclose()

    _run(go())


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("uri", required=False)
def db_upgrade(uri: str | None) -> None:
    """Create or upgrade the schema at URI to this version of tracker."""

    async def go() -> None:
        store = store_from_uri(uri)
        await store.open()  # open() upgrades, serialised across processes
        try:
            click.echo(f"schema at version {await store.schema_version()}")
        finally:
            await store.aclose()

    _run(go())


@main.command()
@uri_option
@click.option("--experiment", default="demo", show_default=True)
@click.option("--epochs", default=5, show_default=True)
@click.option("--steps", default=2000, show_default=True, help="Steps per epoch.")
def demo(uri: str | None, experiment: str, epochs: int, steps: int) -> None:
    """Run a small simulated async training loop and report what it logged and how fast."""

    async def go() -> None:
        rng = random.Random(0)
        async with Tracker(uri) as tk:
            run = await tk.start_run(
                experiment,
                params={"lr": 3e-4, "batch_size": 64, "epochs": epochs},
                tags={"kind": "demo"},
            )
            started = time.perf_counter()
            points = 0
            for epoch in range(epochs):
                for i in range(steps):
                    step = epoch * steps + i
                    loss = 2.0 * math.exp(-step / (epochs * steps / 4)) + rng.random() * 0.05
                    run.log_metrics(
                        {"train/loss": loss, "train/lr": 3e-4, "train/grad_norm": rng.random()},
                        step=step,
                    )
                    points += 3
                    if i % 100 == 0:
                        await asyncio.sleep(0)  # a real loop awaits its data loader here
                run.log_metric("val/accuracy", 1 - 0.5 * math.exp(-epoch), step=epoch)
                points += 1
            logged = time.perf_counter() - started
            await run.end()
            total = time.perf_counter() - started
            stats = tk.statistics()
            r = await tk.get_run(run.run_id)
            click.echo(f"run {run.run_id} in experiment {experiment!r} ({r.info.run_name})")
            click.echo(
                f"logged {points:,} points in {logged:.3f}s; durable and projected after {total:.3f}s"
            )
            click.echo(
                f"  {points / total:,.0f} points/s end to end, {stats.batches} batches, {stats.events_written} events"
            )
            for k, v in sorted(r.data.metrics.items()):
                click.echo(f"  {k:<18} {v:.6g}")
            click.echo(f"store: {tk.uri}   try: tracker runs show {run.run_id}")

    _run(go())


from tracker.server.cli import server  # noqa: E402  (registered last: another module's command)

main.add_command(server)

if __name__ == "__main__":
    main()
