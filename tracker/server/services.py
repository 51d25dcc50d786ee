"""What the server's handlers share: the tracker, the artifact proxy and the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiohttp import web

from tracker.server.config import ServerConfig

if TYPE_CHECKING:
    from tracker.client import Tracker
    from tracker.server.artifacts_proxy import ArtifactProxy


@dataclass(slots=True)
class Services:
    """What the handlers use: the tracker, the artifact proxy (None when artifacts are not
    served) and the configuration."""

    tracker: Tracker
    proxy: ArtifactProxy | None
    config: ServerConfig


SERVICES: Final = web.AppKey("services", Services)
RPC: Final = "tracker.rpc"
"""The request key under which a handler names its RPC, for error mapping and metrics."""
