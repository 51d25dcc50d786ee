"""`tracker server`: bind once, then serve in this process or in worker processes sharing the socket."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from types import FrameType
from typing import Any, Final, TypeVar

import click

from tracker.errors import TrackerError
from tracker.server.config import (
    DEFAULT_ARTIFACTS_DESTINATION,
    DEFAULT_BACKEND_STORE_URI,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
    MULTIPROC_ENV,
    ServerConfig,
)

CONFIG_ENV: Final = "TRACKER_SERVER_CONFIG"
SOCKET_FD_ENV: Final = "TRACKER_SERVER_SOCKET_FD"
SHUTDOWN_TIMEOUT_ENV: Final = "TRACKER_SERVER_SHUTDOWN_TIMEOUT"
DEFAULT_SHUTDOWN_TIMEOUT: Final = 30.0
_BACKLOG: Final = 1024
_KILL_MARGIN: Final = 10.0

log = logging.getLogger("tracker.server")
F = TypeVar("F", bound=Callable[..., Any])


def _store_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--backend-store-uri", envvar="MLFLOW_BACKEND_STORE_URI",
        default=DEFAULT_BACKEND_STORE_URI, show_default=True, help=help,
    )  # fmt: skip


def _address_options(what: str) -> Callable[[F], F]:
    """--host and --port, with MLflow's names, variables and defaults."""
    host = click.option(
        "-h", "--host", envvar="MLFLOW_HOST", default="127.0.0.1", show_default=True,
        help=f"The interface to listen on; 0.0.0.0 exposes the {what} to the network.",
    )  # fmt: skip
    port = click.option(
        "-p", "--port", envvar="MLFLOW_PORT", default=5000, show_default=True,
        type=click.IntRange(0, 65535), help="The port to listen on (0: any free port).",
    )  # fmt: skip
    return lambda f: host(port(f))


