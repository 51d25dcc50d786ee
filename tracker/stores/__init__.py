"""Event stores: the contract in `base`, one module per backend, chosen by tracking URI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, unquote, urlparse

from tracker.errors import InvalidInputError
from tracker.stores.base import Database, EventLog, SqlEventStore
from tracker.stores.uris import mask_password

__all__ = [
    "DEFAULT_DIR",
    "ENV_URI",
    "LOG_FILE",
    "MLFLOW_ENV_URI",
    "Database",
    "EventLog",
    "SqlEventStore",
    "is_remote_uri",
    "resolve_uri",
    "store_from_uri",
]

ENV_URI: Final = "TRACKER_TRACKING_URI"
MLFLOW_ENV_URI: Final = "MLFLOW_TRACKING_URI"
DEFAULT_DIR: Final = "mlruns"
LOG_FILE: Final = "tracker.db"
# Synchronous PostgreSQL drivers in MLflow URIs are served by the native asyncpg store.
_NATIVE_POSTGRES: Final = frozenset(
    {"postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg2", "postgresql+pg8000"}
)


_WHAT_TO_WRITE: Final = (
    "use a directory (./mlruns), file:/dir, sqlite:///path.db, postgresql://user@host/db "
    "or mysql://user@host/db"
)


def resolve_uri(uri: str | None) -> str:
    """The URI to use: the argument, else $TRACKER_TRACKING_URI, else $MLFLOW_TRACKING_URI
    (so a shell set up for MLflow works as it is), else ./mlruns (embedded). An empty value
    counts as unset."""
    if uri:
        return uri
    return os.environ.get(ENV_URI) or os.environ.get(MLFLOW_ENV_URI) or DEFAULT_DIR


def is_remote_uri(uri: str) -> bool:
    """Whether `uri` names a tracking server (http:// or https://), which a Tracker reaches
    over HTTP (tracker.remote) instead of opening a store."""
    return urlparse(uri).scheme.lower() in ("http", "https")


def store_from_uri(uri: str | None = None) -> SqlEventStore:
    """An unopened store for a tracking URI. Drivers are imported only when their scheme is used.

    - no URI, a plain path, or `file:/dir`: a directory holding the SQLite log (`tracker.db`)
      and, by default, local artifacts (the embedded default is `./mlruns/`);
    - `sqlite:///relative.db`, `sqlite:////absolute.db` (`?synchronous=normal` to trade
      power-loss durability for speed);
    - `postgresql://user:password@host:port/database` (also `postgres://`,
      `postgresql+asyncpg://` and MLflow's `postgresql+psycopg2://`): the native asyncpg
      store (`pip install 'tracker[postgres]'`); `?search_path=schema` picks a schema;
    - `mysql://`, `mariadb://`, `mysql+aiomysql://`, `mysql+asyncmy://` (and MLflow's
      `mysql+pymysql://`), `postgresql+psycopg://`, `sqlite+aiosqlite:///path.db`,
      `mssql+aioodbc://` (and MLflow's `mssql+pyodbc://`; no live SQL Server has been tested):
      through SQLAlchemy's asyncio engine (`pip install 'tracker[mysql]'`).

    `http://` and `https://` name a tracking server, which is no store: Tracker reaches one
    over HTTP (tracker.remote, see is_remote_uri), and this refuses it naming what to give.
    """
    uri = resolve_uri(uri)
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "" and ":" in uri.split("/", 1)[0]:
        # Something before the first slash with a colon is meant as a scheme, and is not one
        # (`:::///`, `1db:x`): taken as a path it would silently create a directory of that name.
        raise InvalidInputError(
            f"{mask_password(uri)!r} is neither a path nor a tracking URI: {_WHAT_TO_WRITE} "
            "(write ./name for a directory whose name has a colon)"
        )
    if scheme in ("http", "https"):
        # Tracker(url) reaches a server over HTTP (tracker.remote); this needs the store itself.
        raise InvalidInputError(
            f"{mask_password(uri)!r} is an MLflow tracking server: Tracker(url) logs to it over "
            "HTTP, but this needs the store itself (the server's --backend-store-uri): "
            f"{_WHAT_TO_WRITE} (in --backend-store-uri, ${ENV_URI} or ${MLFLOW_ENV_URI})"
        )
    if scheme == "databricks":
        raise InvalidInputError(
            f"{mask_password(uri)!r} is an MLflow tracking server, not a store tracker can open; "
            f"{_WHAT_TO_WRITE} (in --backend-store-uri, ${ENV_URI} or ${MLFLOW_ENV_URI})"
        )
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] in (":\\", ":/")):
        from tracker.stores.sqlite import SQLiteEventStore

        directory = Path(unquote(parsed.path) if scheme == "file" else uri)
        return SQLiteEventStore(directory / LOG_FILE, artifact_root=str(directory.resolve()))
    if scheme == "sqlite":
        from tracker.stores.sqlite import SQLiteEventStore

        path = unquote(parsed.path)
        if not path or path == "/":
            raise InvalidInputError(
                f"{uri!r} names no file: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        if path.startswith("/") and not path.startswith("//"):
            path = path[1:]  # sqlite:///x.db is relative, as in SQLAlchemy
        elif path.startswith("//"):
            path = path[1:]
        if path == ":memory:":
            raise InvalidInputError(
                "an in-memory SQLite database would lose every run on exit; give a file path"
            )
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        return SQLiteEventStore(Path(path), synchronous=options.get("synchronous", "full").lower())
    if scheme in _NATIVE_POSTGRES:
        from tracker.stores.postgres import PostgresEventStore

        return PostgresEventStore("postgresql" + uri[len(scheme) :])
    if scheme.split("+")[0] in ("postgresql", "mysql", "mariadb", "sqlite", "mssql"):
        from tracker.stores.sqlalchemy import SqlAlchemyEventStore

        return SqlAlchemyEventStore(uri)
    raise InvalidInputError(
        f"unsupported tracking URI {mask_password(uri)!r}: {_WHAT_TO_WRITE} "
        "(write ./name for a directory whose name has a colon)"
    )
