"""The `tracker` command line: runs, experiments, metrics, artifacts, history, schema, demo."""

from __future__ import annotations

import asyncio
import csv
import logging
import math
import os
import posixpath
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import click
import orjson
import stamina
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from tracker.artifacts.base import ArtifactEntry
from tracker.client import Tracker
from tracker.entities import Experiment, Metric, RunView
from tracker.errors import NotFoundError, StoreUnavailableError, TrackerError
from tracker.events import run_stream
from tracker.projections import default_projections
from tracker.projections.runner import ProjectionRunner
from tracker.serialization import recorded_to_json
from tracker.stores import ENV_URI, MLFLOW_ENV_URI, is_remote_uri, resolve_uri, store_from_uri
from tracker.stores.uris import MaskCredentials, mask_credentials, mask_password

T = TypeVar("T")

VIEW_TYPES: Final = {"active": "ACTIVE_ONLY", "deleted": "DELETED_ONLY", "all": "ALL"}
STATUS_STYLES: Final = {
    "RUNNING": "cyan",
    "SCHEDULED": "blue",
    "FINISHED": "green",
    "FAILED": "red",
    "KILLED": "yellow",
}
_WIDE: Final = 200
"""Columns for tables written to a pipe or file: wide enough that run ids never wrap."""
_SHOWN_ARTIFACTS: Final = 1000
_PAGE: Final = 1000
_FOLLOW_POLL: Final = 0.2
"""Seconds between reads of the log while `replay --follow` waits for new events."""
_FOLLOW_OUTAGE: Final = 60.0
"""How long `replay --follow` retries a store that cannot be reached before it gives up."""

