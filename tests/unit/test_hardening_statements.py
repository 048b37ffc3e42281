"""Issue #18 item 19: PostgreSQL nests block comments; sqlite does not."""

from __future__ import annotations

from aegis_tortoise._statements import is_plain_read, is_stateless
from aegis_tortoise.session import compile_params


def test_a_parameter_inside_a_nested_comment_is_no_parameter_on_postgres() -> None:
    sql, params = compile_params("SELECT /* a /* b */ :a */ :b, '/*', :c", {"b": 1, "c": 2},
                                 "postgres")
    assert sql == "SELECT /* a /* b */ :a */ $1, '/*', $2"
    assert params == [1, 2]
    sql, params = compile_params("SELECT /* /* /* */ */ :x */ :y", {"y": 3}, "postgres")
    assert (sql, params) == ("SELECT /* /* /* */ */ :x */ $1", [3])


def test_sqlite_ends_a_comment_at_the_first_close() -> None:
    sql, params = compile_params("SELECT /* a /* b */ :a", {"a": 1}, "sqlite")
    assert (sql, params) == ("SELECT /* a /* b */ ?", [1])


def test_a_nested_comment_cannot_hide_a_call_from_the_plain_read_check() -> None:
    """Read without nesting, the comment ends early and the quote after it opens a "string"
    that swallows the setval() call."""
    hidden = "SELECT /* a /* b */ ' */ setval('s', 1) /* ' */ 1"
    assert not is_plain_read(hidden)
    assert not is_stateless(hidden)
    assert is_plain_read("SELECT 1 /* a plain comment */")
