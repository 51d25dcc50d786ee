"""The real backends the contract suite runs on; each yields a factory of stores sharing one
fresh database (so tests can open several connections, as several processes would).

Factories are picklable (functools.partial of a store class), so tests can hand them to
subprocesses. PostgreSQL and MariaDB come from $TRACKER_TEST_POSTGRES_DSN and
$TRACKER_TEST_MYSQL_DSN; a server that does not answer skips its backend, or fails the run
when $CI is set."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

from tracker.stores.base import SqlEventStore
from tracker.stores.sqlite import SQLiteEventStore

Factory = Callable[[], SqlEventStore]

POSTGRES_DSN = os.environ.get(
    "TRACKER_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_DSN = os.environ.get("TRACKER_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
_CONNECT_TIMEOUT = 5.0
_absent: dict[str, str] = {}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def server_absent(name: str, reason: str) -> NoReturn:
    """Skip on a laptop; fail in CI, where every backend must run."""
    _absent[name] = reason
    message = f"{name} does not answer: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI is set, so every backend must run)", pytrace=False)
    pytest.skip(message)


def with_database(dsn: str, scheme: str, database: str | None = None) -> str:
    """`dsn` with another scheme (driver) and, if given, another database."""
    parts = urlsplit(dsn)
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(scheme=scheme, path=path))


@asynccontextmanager
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Factory]:
    path = tmp_path / "log" / "tracker.db"
    yield partial(SQLiteEventStore, path)


async def _pg_admin() -> Any:
    import asyncpg

    if "postgres" in _absent:
        server_absent("postgres", _absent["postgres"])
    try:
        return await asyncpg.connect(POSTGRES_DSN, timeout=_CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        server_absent("postgres", f"{type(exc).__name__}: {exc}")


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A fresh schema in the test database, dropped afterwards."""
    name = f"t_{secrets.token_hex(6)}"
    admin = await _pg_admin()
    try:
        await admin.execute(f"CREATE SCHEMA {name}")
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await _pg_admin()
        try:
            await admin.execute(f"DROP SCHEMA {name} CASCADE")
        finally:
            await admin.close()


@asynccontextmanager
async def postgres_asyncpg_backend(tmp_path: Path) -> AsyncIterator[Factory]:
    from tracker.stores.postgres import PostgresEventStore

    async with postgres_schema() as schema:
        yield partial(PostgresEventStore, POSTGRES_DSN, schema=schema, artifact_root=str(tmp_path))


@asynccontextmanager
async def postgres_sqlalchemy_backend(tmp_path: Path) -> AsyncIterator[Factory]:
    from tracker.stores.sqlalchemy import SqlAlchemyEventStore

    url = with_database(POSTGRES_DSN, "postgresql+asyncpg")
    async with postgres_schema() as schema:
        yield partial(SqlAlchemyEventStore, url, schema=schema, artifact_root=str(tmp_path))


async def _mysql_admin() -> Any:
    import aiomysql

    if "mariadb" in _absent:
        server_absent("mariadb", _absent["mariadb"])
    p = urlsplit(MYSQL_DSN)
    try:
        return await aiomysql.connect(
            host=p.hostname or "127.0.0.1", port=p.port or 3306, user=p.username or "root",
            password=p.password or "", connect_timeout=_CONNECT_TIMEOUT, autocommit=True,
        )  # fmt: skip
    except (OSError, TimeoutError, aiomysql.Error) as exc:
        server_absent("mariadb", f"{type(exc).__name__}: {exc}")


@asynccontextmanager
async def mysql_database() -> AsyncIterator[str]:
    """A fresh database on the MySQL/MariaDB server, dropped afterwards."""
    name = f"t_{secrets.token_hex(6)}"
    admin = await _mysql_admin()
    try:
        async with admin.cursor() as cur:
            await cur.execute(f"CREATE DATABASE {name}")
    finally:
        admin.close()
    try:
        yield name
    finally:
        admin = await _mysql_admin()
        try:
            async with admin.cursor() as cur:
                await cur.execute(f"DROP DATABASE {name}")
        finally:
            admin.close()


@asynccontextmanager
async def mariadb_sqlalchemy_backend(tmp_path: Path) -> AsyncIterator[Factory]:
    from tracker.stores.sqlalchemy import SqlAlchemyEventStore

    async with mysql_database() as database:
        url = with_database(MYSQL_DSN, "mysql+aiomysql", database)
        yield partial(SqlAlchemyEventStore, url, artifact_root=str(tmp_path))


@asynccontextmanager
async def sqlite_sqlalchemy_backend(tmp_path: Path) -> AsyncIterator[Factory]:
    from tracker.stores.sqlalchemy import SqlAlchemyEventStore

    path = tmp_path / "log" / "tracker.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    yield partial(SqlAlchemyEventStore, f"sqlite+aiosqlite:///{path}", artifact_root=str(tmp_path))


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Factory]]] = {
    "sqlite": sqlite_backend,
    "sqlite-sqlalchemy": sqlite_sqlalchemy_backend,
    "postgres-asyncpg": postgres_asyncpg_backend,
    "postgres-sqlalchemy": postgres_sqlalchemy_backend,
    "mariadb-sqlalchemy": mariadb_sqlalchemy_backend,
}