uri_option = click.option(
    "--backend-store-uri",
    "uri",
    envvar=[ENV_URI, MLFLOW_ENV_URI],
    default=None,
    metavar="URI",
    help=f"Where runs are recorded (default: ${ENV_URI}, else ${MLFLOW_ENV_URI}, else ./mlruns).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
view_option = click.option(
    "--view",
    type=click.Choice(sorted(VIEW_TYPES)),
    default="active",
    show_default=True,
    help="Which lifecycle stage to include.",
)


# -- output -------------------------------------------------------------------------------


def _out() -> Console:
    """Standard output as rich sees it now (click's test runner swaps sys.stdout): colour
    only on a terminal (and never with NO_COLOR), wide tables when piped."""
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=_WIDE if wide else None)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@contextmanager
def _progress(console: Console, enabled: bool = True) -> Iterator[Progress]:
    """A progress display on stderr; nothing at all when stderr is not a terminal, so logs
    and pipes get only the result lines."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    ) as progress:
        yield progress


def _ms(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts / 1000).isoformat(sep=" ", timespec="seconds")


def _duration(start: int | None, end: int | None) -> str:
    """A run's duration (so far, for a run without an end time)."""
    if start is None:
        return "-"
    seconds = max(0, (end if end is not None else time.time_ns() // 1_000_000) - start) / 1000
    if seconds < 60:
        text = f"{seconds:.1f}s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    else:
        text = f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"
    return text if end is not None else f"{text}+"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _status(status: str) -> str:
    return f"[{STATUS_STYLES.get(status, 'default')}]{status}[/]"


def _metrics_cell(metrics: dict[str, float], limit: int = 4) -> str:
    shown = [f"{escape(k)}={v:.6g}" for k, v in sorted(metrics.items())[:limit]]
    if len(metrics) > limit:
        shown.append(f"(+{len(metrics) - limit} more)")
    return ", ".join(shown)


def _run_json(r: RunView) -> dict[str, Any]:
    return {
        "info": {f: getattr(r.info, f) for f in r.info.__slots__},
        "data": {"params": r.data.params, "tags": r.data.tags, "metrics": r.data.metrics},
    }


def _experiment_json(e: Experiment) -> dict[str, Any]:
    return {f: getattr(e, f) for f in e.__slots__}


def _entry_json(e: ArtifactEntry) -> dict[str, Any]:
    return {"path": e.path, "is_dir": e.is_dir, "size": e.size}


# -- running a command --------------------------------------------------------------------


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; tracker's errors (and the OS's) become one masked line on
    stderr and exit status 1, never a traceback."""
    try:
        return asyncio.run(coro)
    except click.ClickException as exc:
        exc.message = mask_credentials(exc.message)
        raise
    except (TrackerError, OSError) as exc:
        raise click.ClickException(mask_credentials(str(exc) or type(exc).__name__)) from exc


@asynccontextmanager
async def _open(uri: str | None, *, create: bool = False) -> AsyncIterator[Tracker]:
    """An open Tracker. Reads pass create=False: a store that is not there is reported, and
    nothing is created in its place."""
    if is_remote_uri(resolve_uri(uri)):
        # The CLI opens stores directly (reading through a server would turn "no server there"
        # into 30 s of retries): refused with the store forms to write instead.
        store_from_uri(resolve_uri(uri))
    tk = Tracker(uri, create=create)
    try:
        await tk.open()
    except NotFoundError as exc:
        raise click.ClickException(
            f"{exc}; for another store, give --backend-store-uri or set ${ENV_URI}"
        ) from exc
    try:
        yield tk
    finally:
        await tk.aclose()


async def _all_experiments(tk: Tracker, view_type: str = "ACTIVE_ONLY") -> list[Experiment]:
    out: list[Experiment] = []
    token: str | None = None
    while True:
        page = await tk.search_experiments(view_type, _PAGE, token)
        out.extend(page.items)
        token = page.next_page_token
        if token is None:
            return out


async def _experiment(tk: Tracker, ref: str) -> Experiment:
    """The experiment named `ref`, else the one whose id is `ref`; an error saying both were
    tried (and which experiments exist) when neither is there."""
    found = await tk.get_experiment_by_name(ref)
    if found is None and ref.isdigit():
        with suppress(NotFoundError):
            found = await tk.get_experiment(ref)
    if found is not None:
        return found
    known = await _all_experiments(tk, "ALL")
    listed = ", ".join(f"{e.name!r} (id {e.experiment_id})" for e in known[:10])
    more = f" and {len(known) - 10} more" if len(known) > 10 else ""
    if ref.isdigit():
        what = f"no experiment is named {ref!r} or has id {ref}"
    else:
        what = f"no experiment is named {ref!r} (and it is no id: ids are numbers)"
    raise click.ClickException(f"{what}; experiments here: {listed or 'none'}{more}")


class _EchoHandler(logging.Handler):
    """Warnings from tracker's loggers on stderr, credentials masked, one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"{record.levelname.lower()}: {self.format(record)}", err=True)


def _log_to_stderr() -> None:
    """Show tracker's warnings (retries, given-up batches) with credentials masked. Records
    still propagate: an application that configured logging sees them too."""
    logger = logging.getLogger("tracker")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        handler = _EchoHandler(logging.WARNING)
        handler.addFilter(MaskCredentials())
        logger.addHandler(handler)


# -- commands -----------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tracker")
def main() -> None:
    """An async, event-sourced experiment tracker in the MLflow family."""
    _log_to_stderr()


@main.group()
def runs() -> None:
    """List and show runs."""


@runs.command("list")
@uri_option
@click.option(
    "--experiment",
    "-e",
    "experiments",
    multiple=True,
    metavar="NAME|ID",
    help="An experiment, by name or id (repeatable; default: every active experiment).",
)
@click.option("--experiment-id", "experiment_ids", multiple=True, hidden=True)
@click.option(
    "--status",
    type=click.Choice(sorted(STATUS_STYLES)),
    default=None,
    help="Only runs in this status.",
)
@view_option
@click.option(
    "--max-results", default=100, show_default=True, type=click.IntRange(1, 50_000),
    help="At most this many runs, the newest.",
)  # fmt: skip
@json_option
def runs_list(
    uri: str | None,
    experiments: tuple[str, ...],
    experiment_ids: tuple[str, ...],
    status: str | None,
    view: str,
    max_results: int,
    as_json: bool,
) -> None:
    """Runs, newest first, with their experiment, status, duration and latest metrics."""

    async def go() -> None:
        async with _open(uri) as tk:
            refs = [*experiments, *experiment_ids]
            if refs:
                chosen = [await _experiment(tk, ref) for ref in refs]
            else:
                chosen = await _all_experiments(tk)
            names = {e.experiment_id: e.name for e in await _all_experiments(tk, "ALL")}
            page = await tk.search_runs(
                [e.experiment_id for e in chosen], status=status, view_type=VIEW_TYPES[view],
                max_results=max_results,
            )  # fmt: skip
        if as_json:
            _echo_json(
                [{**_run_json(r), "experiment_name": names.get(r.info.experiment_id)} for r in page]
            )
            return
        out = _out()
        if not page.items:
            where = ", ".join(repr(e.name) for e in chosen) or "any experiment"
            out.print(f"No runs in {escape(where)}.")
            return
        table = Table(header_style="bold", box=None, pad_edge=False)
        for column in ("Run ID", "Experiment", "Name", "Status", "Started", "Duration"):
            table.add_column(column, no_wrap=True)
        table.add_column("Latest metrics", overflow="fold")
        for r in page:
            i = r.info
            table.add_row(
                i.run_id, escape(names.get(i.experiment_id, i.experiment_id)), escape(i.run_name),
                _status(i.status), _ms(i.start_time), _duration(i.start_time, i.end_time),
                _metrics_cell(r.data.metrics),
            )  # fmt: skip
        out.print(table)
        if page.next_page_token is not None:
            _err().print(f"(the newest {len(page)}; --max-results shows more)")

    _run(go())


async def _walk_artifacts(tk: Tracker, run_id: str, limit: int) -> list[ArtifactEntry]:
    """Every artifact file of a run, breadth first, at most `limit`."""
    files: list[ArtifactEntry] = []
    pending: list[str | None] = [None]
    while pending and len(files) < limit:
        for entry in await tk.list_artifacts(run_id, pending.pop(0)):
            if entry.is_dir:
                pending.append(entry.path)
            else:
                files.append(entry)
    return sorted(files[:limit], key=lambda e: e.path)


@runs.command("show")
@uri_option
@click.argument("run_id")
@json_option
def runs_show(uri: str | None, run_id: str, as_json: bool) -> None:
    """One run: info, params, tags, latest metrics and artifacts."""

    async def go() -> None:
        async with _open(uri) as tk:
            run = await tk.get_run(run_id)
            experiment = await tk.get_experiment(run.info.experiment_id)
            files = await _walk_artifacts(tk, run_id, _SHOWN_ARTIFACTS)
        if as_json:
            _echo_json(
                {
                    **_run_json(run),
                    "experiment_name": experiment.name,
                    "artifacts": [_entry_json(e) for e in files],
                }
            )
            return
        out = _out()
        i = run.info
        info = Table.grid(padding=(0, 2))
        info.add_column(style="bold")
        info.add_column()
        for label, value in (
            ("run", f"{i.run_id}  {escape(i.run_name)}"),
            ("experiment", f"{escape(experiment.name)} (id {i.experiment_id})"),
            ("status", _status(i.status) + ("" if i.lifecycle_stage == "active" else " (deleted)")),
            ("started", _ms(i.start_time)),
            ("ended", _ms(i.end_time)),
            ("duration", _duration(i.start_time, i.end_time)),
            ("user", escape(i.user_id)),
            ("artifacts at", escape(i.artifact_uri)),
        ):
            info.add_row(label, value)
        out.print(info)
        for title, rows in (
            ("Params", sorted(run.data.params.items())),
            ("Tags", sorted(run.data.tags.items())),
            ("Latest metrics", [(k, f"{v:.6g}") for k, v in sorted(run.data.metrics.items())]),
            ("Artifacts", [(e.path, _size(e.size)) for e in files]),
        ):
            out.print()
            if not rows:
                out.print(f"[bold]{title}[/]: none")
                continue
            table = Table(title=title, title_justify="left", title_style="bold", box=None)
            table.add_column("key" if title != "Artifacts" else "path", overflow="fold")
            table.add_column("value" if title != "Artifacts" else "size", overflow="fold")
            for k, v in rows:
                table.add_row(escape(k), escape(v))
            out.print(table)
        if len(files) == _SHOWN_ARTIFACTS:
            out.print(
                f"(the first {_SHOWN_ARTIFACTS} artifacts; `tracker artifacts list` for more)"
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
        raise click.BadParameter(
            "give a log position (an integer) or an ISO time", param_hint="--until"
        ) from None


@main.command()
@uri_option
@click.argument("run_id")
@click.option("--until", help="Stop at this log position (integer) or ISO time, inclusive.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the JSON lines to this file (with a progress display) instead of stdout.",
)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="After the history, print each new event as it commits, until Ctrl-C or SIGTERM "
    "(exit 0). Polls the log of a local or database store; a tracking server's URI is not "
    "taken here (its stream is GET /api/tracker/v1/events/stream).",
)
def replay(
    uri: str | None, run_id: str, until: str | None, output: Path | None, follow: bool
) -> None:
    """A run's events in order, as JSON lines. From a tracking server's URL (http://...) they
    come through its native API, and --follow reads its live event stream."""
    at = _parse_until(until)
    if follow and at is not None:
        raise click.UsageError("--follow prints events as they commit: give it without --until")
    if is_remote_uri(resolve_uri(uri)):
        if until is not None:
            raise click.UsageError("--until needs the store itself, not a tracking server's URL")
        sink = output.open("wb") if output is not None else sys.stdout.buffer
        try:
            count = _run(_replay_remote(resolve_uri(uri), run_id, follow, sink))
        finally:
            if output is not None:
                sink.close()
        if output is not None:
            _err().print(f"{count:,} events written to {escape(str(output))}")
        return

    async def go() -> int:
        async with _open(uri) as tk:
            sink = output.open("wb") if output is not None else sys.stdout.buffer
            count = 0
            last = 0
            try:
                # On a terminal the events themselves show the progress.
                shown = output is not None or not sys.stdout.isatty()
                with _progress(_err(), enabled=shown) as progress:
                    task = progress.add_task(f"replaying {run_id}", total=None)
                    async for rec in tk.replay(run_id, until=at):
                        sink.write(orjson.dumps(recorded_to_json(rec)) + b"\n")
                        count += 1
                        last = rec.position
                        if count % 500 == 0:
                            progress.update(task, completed=count)
                if not count:
                    await tk.get_run(run_id)  # a NotFoundError says the run does not exist
                if follow:
                    sink.flush()
                    count += await _follow_run(tk, run_id, last, sink)
            finally:
                if output is not None:
                    sink.close()
                else:
                    sink.flush()
            return count

    try:
        count = _run(go())
    finally:
        if output is not None and output.exists() and output.stat().st_size == 0:
            output.unlink()
    if not count:
        raise click.ClickException(f"no events for run {run_id} up to {until}")
    if output is not None:
        _err().print(f"{count:,} events written to {escape(str(output))}")


def _stop_on_signals(stop: asyncio.Event) -> list[signal.Signals]:
    """SIGINT and SIGTERM set `stop` (where the loop can take them); the signals installed."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not on Windows, nor outside the main thread (click's test runner): Ctrl-C then
        # interrupts as it does everywhere else.
        with suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    return installed


async def _replay_remote(url: str, run_id: str, follow: bool, sink: Any) -> int:
    """A run's events from a tracking server's native API, then, with `follow`, each new one
    from its server-sent-events stream until SIGINT or SIGTERM; how many were written. A
    dropped stream is reopened from the last event seen (Last-Event-ID), so none is skipped or
    written twice."""
    from tracker.remote.client import _aiohttp  # the server extra's aiohttp, or a clear error

    aiohttp = _aiohttp()
    base = url.rstrip("/") + "/api/tracker/v1"
    count = after = 0
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def page() -> list[dict[str, Any]]:
            async with http.get(
                f"{base}/runs/{run_id}/events", params={"after": after, "limit": _PAGE},
                timeout=aiohttp.ClientTimeout(total=60),
            ) as r:  # fmt: skip
                body = await r.read()
                if r.status == 404:
                    raise click.ClickException(f"no run {run_id} at {mask_password(url)}")
                if r.status >= 400:
                    raise StoreUnavailableError(f"{mask_password(url)} answered {r.status}")
                events: list[dict[str, Any]] = orjson.loads(body)["events"]
                return events

        while True:
            async for attempt in stamina.retry_context(
                on=(StoreUnavailableError, aiohttp.ClientError, TimeoutError), attempts=None,
                timeout=_FOLLOW_OUTAGE, wait_initial=0.05, wait_max=2.0, wait_jitter=0.2,
            ):  # fmt: skip
                with attempt:
                    events = await page()
            for event in events:
                sink.write(orjson.dumps(event) + b"\n")
                after = int(event["position"])
            count += len(events)
            if len(events) < _PAGE:
                break
        sink.flush()
        if not follow:
            if not count:
                raise click.ClickException(f"no events for run {run_id}")
            return count
        stop = asyncio.Event()
        installed = _stop_on_signals(stop)
        written = [0]  # kept here: the reader is cancelled when a signal stops it
        reading = asyncio.ensure_future(_read_stream(http, base, run_id, after, sink, written))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if reading.done():
                reading.result()  # raises what ended the stream
        finally:
            for task in (reading, stopping):
                task.cancel()
            await asyncio.gather(reading, stopping, return_exceptions=True)
            for sig in installed:
                asyncio.get_running_loop().remove_signal_handler(sig)
            count += written[0]
    return count


async def _read_stream(
    http: Any, base: str, run_id: str, after: int, sink: Any, written: list[int]
) -> None:
    """Write the run's events from the server's SSE stream after position `after`, for ever
    (until cancelled), counting them in `written[0]`. A dropped stream is reopened from the
    last event seen, with jittered backoff, for at most _FOLLOW_OUTAGE seconds of outage at a
    time: a connection that delivered events starts the budget afresh. The SSE framing is
    parsed here (a few lines: `id:`, `event:`, `data:`, a blank line ends an event) rather
    than with a client library for one loop."""
    from tracker.remote.client import _aiohttp

    retryable = (StoreUnavailableError, _aiohttp().ClientError, OSError, TimeoutError)

    async def connection() -> bool:
        """Read one connection until it ends (raising); whether it delivered an event."""
        nonlocal after
        delivered = False
        try:
            async with http.get(
                f"{base}/events/stream", params={"run_id": run_id},
                headers={"Last-Event-ID": str(after), "Accept": "text/event-stream"},
            ) as r:  # fmt: skip
                if r.status >= 400:
                    raise StoreUnavailableError(f"the event stream answered {r.status}")
                kind, data, ident = "message", [], None
                async for raw in r.content:
                    line = raw.decode().rstrip("\r\n")
                    if line:
                        field, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if field == "data":
                            data.append(value)
                        elif field == "id":
                            ident = value
                        elif field == "event":
                            kind = value
                        continue
                    if data and kind == "error":
                        raise StoreUnavailableError("".join(data))
                    if data and kind == "message":
                        sink.write("\n".join(data).encode() + b"\n")
                        sink.flush()
                        written[0] += 1
                        delivered = True
                        after = int(ident) if ident else after
                    kind, data, ident = "message", [], None
                raise StoreUnavailableError("the event stream ended")
        except retryable:
            if delivered:
                return True  # reconnect at once, with a fresh outage budget
            raise

    while True:
        async for attempt in stamina.retry_context(
            on=retryable, attempts=None, timeout=_FOLLOW_OUTAGE, wait_initial=0.05,
            wait_max=2.0, wait_jitter=0.2,
        ):  # fmt: skip
            with attempt:
                await connection()


async def _follow_run(tk: Tracker, run_id: str, after: int, sink: Any) -> int:
    """Print the run's events after position `after` as they commit, until SIGINT or SIGTERM;
    how many were printed. Reads the run's stream by position (positions follow commit order,
    so an event that commits late is not skipped); a store that drops out is retried."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = _stop_on_signals(stop)
    stream = run_stream(run_id)
    count = 0
    try:
        while not stop.is_set():
            async for attempt in stamina.retry_context(
                on=StoreUnavailableError, attempts=None, timeout=_FOLLOW_OUTAGE,
                wait_initial=0.05, wait_max=2.0, wait_jitter=0.2,
            ):  # fmt: skip
                with attempt:
                    page = await tk.log.read_stream(stream, after=after, limit=_PAGE)
            for rec in page:
                sink.write(orjson.dumps(recorded_to_json(rec)) + b"\n")
                after = rec.position
            count += len(page)
            sink.flush()
            if len(page) < _PAGE:
                with suppress(TimeoutError):
                    async with asyncio.timeout(_FOLLOW_POLL):
                        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return count


