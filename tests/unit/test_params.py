"""``:name`` parameters translated to the driver's placeholders (no database)."""

from __future__ import annotations

import pytest

from aegis_tortoise import ValidationError
from aegis_tortoise.session import compile_params, is_dml


def test_postgres_numbers_each_name_once() -> None:
    sql, values = compile_params(
        "SELECT * FROM t WHERE a = :a AND b = :b OR a = :a", {"a": 1, "b": 2}, "postgres")
    assert sql == "SELECT * FROM t WHERE a = $1 AND b = $2 OR a = $1"
    assert values == [1, 2]


def test_sqlite_repeats_values_positionally() -> None:
    sql, values = compile_params(
        "SELECT * FROM t WHERE a = :a AND b = :b OR a = :a", {"a": 1, "b": 2}, "sqlite")
    assert sql == "SELECT * FROM t WHERE a = ? AND b = ? OR a = ?"
    assert values == [1, 2, 1]


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
def test_casts_literals_comments_and_dollar_quotes_are_left_alone(dialect: str) -> None:
    sql = ("SELECT :x::int, ':not', \"col:umn\", $tag$ :no $tag$, $$ :nope $$ -- :c\n"
           "/* :block */ FROM t WHERE y = :y")
    compiled, values = compile_params(sql, {"x": "5", "y": 7}, dialect)
    mark = ("$1", "$2") if dialect == "postgres" else ("?", "?")
    assert compiled == (f"SELECT {mark[0]}::int, ':not', \"col:umn\", $tag$ :no $tag$, "
                        f"$$ :nope $$ -- :c\n/* :block */ FROM t WHERE y = {mark[1]}")
    assert values == ["5", 7]


def test_extra_params_are_ignored_and_missing_ones_named() -> None:
    assert compile_params("SELECT :a", {"a": 1, "unused": 2}, "postgres") == ("SELECT $1", [1])
    with pytest.raises(ValidationError, match=":b"):
        compile_params("SELECT :a, :b", {"a": 1}, "sqlite")


def test_no_params_and_positional_params_pass_through() -> None:
    assert compile_params("SELECT ':a'", None, "postgres") == ("SELECT ':a'", [])
    assert compile_params("SELECT $1", [3], "postgres") == ("SELECT $1", [3])
    assert compile_params("SELECT ?", (3,), "sqlite") == ("SELECT ?", [3])


def test_time_literals_are_not_parameters() -> None:
    sql = "SELECT '10:30:00'::time, now() AT TIME ZONE 'UTC'"
    assert compile_params(sql, {}, "postgres") == (sql, [])


@pytest.mark.parametrize(("sql", "dml"), [
    ("INSERT INTO t VALUES (1)", True),
    ("  update t set a = 1", True),
    ("DELETE FROM t", True),
    ("WITH x AS (SELECT 1) DELETE FROM t", True),
    ("SELECT 1", False),
])
def test_is_dml(sql: str, dml: bool) -> None:
    assert is_dml(sql) is dml
