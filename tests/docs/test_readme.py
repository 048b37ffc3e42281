"""Every ```python block of README.md runs, on sqlite and on PostgreSQL.

Blocks run one by one, each in a fresh namespace holding an open ``session`` (on an empty
database with the example models' tables), with top-level ``await`` allowed. For the
PostgreSQL run, the in-memory sqlite URL in a block is replaced by that same database. A
block preceded by ``<!-- no-test -->`` is skipped.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from aegis_tortoise import DatabaseManager

README = Path(__file__).resolve().parents[2] / "README.md"
SQLITE_URL = "sqlite+aiosqlite:///:memory:"
_BLOCK = re.compile(r"(?P<before>[^\n]*\n)?```python\n(?P<code>.*?)```", re.DOTALL)


def _blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in _BLOCK.finditer(text):
        if "<!-- no-test -->" in (match.group("before") or ""):
            continue
        line = text.count("\n", 0, match.start("code")) + 1
        blocks.append((line, match.group("code")))
    return blocks


BLOCKS = _blocks()


def test_readme_covers_the_seed_examples() -> None:
    text = README.read_text(encoding="utf-8")
    for name in ("get_by_email", "get_active_users", "get_users_with_policies", "search_users",
                 "create_users_batch", "update_users_batch", "get_user_with_policies",
                 "prefetch_related", "Q(", "icontains", "Count(", "TransactionManager(session)",
                 "with_db_retry(max_attempts=3, backoff_factor=", "EntityNotFoundError(",
                 "aerich upgrade", "db_session", "Settings()"):
        assert name in text, name
    assert len(BLOCKS) >= 20


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
async def test_readme_block(line: int, code: str, backend: str, db_url: str,
                            db: DatabaseManager) -> None:
    if backend == "postgres":
        code = code.replace(SQLITE_URL, db_url)
    compiled = compile(code, f"README.md:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    async with db.session() as session:
        namespace: dict[str, Any] = {"__name__": f"readme_{line}", "session": session}
        result = eval(compiled, namespace)  # noqa: S307 - the README's own examples
        if result is not None:
            await result