@main.command()
@uri_option
def rebuild(uri: str | None) -> None:
    """Drop the views and rebuild them from the event log."""

    async def go() -> None:
        store = store_from_uri(uri)
        await store.open(create=False)
        try:
            total = await store.head()
            with _progress(_err()) as progress:
                task = progress.add_task("rebuilding views", total=total)
                runner = ProjectionRunner(store, store, default_projections())
                await runner.open()
                position = await runner.rebuild(progress=lambda n: progress.advance(task, n))
            click.echo(f"views rebuilt to position {position}")
        finally:
            await store.aclose()

    _run(go())


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("positional_uri", metavar="[URI]", required=False)
@uri_option
@json_option
@click.pass_context
def db_upgrade(
    ctx: click.Context, positional_uri: str | None, uri: str | None, as_json: bool
) -> None:
    """Create or upgrade the schema at URI (or --backend-store-uri) to this version."""
    if positional_uri is not None:
        given = ctx.get_parameter_source("uri") == ParameterSource.COMMANDLINE
        if given and uri != positional_uri:
            raise click.UsageError("give the URI once: as an argument or as --backend-store-uri")
        uri = positional_uri
    where = mask_password(resolve_uri(uri))

    async def go() -> None:
        store = store_from_uri(uri)
        with _progress(_err()) as progress:
            progress.add_task(f"upgrading the schema at {escape(where)}", total=None)
            await store.open()  # open() upgrades, serialised across processes
        try:
            version = await store.schema_version()
        finally:
            await store.aclose()
        if as_json:
            _echo_json({"uri": where, "schema_version": version})
        else:
            click.echo(f"schema at version {version}: {where}")

    _run(go())


