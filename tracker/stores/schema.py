"""The database schema as data: the event log and the views, with per-dialect DDL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    """One of: id, key, name, text, int, float, blob, uuid, pos."""
    nullable: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _c(name: str, type_: str, nullable: bool = False) -> Column:
    return Column(name, type_, nullable)


EVENTS: Final = Table(
    "events",
    (
        _c("position", "pos"),
        _c("event_id", "uuid"),
        _c("stream_id", "name"),
        _c("seq", "int"),
        _c("event_type", "key"),
        _c("schema_version", "int"),
        _c("recorded_at", "int"),
        _c("payload", "blob"),
    ),
    primary_key=("position",),
    unique=(("event_id",), ("stream_id", "seq")),
)

# Views: written only by the projector, dropped and rebuilt from the log by `tracker rebuild`.
VIEWS: Final = (
    Table(
        "experiments",
        (
            _c("experiment_id", "id"),
            _c("name", "name"),
            _c("artifact_location", "text"),
            _c("lifecycle_stage", "id"),
            _c("creation_time", "int"),
            _c("last_update_time", "int"),
        ),
        primary_key=("experiment_id",),
        indexes=(("name",),),
    ),
    Table(
        "experiment_tags",
        (_c("experiment_id", "id"), _c("tag_key", "key"), _c("tag_value", "text")),
        primary_key=("experiment_id", "tag_key"),
    ),
    Table(
        "runs",
        (
            _c("run_id", "id"),
            _c("experiment_id", "id"),
            _c("run_name", "key"),
            _c("user_id", "key"),
            _c("status", "id"),
            _c("start_time", "int"),
            _c("end_time", "int", nullable=True),
            _c("deleted_time", "int", nullable=True),
            _c("lifecycle_stage", "id"),
            _c("artifact_uri", "text"),
            _c("parent_run_id", "id", nullable=True),
        ),
        primary_key=("run_id",),
        indexes=(("experiment_id", "start_time"),),
    ),
    Table(
        "run_params",
        (_c("run_id", "id"), _c("param_key", "key"), _c("param_value", "text")),
        primary_key=("run_id", "param_key"),
    ),
    Table(
        "run_tags",
        (_c("run_id", "id"), _c("tag_key", "key"), _c("tag_value", "text")),
        primary_key=("run_id", "tag_key"),
    ),
    Table(
        "latest_metrics",
        (
            _c("run_id", "id"),
            _c("metric_key", "key"),
            _c("metric_value", "float", nullable=True),
            _c("is_nan", "int"),
            _c("ts", "int"),
            _c("step", "int"),
        ),
        primary_key=("run_id", "metric_key"),
    ),
    Table(
        "metric_chunks",
        (
            _c("run_id", "id"),
            _c("metric_key", "key"),
            _c("position", "int"),
            _c("min_step", "int"),
            _c("max_step", "int"),
            _c("n", "int"),
            _c("data", "blob"),
        ),
        primary_key=("run_id", "metric_key", "position"),
    ),
    Table(
        "run_inputs",
        (
            _c("run_id", "id"),
            _c("dataset_name", "key"),
            _c("dataset_digest", "id"),
            _c("data", "text"),
        ),
        primary_key=("run_id", "dataset_name", "dataset_digest"),
    ),
    Table(
        "run_artifacts",
        (
            _c("run_id", "id"),
            _c("path", "name"),
            _c("size", "int"),
            _c("sha256", "id"),
            _c("content_type", "key"),
            _c("position", "int"),
        ),
        primary_key=("run_id", "path"),
    ),
    Table(
        "projection_state",
        (_c("name", "id"), _c("position", "int")),
        primary_key=("name",),
    ),
)

META: Final = Table(
    "tracker_schema",
    (_c("version", "int"), _c("applied_at", "int")),
    primary_key=("version",),
)

VIEW_NAMES: Final = tuple(t.name for t in VIEWS)


@dataclass(frozen=True, slots=True)
class Types:
    id: str
    key: str
    name: str
    text: str
    int: str
    float: str
    blob: str
    uuid: str
    pos: str


SQLITE_TYPES: Final = Types(
    id="TEXT", key="TEXT", name="TEXT", text="TEXT", int="INTEGER", float="REAL",
    blob="BLOB", uuid="BLOB", pos="INTEGER",
)  # fmt: skip
POSTGRES_TYPES: Final = Types(
    id="VARCHAR(64)", key="VARCHAR(250)", name="VARCHAR(500)", text="TEXT", int="BIGINT",
    float="DOUBLE PRECISION", blob="BYTEA", uuid="BYTEA", pos="BIGINT",
)  # fmt: skip
MYSQL_TYPES: Final = Types(
    id="VARCHAR(64)", key="VARCHAR(250)", name="VARCHAR(500)", text="LONGTEXT", int="BIGINT",
    float="DOUBLE", blob="LONGBLOB", uuid="BINARY(16)", pos="BIGINT",
)  # fmt: skip
MSSQL_TYPES: Final = Types(
    id="NVARCHAR(64)", key="NVARCHAR(250)", name="NVARCHAR(450)", text="NVARCHAR(MAX)",
    int="BIGINT", float="FLOAT", blob="VARBINARY(MAX)", uuid="BINARY(16)", pos="BIGINT",
)  # fmt: skip


def create_table_sql(table: Table, types: Types, if_not_exists: bool = True) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements for one table."""
    cols = []
    for c in table.columns:
        null = "" if c.nullable else " NOT NULL"
        cols.append(f"{c.name} {getattr(types, c.type)}{null}")
    cols.append(f"PRIMARY KEY ({', '.join(table.primary_key)})")
    for i, u in enumerate(table.unique):
        cols.append(f"CONSTRAINT uq_{table.name}_{i} UNIQUE ({', '.join(u)})")
    guard = "IF NOT EXISTS " if if_not_exists else ""
    out = [f"CREATE TABLE {guard}{table.name} ({', '.join(cols)})"]
    for i, idx in enumerate(table.indexes):
        out.append(f"CREATE INDEX {guard}ix_{table.name}_{i} ON {table.name} ({', '.join(idx)})")
    return out
