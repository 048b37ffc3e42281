"""What a statement sent by Tortoise may do: read only, or leave state on the connection.

Two per-session savings rest on this (see docs/performance.md):

- a plain read before the session's first write runs without BEGIN (READ COMMITTED gives
  each statement its own snapshot inside a transaction too, so the result is the same), and
  a session that only reads sends no BEGIN/COMMIT at all;
- a connection is handed back to the pool without asyncpg's reset query (``RESET ALL``,
  ``UNLISTEN *``, advisory unlocks...) unless something ran that can leave such state.

The classification is conservative: anything it does not recognise as the ORM's own kind of
statement begins the transaction first and marks the connection for a full reset.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from functools import lru_cache

__all__ = ["MAX_CACHED_STATEMENT", "block_comment_end", "is_plain_read", "is_stateless",
           "plain_read"]

#: Set while Tortoise runs a statement that :func:`is_plain_read` accepted.
plain_read: ContextVar[bool] = ContextVar("aegis_plain_read", default=False)

# String literals and comments only: a double-quoted name may be a function ("f"(1)).
_STRIP = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", re.DOTALL)
_CALL = re.compile(r'(?:"((?:[^"]|"")+)"|\b([A-Za-z_][A-Za-z0-9_]*))\s*\(')
_INTO_TABLE = re.compile(r'\bINTO\s+(?:"(?:[^"]|"")+"\s*\.\s*)?"(?:[^"]|"")+"', re.I)
# Dollar-quoted and E'' strings are not tokenised here: such a statement is "unknown".
_UNTOKENISED = re.compile(r"\$[A-Za-z_]*\$|\b[Ee]'")
_LOCKING = re.compile(r"\bFOR\s+(?:UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\b", re.I)
_INTO = re.compile(r"\bINTO\b", re.I)  # SELECT ... INTO creates a table
_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z]+)")
# A block comment opened inside another: PostgreSQL nests them, sqlite does not, and _STRIP
# (which does not nest) could then take code for a comment or a string. Such a statement is
# "unknown". (A "/*" in a string literal matches too: that only costs the saving.)
_NESTED_COMMENT = re.compile(r"/\*(?:(?!\*/).)*?/\*", re.DOTALL)
# Words that may precede "(" in the ORM's SQL without being a function with side effects:
# SQL syntax, and the aggregate/scalar functions Tortoise 1.1.9 emits.
_HARMLESS = frozenset({
    "select", "from", "where", "in", "exists", "any", "all", "values", "as", "on", "and",
    "or", "not", "join", "using", "over", "filter", "within", "partition", "by", "when",
    "then", "else", "case", "is", "distinct", "union", "except", "intersect", "returning",
    "set", "into", "conflict", "with", "lateral", "row", "array", "unnest", "ordinality",
    "count", "sum", "avg", "min", "max", "coalesce", "nullif", "cast", "upper", "lower",
    "trim", "length", "char_length", "concat", "substring", "substr", "replace", "abs",
    "round", "floor", "ceil", "greatest", "least", "extract", "date_trunc", "to_char",
    "json_extract", "jsonb_extract_path", "array_agg", "string_agg", "group_concat",
    "strftime", "date", "datetime", "time", "julianday", "ifnull", "instr", "like",
    "glob", "regexp", "random",
    # type modifiers in casts ($1::VARCHAR(255)[], NUMERIC(10,2))
    "varchar", "char", "character", "varying", "numeric", "decimal", "timestamp",
    "timestamptz", "interval", "bit", "varbit", "float", "precision",
})
_DML = frozenset({"select", "insert", "update", "delete", "with"})


def block_comment_end(sql: str, start: int) -> int:
    """The index just after the block comment that opens at ``sql[start]``, counting nested
    comments as PostgreSQL does (``/* a /* b */ c */`` is one comment); ``len(sql)`` if it
    never closes."""
    depth, i, n = 0, start, len(sql)
    while i < n:
        pair = sql[i:i + 2]
        if pair == "/*":
            depth += 1
            i += 2
        elif pair == "*/":
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def _calls_only_harmless_functions(sql: str) -> bool:
    if _UNTOKENISED.search(sql) or _NESTED_COMMENT.search(sql):
        return False
    code = _INTO_TABLE.sub(" INTO ", _STRIP.sub(" ", sql))  # INSERT INTO "t" ("c")
    return all((quoted or bare).lower() in _HARMLESS for quoted, bare in _CALL.findall(code))


#: Statements up to this many characters keep their classification in a cache. A longer
#: one (a long IN list, a hostile JSON key: each distinct) is classified again each time, so
#: the caches hold at most 4,096 x 8 KB each, whatever the input.
MAX_CACHED_STATEMENT = 8192


#: Longer statements keep theirs in a cache of this many only: create_many sends the same
#: multi-row INSERT text (placeholders only) for every chunk, and classifying it (15 KB for
#: 2,500 rows on sqlite) costs ~2.3 ms a time, ~9 ms of a 10,000-row create_many.
MAX_LONG_CACHED = 4


def is_plain_read(sql: str) -> bool:
    """A SELECT that takes no row locks and calls no function that could write."""
    if len(sql) > MAX_CACHED_STATEMENT:
        return _long_plain_read(sql)
    return _cached_plain_read(sql)


def is_stateless(sql: str) -> bool:
    """A statement that leaves nothing on the connection once its transaction has ended."""
    if len(sql) > MAX_CACHED_STATEMENT:
        return _long_stateless(sql)
    return _cached_stateless(sql)


def _is_plain_read(sql: str) -> bool:
    first = _FIRST_WORD.match(sql)
    if first is None or first.group(1).lower() != "select":
        return False
    if _NESTED_COMMENT.search(sql):
        return False
    code = _STRIP.sub(" ", sql)
    return (_LOCKING.search(code) is None and _INTO.search(code) is None
            and _calls_only_harmless_functions(sql))


def _is_stateless(sql: str) -> bool:
    first = _FIRST_WORD.match(sql)
    if first is None or first.group(1).lower() not in _DML:
        return False
    return _calls_only_harmless_functions(sql)


_cached_plain_read = lru_cache(maxsize=4096)(_is_plain_read)
_cached_stateless = lru_cache(maxsize=4096)(_is_stateless)
_long_plain_read = lru_cache(maxsize=MAX_LONG_CACHED)(_is_plain_read)
_long_stateless = lru_cache(maxsize=MAX_LONG_CACHED)(_is_stateless)