# -- experiments --------------------------------------------------------------------------


@main.group()
def experiments() -> None:
    """List, create, rename, delete and restore experiments."""


@experiments.command("list")
@uri_option
@view_option
@json_option
def experiments_list(uri: str | None, view: str, as_json: bool) -> None:
    """Experiments, with their lifecycle stage, artifact location and run counts."""

    async def go() -> None:
        async with _open(uri) as tk:
            found = await _all_experiments(tk, VIEW_TYPES[view])
            counts = {}
            for e in found:
                page = await tk.search_runs(e.experiment_id, view_type="ALL", max_results=1000)
                counts[e.experiment_id] = f"{len(page)}{'+' if page.next_page_token else ''}"
        if as_json:
            _echo_json([_experiment_json(e) for e in found])
            return
        table = Table(header_style="bold", box=None, pad_edge=False)
        for column in ("ID", "Name", "Stage", "Runs", "Created", "Artifact location", "Tags"):
            table.add_column(column, overflow="fold")
        for e in found:
            stage = e.lifecycle_stage if e.lifecycle_stage == "active" else "[red]deleted[/]"
            table.add_row(
                e.experiment_id, escape(e.name), stage, counts[e.experiment_id],
                _ms(e.creation_time), escape(e.artifact_location),
                escape(", ".join(f"{k}={v}" for k, v in sorted(e.tags.items()))),
            )  # fmt: skip
        _out().print(table)

    _run(go())


