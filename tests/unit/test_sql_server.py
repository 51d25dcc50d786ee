"""SQL Server is not refused: every statement the stores and views use compiles for it (no live
SQL Server exists here; README says so)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tracker.projections import (
    default_projections,
    downsampling,
    experiments,
    metrics,
    queries,
    runs,
)
from tracker.search.sql import experiment_search, run_search
from tracker.stores import base, schema
from tracker.stores.sql import compiled, insert, insert_ignore, upsert
from tracker.stores.sqlalchemy import SqlAlchemyEventStore, async_url

# The IN-list reads by run id, with the columns queries.py reads from each table.
_BY_RUN = (
    (schema.run_params, ("param_key", "param_value")),
    (schema.run_tags, ("tag_key", "tag_value")),
    (schema.latest_metrics, ("metric_key", "metric_value", "is_nan", "ts", "step")),
    (schema.run_inputs, ("dataset_name", "dataset_digest", "data")),
)


def _search_runs(
    n_experiments: int, stages: tuple[str, ...], status: str | None = None, after: Any = None
) -> sa.Executable:
    """An unfiltered run search in its default order, as the queries build it."""
    search = run_search("mssql", (), (), stages=stages, status=status)
    return search.statement(n_experiments, after)


def _module_statements(*modules: object) -> list[sa.Executable]:
    return [v for m in modules for v in vars(m).values() if isinstance(v, sa.Executable)]


def _statements() -> list[sa.Executable]:
    out = _module_statements(base, queries, downsampling, runs, experiments, metrics)
    out += [_search_runs(3, ("active",), status="RUNNING", after=(0, "")), queries._chunk_blobs(4)]
    out += [
        experiment_search("mssql", (), (), ("active", "deleted"))[0],
        base._read_stream(True, True, ("M",)),
        queries._experiment_tags(1),
        queries._experiment_tags(5),
        insert(schema.metric_chunks),
    ]
    out += [queries._by_run(table, columns, n) for table, columns in _BY_RUN for n in (1, 3)]
    for p in default_projections():
        for t in p.tables:
            out += [upsert("mssql", t), insert_ignore("mssql", t)]
    return out


def test_the_projections_own_statements_are_among_those_checked() -> None:
    """The experiments and metrics projections' statements (renames, stage changes, tag
    deletes, the latest-metric load) and the IN-list reads are in what gets compiled."""
    checked = {id(s) for s in _statements()}
    own = _module_statements(experiments, metrics)
    assert len(own) >= 5
    assert all(id(s) in checked for s in own)
    tags = compiled(queries._experiment_tags(3), "mssql").sql
    assert "experiment_tags.experiment_id IN (:v0, :v1, :v2, :v3)" in tags  # padded to 2**k
    params = compiled(queries._by_run(schema.run_params, ("param_key",), 2), "mssql").sql
    assert "run_params.run_id IN (:v0, :v1)" in params


def test_every_statement_compiles_for_sql_server() -> None:
    """Selects, updates, MERGE upserts and paging compile for the mssql dialect, with its own
    paging (no LIMIT) and positional parameters."""
    statements = _statements()
    assert len(statements) > 30
    for statement in statements:
        sql = compiled(statement, "mssql").sql
        assert " LIMIT " not in sql.upper()
    merge = compiled(upsert("mssql", schema.run_tags), "mssql").sql
    assert merge.startswith("MERGE INTO run_tags") and "WHEN NOT MATCHED THEN INSERT" in merge
    assert "WHEN MATCHED THEN UPDATE SET tag_value = source.tag_value" in merge
    page = compiled(_search_runs(1, ("active",)), "mssql").sql
    assert "ORDER BY" in page and ("FETCH" in page or "TOP" in page or "ROW_NUMBER" in page)


def test_sql_server_tables_and_the_append_only_trigger_compile() -> None:
    """DDL for every table renders with Unicode and binary types SQL Server stores; the store
    takes mssql URIs (MLflow's pyodbc ones become aioodbc)."""
    assert async_url("mssql+pyodbc://u:p@host/db").startswith("mssql+aioodbc://")
    store = SqlAlchemyEventStore.__new__(SqlAlchemyEventStore)
    store.family = "mssql"
    for table in schema.metadata.sorted_tables:
        for ddl in store.ddl(table):
            assert "CREATE" in ddl
    events = store.ddl(schema.events)[0]
    assert "NVARCHAR(200)" in events and "VARBINARY(max)" in events and "BINARY(16)" in events
    assert "INSTEAD OF UPDATE, DELETE" in store._append_only_ddl()[0]
