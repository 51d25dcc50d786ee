"""SQL Server is not refused: every statement the stores and views use compiles for it (no live
SQL Server exists here; README says so)."""

from __future__ import annotations

import sqlalchemy as sa

from tracker.projections import default_projections, queries, runs
from tracker.stores import base, schema
from tracker.stores.sql import compiled, insert_ignore, upsert
from tracker.stores.sqlalchemy import SqlAlchemyEventStore, async_url


def _statements() -> list[sa.Executable]:
    out: list[sa.Executable] = []
    for module in (base, queries, runs):
        for value in vars(module).values():
            if isinstance(value, sa.Executable):
                out.append(value)
    out += [queries._search_runs(3, ("active",), True, True), queries._chunk_blobs(4)]
    out += [
        queries._search_experiments(("active", "deleted")),
        base._read_stream(True, True, ("M",)),
    ]
    for p in default_projections():
        for t in p.tables:
            out += [upsert("mssql", t), insert_ignore("mssql", t)]
    return out


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
    page = compiled(queries._search_runs(1, ("active",), False, False), "mssql").sql
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
