"""What the server's handlers share: the tracker, the artifact proxy and the configuration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiohttp import web

from tracker.server.config import ServerConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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
_RPC_NAME: Final = "tracker_rpc"


def name_rpc(handler: Handler, name: str) -> Handler:
    """Mark `handler` as serving MLflow's RPC `name` (errors map per RPC)."""
    setattr(handler, _RPC_NAME, name)
    return handler


def rpc_of(request: web.Request) -> str | None:
    """The MLflow RPC the request's route serves, if it is one."""
    name = getattr(request.match_info.handler, _RPC_NAME, None)
    return name if isinstance(name, str) else None
