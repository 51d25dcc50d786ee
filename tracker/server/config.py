"""The server's configuration, importable without aiohttp (the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_BACKEND_STORE_URI: Final = "./mlruns"
DEFAULT_ARTIFACTS_DESTINATION: Final = "./mlartifacts"
PROXY_ARTIFACT_ROOT: Final = "mlflow-artifacts:/"
# A log-batch at MLflow's limits is well under a megabyte, but one log-inputs may carry a
# dataset profile of up to 16 MiB (MLflow's limit), and JSON escaping can double that.
DEFAULT_MAX_REQUEST_BYTES: Final = 40 << 20
DEFAULT_REQUEST_TIMEOUT: Final = 60.0
DEFAULT_MAX_BATCH_COMMANDS: Final = 10_000
DEFAULT_STREAM_HEARTBEAT: Final = 15.0
DEFAULT_STREAM_POLL_INTERVAL: Final = 0.1
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What `tracker server` serves; the fields mean what MLflow's flags of the same names do.

    backend_store_uri: where runs are recorded (any tracker store URI; default ./mlruns).
    default_artifact_root: where new experiments keep artifacts; by default
    `mlflow-artifacts:/` when serving artifacts (clients upload through this server), else
    the store's own. artifacts_destination: where proxied artifacts are stored (a local path
    or s3://bucket/prefix). max_request_bytes: the largest JSON body accepted (a 413 beyond).
    request_timeout: how long one request may wait on the store before a 504, and the
    longest pause allowed between two chunks of an upload. metrics_interval: how often the
    writer's statistics are sampled into /metrics, in seconds. spool_dir: where uploads wait
    before they are stored (default: the system's temporary directory).
    max_batch_commands: the most commands one POST to the native API may carry (its body is
    bounded by max_request_bytes too). stream_heartbeat: seconds between the comments an
    open event stream sends while nothing commits (they keep proxies from closing it).
    stream_poll_interval: how often the head of the log is polled for open streams (one
    query per interval for all of them, none while no stream is open).
    """

    backend_store_uri: str = DEFAULT_BACKEND_STORE_URI
    default_artifact_root: str | None = None
    artifacts_destination: str = DEFAULT_ARTIFACTS_DESTINATION
    serve_artifacts: bool = True
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    metrics_interval: float = 1.0
    spool_dir: str | None = None
    max_batch_commands: int = DEFAULT_MAX_BATCH_COMMANDS
    stream_heartbeat: float = DEFAULT_STREAM_HEARTBEAT
    stream_poll_interval: float = DEFAULT_STREAM_POLL_INTERVAL

    @property
    def artifact_root(self) -> str | None:
        """The default artifact root handed to the Tracker."""
        if self.default_artifact_root:
            return self.default_artifact_root
        return PROXY_ARTIFACT_ROOT if self.serve_artifacts else None