def _parse_tags(values: Sequence[str]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, sep, tag = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"write KEY=VALUE, not {value!r}", param_hint="--tag")
        tags[key] = tag
    return tags


@experiments.command("create")
@uri_option
@click.argument("name")
@click.option("--artifact-location", help="Where its runs keep artifacts (a path or s3://...).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable).")
@json_option
def experiments_create(
    uri: str | None, name: str, artifact_location: str | None, tags: tuple[str, ...], as_json: bool
) -> None:
    """Create an experiment (and the store, if none is there yet)."""
    checked = _parse_tags(tags)

    async def go() -> None:
        async with _open(uri, create=True) as tk:
            experiment_id = await tk.create_experiment(name, artifact_location, checked)
            created = await tk.get_experiment(experiment_id)
        if as_json:
            _echo_json(_experiment_json(created))
        else:
            click.echo(f"created experiment {name!r} with id {experiment_id}")

    _run(go())


@experiments.command("rename")
@uri_option
@click.argument("experiment", metavar="NAME|ID")
@click.argument("new_name")
def experiments_rename(uri: str | None, experiment: str, new_name: str) -> None:
    """Rename an experiment."""

    async def go() -> None:
        async with _open(uri) as tk:
            found = await _experiment(tk, experiment)
            await tk.rename_experiment(found.experiment_id, new_name)
        click.echo(f"renamed experiment {found.experiment_id} from {found.name!r} to {new_name!r}")

    _run(go())