def _listen(host: str, port: int) -> tuple[socket.socket, str]:
    """The bound socket and its URL; a port that cannot be had is a one-line error."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        sock = _bind(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return sock, f"http://{shown}:{bound_port}"


@click.command("server")
@_store_option("Where runs are recorded: a directory, sqlite:///, postgresql://, mysql://...")
@click.option(
    "--default-artifact-root",
    envvar="MLFLOW_DEFAULT_ARTIFACT_ROOT",
    default=None,
    help="Where new experiments keep artifacts (default: mlflow-artifacts:/, "
    "through this server, when it serves artifacts; else the store's own).",
)
@click.option(
    "--artifacts-destination",
    envvar="MLFLOW_ARTIFACTS_DESTINATION",
    default=DEFAULT_ARTIFACTS_DESTINATION,
    show_default=True,
    help="Where proxied artifacts are stored: a local path or s3://bucket/prefix.",
)
@click.option(
    "--serve-artifacts/--no-serve-artifacts",
    default=True,
    show_default=True,
    help="Proxy artifact uploads and downloads through this server.",
)
@_address_options("server")
@click.option(
    "-w",
    "--workers",
    envvar="MLFLOW_WORKERS",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Worker processes; they share the listening socket and the backend store.",
)
@click.option(
    "--max-request-size",
    default=DEFAULT_MAX_REQUEST_BYTES,
    show_default=True,
    type=click.IntRange(1024),
    help="The largest JSON request body accepted, in bytes.",
)
@click.option(
    "--request-timeout",
    default=DEFAULT_REQUEST_TIMEOUT,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a request may wait on the store.",
)
@click.option(
    "--shutdown-timeout",
    default=DEFAULT_SHUTDOWN_TIMEOUT,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds in-flight requests get to finish after SIGTERM or SIGINT.",
)
def server(
    backend_store_uri: str, default_artifact_root: str | None, artifacts_destination: str,
    serve_artifacts: bool, host: str, port: int, workers: int, max_request_size: int,
    request_timeout: float, shutdown_timeout: float,
) -> None:  # fmt: skip
    """Serve MLflow's tracking REST API (and its artifact proxy) over a tracker store.

    Point MLflow's client at it with MLFLOW_TRACKING_URI=http://HOST:PORT. SIGTERM or SIGINT
    stops accepting, lets in-flight requests finish, drains the writer and exits 0.
    """
    config = ServerConfig(
        backend_store_uri=backend_store_uri,
        default_artifact_root=default_artifact_root,
        artifacts_destination=artifacts_destination,
        serve_artifacts=serve_artifacts,
        max_request_bytes=max_request_size,
        request_timeout=request_timeout,
    )
    _check(config)
    sock, url = _listen(host, port)
    click.echo(
        f"tracker server listening on {url} "
        f"({workers} worker{'s' if workers > 1 else ''}, store {backend_store_uri})",
        err=True,
    )
    if workers == 1:
        code = serve(config, sock, shutdown_timeout)
    else:
        code = _supervise(config, sock, workers, shutdown_timeout)
    sys.exit(code)


@click.command("ui")
@_store_option("The store to show: a directory, sqlite:///, postgresql://, mysql://...")
@click.option(
    "--default-artifact-root",
    envvar="MLFLOW_DEFAULT_ARTIFACT_ROOT",
    default=None,
    help="Where experiments created in the UI keep artifacts (default: the store's own).",
)
@_address_options("UI")
def ui(backend_store_uri: str, default_artifact_root: str | None, host: str, port: int) -> None:
    """Browse a local store in the web UI, as `mlflow ui` does: experiments, runs, live
    charts, compare, artifacts and history, at the URL it prints (one process; artifacts are
    read where the runs wrote them, none are proxied)."""
    config = ServerConfig(
        backend_store_uri=backend_store_uri,
        default_artifact_root=default_artifact_root,
        serve_artifacts=False,
    )
    _check(config)
    sock, url = _listen(host, port)
    click.echo(
        f"tracker ui listening on {url} (store {backend_store_uri}); "
        "open it in a browser, Ctrl-C to stop",
        err=True,
    )
    sys.exit(serve(config, sock, DEFAULT_SHUTDOWN_TIMEOUT))


def _check(config: ServerConfig) -> None:
    """Refuse a configuration that cannot work before anything is bound or opened."""
    from tracker.artifacts import parse_artifact_uri
    from tracker.stores import store_from_uri

    if config.backend_store_uri.split(":", 1)[0].lower() in ("http", "https"):
        raise click.BadParameter(
            "the backend store must be a database or a directory, not another server",
            param_hint="--backend-store-uri",
        )
    try:
        store_from_uri(config.backend_store_uri)  # parses the URI; opens nothing
    except TrackerError as exc:
        raise click.BadParameter(str(exc), param_hint="--backend-store-uri") from None
    if config.serve_artifacts:
        try:
            parse_artifact_uri(config.artifacts_destination)
        except TrackerError as exc:
            raise click.BadParameter(str(exc), param_hint="--artifacts-destination") from None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Bound here, once: with --port 0 every worker then serves the same port, and the kernel
    # hands each connection to one of the processes accepting on it.
    return socket.create_server((host, port), family=family, backlog=_BACKLOG)


def serve(config: ServerConfig, sock: socket.socket, shutdown_timeout: float) -> int:
    """Run the app on `sock` in this process until SIGTERM or SIGINT; the exit code."""
    try:
        from tracker.server.app import create_app, serve
    except ImportError as exc:
        click.echo(
            f"Error: the server needs its extra ({exc}); install it with: "
            "pip install 'tracker[server]'",
            err=True,
        )
        return 1

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(create_app(config), sock, shutdown_timeout, stop)

    try:
        asyncio.run(main())
    except TrackerError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 1
    return 0


def _supervise(
    config: ServerConfig, sock: socket.socket, workers: int, shutdown_timeout: float
) -> int:
    """Start `workers` processes that inherit `sock`, forward SIGTERM/SIGINT to them, and
    wait. One that dies on its own stops the others (a process manager restarts the server)."""
    metrics_dir = tempfile.mkdtemp(prefix="tracker-metrics-")
    env = {
        **os.environ,
        CONFIG_ENV: json.dumps(dataclasses.asdict(config)),
        SOCKET_FD_ENV: str(sock.fileno()),
        MULTIPROC_ENV: metrics_dir,
        SHUTDOWN_TIMEOUT_ENV: str(shutdown_timeout),
    }
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def kill_all(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.returncode is None:
                log.error("worker %d did not stop in time; killing it", child.pid)
                child.kill()

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for child in children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        # The workers get their graceful shutdown; after that, and a margin, they are killed.
        signal.signal(signal.SIGALRM, kill_all)
        signal.setitimer(signal.ITIMER_REAL, shutdown_timeout + _KILL_MARGIN)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for _ in range(workers):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tracker.server.worker"],
                    env=env,
                    pass_fds=(sock.fileno(),),
                    # Own session: Ctrl-C reaches the parent only, which stops each worker once.
                    start_new_session=True,
                )
            )
        sock.close()
        code = 0

        def ended(child: subprocess.Popen[bytes]) -> None:
            nonlocal code
            _mark_dead(child.pid, metrics_dir)
            if not stopping:
                log.error(
                    "worker %d exited with %d; stopping the server", child.pid, child.returncode
                )
                code = 1
                stop(signal.SIGTERM, None)
            elif child.returncode != 0:
                code = 1

        remaining = {child.pid: child for child in children}
        while remaining:
            # Popen.send_signal polls first, and a poll reaps a worker that has exited: those
            # have their code already, and os.wait would never report them.
            for child in [c for c in remaining.values() if c.returncode is not None]:
                del remaining[child.pid]
                ended(child)
            if not remaining:
                break
            try:
                pid, status = os.wait()  # resumes by itself after a signal handler (PEP 475)
            except ChildProcessError:  # every worker left was reaped by such a poll
                for child in remaining.values():
                    child.poll()
                continue
            found = remaining.pop(pid, None)
            if found is not None:
                found.returncode = os.waitstatus_to_exitcode(status)
                ended(found)
        return code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for child in children:
            if child.returncode is None and child.poll() is None:
                child.kill()
                child.wait()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _mark_dead(pid: int, metrics_dir: str) -> None:
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]
