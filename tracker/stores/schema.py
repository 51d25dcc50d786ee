"""The database schema as SQLAlchemy Core tables: the event log, its bookkeeping, and the views."""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import mssql, mysql, postgresql

# Column lengths are the limits validation enforces (tracker/validation.py reads them from here),
# so a value that passed validation fits every backend's column.
ID_LENGTH: Final = 64
KEY_LENGTH: Final = 250
NAME_LENGTH: Final = 500

metadata: Final = sa.MetaData()

# Types, with the variants each backend needs: MySQL's TEXT and BLOB stop at 64 KiB, SQL Server's
# plain VARCHAR is not Unicode, and SQLite makes a primary key a rowid alias only when its type is
# exactly INTEGER.
TEXT: Final = sa.UnicodeText().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
BLOB: Final = (
    sa.LargeBinary()
    .with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
    .with_variant(mssql.VARBINARY("max"), "mssql")  # type: ignore[no-untyped-call]
)
UUID_BYTES: Final = (
    sa.LargeBinary(16)
    .with_variant(mysql.BINARY(16), "mysql", "mariadb")
    .with_variant(mssql.BINARY(16), "mssql")
    .with_variant(postgresql.BYTEA(), "postgresql")
)
BIGINT: Final = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DOUBLE: Final[sa.types.TypeEngine[float]] = sa.Double().with_variant(mssql.FLOAT(53), "mssql")


def _id() -> sa.Unicode:
    return sa.Unicode(ID_LENGTH)


def _key() -> sa.Unicode:
    return sa.Unicode(KEY_LENGTH)


def _name() -> sa.Unicode:
    return sa.Unicode(NAME_LENGTH)


def _col(name: str, type_: Any, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, type_, nullable=nullable)


# Search indexes (tracker/search/sql.py) exist where the database keeps the statistics that
# let its planner weigh them against the experiment index: PostgreSQL and MySQL/MariaDB do by
# themselves. SQLite has none until ANALYZE runs, and without them guesses that a key-and-
# range seek is always the narrowest start: on a store of 110,000 runs in 11 experiments, the
# benchmark's search of one experiment went from 30 ms to 350 ms with these indexes and no
# statistics (benchmarks/RESULTS.md, issue 12). SQL Server indexes no NVARCHAR(max) value at all.
_SEARCH_DIALECTS: Final = ("postgresql", "mysql")  # MariaDB compiles as mysql


INDEX_DIALECTS: Final[dict[str, tuple[str, ...]]] = {}
"""Indexes created on some dialects only, by name: the stores' `ddl()` leaves them out elsewhere."""


def _search_index(name: str, *columns: str, **kw: Any) -> sa.Index:
    INDEX_DIALECTS[name] = _SEARCH_DIALECTS
    return sa.Index(name, *columns, **kw)


def _value_index(name: str, column: str) -> sa.Index:
    """An index for `column = value` on a text value of up to 8000 characters: PostgreSQL's a
    hash index, since a btree refuses entries over ~2700 bytes (the insert would fail);
    MySQL's on the first 255 characters (it indexes no whole TEXT)."""
    return _search_index(name, column, postgresql_using="hash", mysql_length={column: 255})


# -- the log ---------------------------------------------------------------------------------

events: Final = sa.Table(
    "events",
    metadata,
    sa.Column("position", BIGINT, primary_key=True, autoincrement=False),
    _col("event_id", UUID_BYTES),
    # Stream ids are short ("run-<id>", "experiment-<id>"); SQL Server's index keys stop at 900 bytes.
    _col("stream_id", _name().with_variant(mssql.NVARCHAR(200), "mssql")),
    _col("seq", sa.BigInteger()),
    _col("event_type", _key()),
    _col("schema_version", sa.BigInteger()),
    _col("recorded_at", sa.BigInteger()),
    _col("payload", BLOB),
    sa.UniqueConstraint("event_id", name="uq_events_0"),
    sa.UniqueConstraint("stream_id", "seq", name="uq_events_1"),
)

schema_versions: Final = sa.Table(
    "tracker_schema",
    metadata,
    sa.Column("version", sa.BigInteger(), primary_key=True, autoincrement=False),
    _col("applied_at", sa.BigInteger()),
)

LOG_TABLES: Final = (schema_versions, events)

# -- projection bookkeeping (owned by the runner, not by any one projection) -----------------

projection_state: Final = sa.Table(
    "projection_state",
    metadata,
    sa.Column("name", _id(), primary_key=True),
    _col("position", sa.BigInteger()),
    _col("version", sa.BigInteger(), nullable=True),
)

projection_errors: Final = sa.Table(
    "projection_errors",
    metadata,
    sa.Column("projection", _id(), primary_key=True),
    sa.Column("position", sa.BigInteger(), primary_key=True, autoincrement=False),
    _col("event_type", _key()),
    _col("error", TEXT),
    _col("recorded_at", sa.BigInteger()),
)

RUNNER_TABLES: Final = (projection_state, projection_errors)

# -- views: each projection owns its tables, drops and recreates them on rebuild --------------

