"""The tracking server: MLflow's REST API over a tracker store, on aiohttp (`tracker[server]`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracker.server.config import ServerConfig

if TYPE_CHECKING:
    from tracker.server.app import create_app

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str) -> Any:
    # aiohttp is imported when the app is asked for, so `tracker --help` works without it.
    if name == "create_app":
        from tracker.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