def _change_stage(uri: str | None, experiment: str, deleted: bool) -> None:
    async def go() -> Experiment:
        async with _open(uri) as tk:
            found = await _experiment(tk, experiment)
            change = tk.delete_experiment if deleted else tk.restore_experiment
            await change(found.experiment_id)
            return found

    found = _run(go())
    verb = "deleted" if deleted else "restored"
    click.echo(f"{verb} experiment {found.name!r} (id {found.experiment_id})")


@experiments.command("delete")
@uri_option
@click.argument("experiment", metavar="NAME|ID")
def experiments_delete(uri: str | None, experiment: str) -> None:
    """Soft-delete an experiment and its runs (restore brings them back)."""
    _change_stage(uri, experiment, deleted=True)


@experiments.command("restore")
@uri_option
@click.argument("experiment", metavar="NAME|ID")
def experiments_restore(uri: str | None, experiment: str) -> None:
    """Restore a deleted experiment and its runs."""
    _change_stage(uri, experiment, deleted=False)


# -- metrics and artifacts ----------------------------------------------------------------


@main.group()
def metrics() -> None:
    """Metric histories."""


@metrics.command("history")
@uri_option
@click.argument("run_id")
@click.argument("key")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: step,timestamp,value.")
@json_option
def metrics_history(uri: str | None, run_id: str, key: str, as_csv: bool, as_json: bool) -> None:
    """Every point of one metric of a run, ordered by step."""
    if as_csv and as_json:
        raise click.UsageError("give --csv or --json, not both")

    async def go() -> list[Metric]:
        async with _open(uri) as tk:
            points: list[Metric] = []
            token: str | None = None
            while True:
                page = await tk.get_metric_history(run_id, key, page_token=token)
                points.extend(page.items)
                token = page.next_page_token
                if token is None:
                    break
            if not points:
                run = await tk.get_run(run_id)
                keys = ", ".join(sorted(run.data.metrics)) or "none"
                raise click.ClickException(
                    f"run {run_id} has no metric {key!r}; its metrics: {keys}"
                )
            return points

    points = _run(go())
    if as_json:
        _echo_json([{"key": m.key, "step": m.step, "timestamp": m.timestamp, "value": m.value}
                    for m in points])  # fmt: skip
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["step", "timestamp", "value"])
        writer.writerows((m.step, m.timestamp, repr(m.value)) for m in points)
    else:
        out = _out()
        out.print(f"[bold]{escape(key)}[/] of run {run_id}: {len(points):,} points")
        table = Table(header_style="bold", box=None, pad_edge=False)
        table.add_column("Step", justify="right")
        table.add_column("Value", justify="right")
        table.add_column("Time")
        for m in points:
            table.add_row(str(m.step), f"{m.value:.6g}", _ms(m.timestamp))
        out.print(table)