experiments: Final = sa.Table(
    "experiments",
    metadata,
    sa.Column("experiment_id", _id(), primary_key=True),
    _col("name", _name()),
    _col("artifact_location", TEXT),
    _col("lifecycle_stage", _id()),
    _col("creation_time", sa.BigInteger()),
    _col("last_update_time", sa.BigInteger()),
    sa.Index("ix_experiments_0", "name"),
)

experiment_tags: Final = sa.Table(
    "experiment_tags",
    metadata,
    sa.Column("experiment_id", _id(), primary_key=True),
    sa.Column("tag_key", _key(), primary_key=True),
    _col("tag_value", TEXT),
)

runs: Final = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", _id(), primary_key=True),
    _col("experiment_id", _id()),
    _col("run_name", _key()),
    _col("user_id", _key()),
    _col("status", _id()),
    _col("start_time", sa.BigInteger()),
    _col("end_time", sa.BigInteger(), nullable=True),
    _col("deleted_time", sa.BigInteger(), nullable=True),
    _col("lifecycle_stage", _id()),
    _col("artifact_uri", TEXT),
    _col("parent_run_id", _id(), nullable=True),
    sa.Index("ix_runs_0", "experiment_id", "start_time"),
)

run_params: Final = sa.Table(
    "run_params",
    metadata,
    sa.Column("run_id", _id(), primary_key=True),
    sa.Column("param_key", _key(), primary_key=True),
    _col("param_value", TEXT),
    # The primary key serves a run's params; searches filter on a value first (a
    # `params.k = 'v'` is usually the most selective clause), then check the key.
    _value_index("ix_run_params_0", "param_value"),
)

run_tags: Final = sa.Table(
    "run_tags",
    metadata,
    sa.Column("run_id", _id(), primary_key=True),
    sa.Column("tag_key", _key(), primary_key=True),
    _col("tag_value", TEXT),
    _value_index("ix_run_tags_0", "tag_value"),
)

run_inputs: Final = sa.Table(
    "run_inputs",
    metadata,
    _col("run_id", _id()),
    _col("dataset_name", _name()),
    _col("dataset_digest", _id()),
    _col("data", TEXT),
    # Nonclustered on SQL Server, whose clustered keys stop at 900 bytes.
    sa.PrimaryKeyConstraint("run_id", "dataset_name", "dataset_digest", mssql_clustered=False),
)

run_artifacts: Final = sa.Table(
    "run_artifacts",
    metadata,
    _col("run_id", _id()),
    _col("path", _name()),
    _col("size", sa.BigInteger()),
    _col("sha256", _id()),
    _col("content_type", _key()),
    _col("position", sa.BigInteger()),
    sa.PrimaryKeyConstraint("run_id", "path", mssql_clustered=False),
)

latest_metrics: Final = sa.Table(
    "latest_metrics",
    metadata,
    sa.Column("run_id", _id(), primary_key=True),
    sa.Column("metric_key", _key(), primary_key=True),
    _col("metric_value", DOUBLE, nullable=True),
    _col("is_nan", sa.SmallInteger()),
    _col("ts", sa.BigInteger()),
    _col("step", sa.BigInteger()),
    # A search's `metrics.k > x` seeks here (the primary key leads with run_id, so without
    # this a planner scans every run's row for the key).
    _search_index("ix_latest_metrics_0", "metric_key", "metric_value"),
)

metric_chunks: Final = sa.Table(
    "metric_chunks",
    metadata,
    sa.Column("run_id", _id(), primary_key=True),
    sa.Column("metric_key", _key(), primary_key=True),
    sa.Column("position", sa.BigInteger(), primary_key=True, autoincrement=False),
    # Where the chunk's packed points lie in the payload of the log event at `position`: the
    # views index the log's bytes instead of keeping a second copy of every point.
    _col("blob_offset", sa.BigInteger()),
    _col("blob_size", sa.BigInteger()),
    _col("n", sa.BigInteger()),
    _col("min_step", sa.BigInteger()),
    _col("max_step", sa.BigInteger()),
    # Summaries for downsampling: a chunk lying inside one bucket needs no unpacking. Values
    # exclude NaN (counted apart); NULL where the chunk has no such point.
    _col("nan_count", sa.BigInteger()),
    _col("min_value", DOUBLE, nullable=True),
    _col("min_value_step", sa.BigInteger(), nullable=True),
    _col("min_value_ts", sa.BigInteger(), nullable=True),
    _col("max_value", DOUBLE, nullable=True),
    _col("max_value_step", sa.BigInteger(), nullable=True),
    _col("max_value_ts", sa.BigInteger(), nullable=True),
    _col("first_step", sa.BigInteger()),
    _col("first_ts", sa.BigInteger()),
    _col("first_value", DOUBLE, nullable=True),
    _col("last_step", sa.BigInteger()),
    _col("last_ts", sa.BigInteger()),
    _col("last_value", DOUBLE, nullable=True),
    sa.Index("ix_metric_chunks_0", "run_id", "metric_key", "min_step"),
)

BLOB_COLUMNS: Final = tuple(
    (t.name, c.name) for t in metadata.sorted_tables for c in t.columns if c.type is BLOB
)
"""(table, column) of every blob column: PostgreSQL stores them uncompressed, out of line."""
