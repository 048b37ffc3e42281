"""Every ```python block of notes/repository.md runs on an open session, on both backends.

Each block runs in a fresh namespace (with top-level ``await``) holding only ``session``, on
an empty database, so the examples cannot drift from the code.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from aegis_tortoise import DatabaseManager

NOTES = Path(__file__).resolve().parents[2] / "notes" / "repository.md"
_BLOCK = re.compile(r"```python\n(?P<code>.*?)```", re.DOTALL)


def _blocks() -> list[tuple[int, str]]:
    text = NOTES.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start("code")) + 1, m.group("code"))
            for m in _BLOCK.finditer(text)]


BLOCKS = _blocks()


def test_notes_cover_the_seed_examples() -> None:
    text = NOTES.read_text(encoding="utf-8")
    for name in ("get_by_email", "get_active_users", "get_users_with_policies", "search_users",
                 "create_users_batch", "update_users_batch", "get_user_with_policies",
                 "prefetch_related", "Q(", "icontains", "Count("):
        assert name in text, name
    assert len(BLOCKS) >= 9


@pytest.mark.parametrize(("line", "code"), BLOCKS,
                         ids=[f"repository.md:{n}" for n, _ in BLOCKS])
async def test_notes_block(line: int, code: str, db: DatabaseManager) -> None:
    compiled = compile(code, f"notes/repository.md:{line}", "exec",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    async with db.session() as session:
        namespace: dict[str, Any] = {"__name__": f"notes_{line}", "session": session}
        result = eval(compiled, namespace)  # noqa: S307 - the notes' own examples
        if result is not None:
            await result