@main.group()
def artifacts() -> None:
    """A run's artifacts."""


@artifacts.command("list")
@uri_option
@click.argument("run_id")
@click.argument("path", required=False)
@json_option
def artifacts_list(uri: str | None, run_id: str, path: str | None, as_json: bool) -> None:
    """One level of a run's artifacts (under PATH)."""

    async def go() -> list[ArtifactEntry]:
        async with _open(uri) as tk:
            return await tk.list_artifacts(run_id, path)

    entries = _run(go())
    if as_json:
        _echo_json([_entry_json(e) for e in entries])
        return
    out = _out()
    if not entries:
        out.print(f"No artifacts{f' under {escape(path)}' if path else ''} in run {run_id}.")
        return
    table = Table(header_style="bold", box=None, pad_edge=False)
    table.add_column("Path", overflow="fold")
    table.add_column("Size", justify="right")
    for e in entries:
        table.add_row(escape(e.path + ("/" if e.is_dir else "")), _size(e.size))
    out.print(table)


@artifacts.command("download")
@uri_option
@click.argument("run_id")
@click.argument("path", required=False)
@click.option(
    "--dst",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The local directory to download into.",
)
def artifacts_download(uri: str | None, run_id: str, path: str | None, dst: Path) -> None:
    """Download a run's artifact file or directory PATH (default: all of them) into DST."""

    async def go() -> list[Path]:
        async with _open(uri) as tk:
            wanted = [path] if path else [e.path for e in await tk.list_artifacts(run_id)]
            if not wanted:
                raise click.ClickException(f"run {run_id} has no artifacts")
            await asyncio.to_thread(dst.mkdir, parents=True, exist_ok=True)
            got = []
            with _progress(_err()) as progress:
                task = progress.add_task(f"downloading to {escape(str(dst))}", total=len(wanted))
                for item in wanted:
                    got.append(await tk.download_artifacts(run_id, posixpath.normpath(item), dst))
                    progress.advance(task)
            return got

    for local in _run(go()):
        click.echo(str(local))


