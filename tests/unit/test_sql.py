"""Statement builders of tracker.stores.sql that the search grammar needs: NULL ordering."""

from __future__ import annotations

import sqlite3
from typing import Final

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.mysql.mariadb import MariaDBDialect

from tracker.stores.sql import DIALECTS, compiled, nulls_last

_T: Final = sa.Table(
    "probe", sa.MetaData(), sa.Column("k", sa.Integer, primary_key=True), sa.Column("v", sa.Float)
)
_BY_V_DESC: Final = sa.select(_T.c.k).order_by(nulls_last(_T.c.v, descending=True), _T.c.k)
_BY_V_ASC: Final = sa.select(_T.c.k).order_by(nulls_last(_T.c.v), _T.c.k)

EXPECTED: Final = {
    "sqlite": "ORDER BY probe.v DESC NULLS LAST, probe.k",
    "postgresql": "ORDER BY probe.v DESC NULLS LAST, probe.k",
    "mysql": "ORDER BY probe.v IS NULL, probe.v DESC, probe.k",
    "mssql": "ORDER BY CASE WHEN probe.v IS NULL THEN 1 ELSE 0 END, probe.v DESC, probe.k",
}


@pytest.mark.parametrize("family", sorted(DIALECTS))
def test_nulls_last_compiles_for_each_backend(family: str) -> None:
    """NULLS LAST where the backend has it (PostgreSQL, SQLite); an IS NULL key first where
    it does not (MySQL, MariaDB, SQL Server); the direction is kept either way."""
    assert EXPECTED.keys() == DIALECTS.keys()
    assert EXPECTED[family] in compiled(_BY_V_DESC, family).sql
    ascending = compiled(_BY_V_ASC, family).sql
    assert EXPECTED[family].replace("DESC", "ASC") in ascending


def test_nulls_last_compiles_for_the_mariadb_dialect() -> None:
    """SQLAlchemy names MariaDB's dialect `mariadb`: it gets the MySQL form too."""
    sql = str(_BY_V_DESC.compile(dialect=MariaDBDialect()))
    assert EXPECTED["mysql"] in sql


def test_nulls_last_statements_cache_by_direction() -> None:
    """Two directions are two cache keys in SQLAlchemy's statement cache; equal ones share."""
    again = sa.select(_T.c.k).order_by(nulls_last(_T.c.v, descending=True), _T.c.k)
    assert _BY_V_DESC._generate_cache_key() == again._generate_cache_key()
    assert _BY_V_DESC._generate_cache_key() != _BY_V_ASC._generate_cache_key()


@pytest.mark.parametrize("family", sorted(DIALECTS))
def test_each_form_puts_nulls_last_when_run(family: str) -> None:
    """Each form's SQL, run by SQLite (which takes all of them), orders NULLs after every
    value in both directions; tests/contract/test_question_marks.py runs it on the live
    backends."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE probe (k INTEGER PRIMARY KEY, v REAL)")
    db.executemany("INSERT INTO probe VALUES (?, ?)", [(1, 5.0), (2, None), (3, 7.0), (4, None)])
    for statement, expected in ((_BY_V_DESC, [3, 1, 2, 4]), (_BY_V_ASC, [1, 3, 2, 4])):
        sql = compiled(statement, family).sql
        assert [r[0] for r in db.execute(sql)] == expected, sql
