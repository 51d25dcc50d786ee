"""Schema migrations as data: versioned, ordered steps that `upgrade()` applies under a lock.

Only the log and its bookkeeping are migrated here. The views are not: each projection owns its
tables and a version (tracker/projections), and a projection whose version changed is dropped
and rebuilt from the log, which holds everything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tracker.stores import schema

if TYPE_CHECKING:
    from tracker.stores.base import Session, SqlEventStore


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    step: Callable[[SqlEventStore, Session], Awaitable[None]]

    async def apply(self, store: SqlEventStore, session: Session) -> None:
        await self.step(store, session)


async def _create_log(store: SqlEventStore, s: Session) -> None:
    await store.create_tables(s, schema.LOG_TABLES)
    for stmt in store._append_only_ddl():
        await s.execute_raw(stmt)


# Tables tracker 0.1 kept its views in; from v2 on, projections own theirs.
_V1_VIEWS: Final = (
    "experiments", "experiment_tags", "runs", "run_params", "run_tags", "latest_metrics",
    "metric_chunks", "run_inputs", "run_artifacts", "projection_state",
)  # fmt: skip


async def _projections_own_their_views(store: SqlEventStore, s: Session) -> None:
    for name in _V1_VIEWS:
        await s.execute_raw(f"DROP TABLE IF EXISTS {store._quote(name)}")
    await store.create_tables(s, schema.RUNNER_TABLES)


MIGRATIONS: Final = (
    Migration(1, "the event log, append-only, and the schema version table", _create_log),
    Migration(
        2,
        "views become projections that each own their tables and version; tracker 0.1's views "
        "are dropped (the projections rebuild them from the log); projection errors are kept",
        _projections_own_their_views,
    ),
)

SCHEMA_VERSION: Final = MIGRATIONS[-1].version
