"""Every ```python block of README.md runs, on sqlite and on PostgreSQL.

Blocks run one by one, each in a fresh namespace, with top-level ``await`` allowed. For the
PostgreSQL run, the in-memory sqlite URL in a block is replaced by a database of the test
server whose schema is reset first. A block preceded by ``<!-- no-test -->`` is skipped.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import reset_pg_schema

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


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
async def test_readme_block(line: int, code: str, backend: str,
                            request: pytest.FixtureRequest) -> None:
    if backend == "postgres":
        url: str = request.getfixturevalue("pg_database")
        await reset_pg_schema(url)
        code = code.replace(SQLITE_URL, url)
    compiled = compile(code, f"README.md:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"__name__": f"readme_{line}"}
    result = eval(compiled, namespace)  # noqa: S307 - the README's own examples
    if result is not None:
        await result