# -- sync ---------------------------------------------------------------------------------


@main.command()
@click.argument("outbox_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--to",
    "url",
    required=True,
    metavar="URL",
    help="The tracking server to send to (http://host:port or https://...).",
)
@click.option(
    "--grace",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to keep retrying a server that cannot be reached.",
)
def sync(outbox_dir: Path, url: str, grace: float) -> None:
    """Send what a remote tracker left in OUTBOX_DIR (a process that ended before its
    tracking server acknowledged everything) to the server at URL, oldest first. Commands
    the server has stored already are not stored again; exits 0 once the outbox is empty."""
    from tracker.remote import deliver
    from tracker.remote.outbox import SUFFIX as OUTBOX_SUFFIX
    from tracker.stores import is_remote_uri

    if not is_remote_uri(url):
        raise click.BadParameter(
            f"{mask_password(url)!r} is not a tracking server's URL: give http://host:port "
            "or https://host",
            param_hint="--to",
        )

    async def go() -> int:
        with _progress(_err()) as progress:
            task = progress.add_task(f"sending to {escape(mask_password(url))}", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            return await deliver(outbox_dir, url, progress=advance, grace=grace)

    sent = _run(go())
    held = sorted(outbox_dir.glob(f"*{OUTBOX_SUFFIX}"))
    if held:
        raise click.ClickException(
            f"{len(held)} outbox files in {outbox_dir} are held by running trackers, which "
            f"send them themselves ({held[0].name}...); {sent:,} commands delivered"
        )
    click.echo(f"outbox empty: {sent:,} commands delivered to {mask_password(url)}")


# -- demo ---------------------------------------------------------------------------------


@main.command()
@uri_option
@click.option("--experiment", default="demo", show_default=True)
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1))
@click.option(
    "--steps", default=2000, show_default=True, help="Steps per epoch.", type=click.IntRange(1)
)
def demo(uri: str | None, experiment: str, epochs: int, steps: int) -> None:
    """Run a small simulated async training loop and report what it logged and how fast."""

    async def go() -> None:
        rng = random.Random(0)
        async with _open(uri, create=True) as tk:
            run = await tk.start_run(
                experiment,
                params={"lr": 3e-4, "batch_size": 64, "epochs": epochs},
                tags={"kind": "demo"},
            )
            started = time.perf_counter()
            points = 0
            with _progress(_err()) as progress:
                task = progress.add_task("training", total=epochs * steps)
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
                            progress.update(task, completed=step)
                            await asyncio.sleep(0)  # a real loop awaits its data loader here
                    run.log_metric("val/accuracy", 1 - 0.5 * math.exp(-epoch), step=epoch)
                    points += 1
                progress.update(task, completed=epochs * steps)
            logged = time.perf_counter() - started
            await run.end()
            total = time.perf_counter() - started
            stats = tk.statistics()
            r = await tk.get_run(run.run_id)
        out = _out()
        out.print(
            f"run {r.info.run_id} in experiment {escape(repr(experiment))} ({escape(r.info.run_name)})"
        )
        out.print(
            f"logged {points:,} points in {logged:.3f}s; durable and projected after {total:.3f}s"
        )
        out.print(
            f"  {points / total:,.0f} points/s end to end, {stats.batches} batches, "
            f"{stats.events_written} events"
        )
        table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2))
        table.add_column()
        table.add_column(justify="right")
        for k, v in sorted(r.data.metrics.items()):
            table.add_row(f"  {escape(k)}", f"{v:.6g}")
        out.print(table)
        out.print(f"store: {escape(tk.display_uri)}   try: tracker runs show {r.info.run_id}")

    _run(go())


from tracker.server.cli import server, ui  # noqa: E402  (registered last: another module's commands)

main.add_command(server)
main.add_command(ui)

if __name__ == "__main__":
    main()
