"""Every ```python block of README.md runs, on sqlite and on PostgreSQL.

Blocks run one by one, each in a fresh namespace holding an open ``session`` (on an empty
database with the example models' tables), with top-level ``await`` allowed; a block that
calls ``asyncio.run`` runs in a thread of its own. For the PostgreSQL run, the in-memory
sqlite URL in a block (``sqlite+aiosqlite:///:memory:``, and ``sqlite://:memory:`` in a
Tortoise config) is replaced by that same database. The comment line before a block
can say:

- ``<!-- file: NAME -->``: the block is a module, written to a temporary folder on
  ``sys.path`` so that later blocks can import it;
- ``<!-- pytest-file -->``: the block is a test file for the pytest plugin; it is run with
  pytest in a separate process, on sqlite and on PostgreSQL;
- ``<!-- no-test: REASON -->``: skipped, and the reason names the test that covers it.
"""

from __future__ import annotations

import ast
import asyncio
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aegis_tortoise import DatabaseManager
from tests.conftest import PgServer

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parents[2] / "README.md"
SQLITE_URL = "sqlite+aiosqlite:///:memory:"
TORTOISE_SQLITE_URL = "sqlite://:memory:"
_BLOCK = re.compile(r"(?P<before>[^\n]*\n)?```python\n(?P<code>.*?)```", re.DOTALL)
_MARK = re.compile(r"<!--\s*(?P<kind>file|pytest-file|no-test)\s*:?\s*(?P<arg>[^>]*?)\s*-->")


def _blocks() -> list[tuple[int, str, str, str]]:
    """(line, kind, argument, code) of every python block; kind is "run" when unmarked."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in _BLOCK.finditer(text):
        mark = _MARK.search(match.group("before") or "")
        kind, arg = (mark.group("kind"), mark.group("arg")) if mark else ("run", "")
        line = text.count("\n", 0, match.start("code")) + 1
        blocks.append((line, kind, arg, match.group("code")))
    return blocks


BLOCKS = _blocks()
RUNNABLE = [(line, code) for line, kind, _, code in BLOCKS if kind == "run"]
FILES = {arg: code for _, kind, arg, code in BLOCKS if kind == "file"}
PYTEST_FILES = [code for _, kind, _, code in BLOCKS if kind == "pytest-file"]


def test_readme_covers_the_seed_examples() -> None:
    text = README.read_text(encoding="utf-8")
    for name in ("get_by_email", "get_active_users", "get_users_with_policies", "search_users",
                 "create_users_batch", "update_users_batch", "get_user_with_policies",
                 "prefetch_related", "Q(", "icontains", "Count(", "TransactionManager(session)",
                 "with_db_retry(max_attempts=3, backoff_factor=", "EntityNotFoundError(",
                 "aerich upgrade", "aerich downgrade", "aerich migrate", "db_session",
                 "Settings()"):
        assert name in text, name
    assert len(RUNNABLE) >= 20
    assert len(PYTEST_FILES) == 1
    assert "app.py" in FILES
    for _, kind, arg, _ in BLOCKS:
        if kind == "no-test":
            assert "tests/" in arg, "a skipped block must name the test that covers it"


@pytest.fixture
def readme_modules(tmp_path: Path) -> Iterator[None]:
    """The README's ``<!-- file: -->`` blocks, importable by name."""
    for name, code in FILES.items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        for name in FILES:
            sys.modules.pop(name.removesuffix(".py"), None)


@pytest.mark.parametrize(("line", "code"), RUNNABLE, ids=[f"README.md:{n}" for n, _ in RUNNABLE])
@pytest.mark.usefixtures("readme_modules")
async def test_readme_block(line: int, code: str, backend: str, db_url: str,
                            db: DatabaseManager) -> None:
    if backend == "postgres":
        code = code.replace(SQLITE_URL, db_url)
        # A Tortoise config's in-memory sqlite, in Tortoise's URL form.
        code = code.replace(TORTOISE_SQLITE_URL,
                            db_url.replace("postgresql://", "postgres://", 1))
    filename = f"README.md:{line}"
    if "asyncio.run(" in code:
        compiled = compile(code, filename, "exec")
        await asyncio.to_thread(exec, compiled, {"__name__": f"readme_{line}"})
        return
    compiled = compile(code, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    async with db.session() as session:
        namespace: dict[str, Any] = {"__name__": f"readme_{line}", "session": session}
        result = eval(compiled, namespace)  # noqa: S307 - the README's own examples
        if result is not None:
            await result


INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
filterwarnings = error
aegis_models = aegis_tortoise.examples.models
"""


def _run_pytest_file(pytester: pytest.Pytester, *args: str) -> None:
    pytester.makefile(".ini", pytest=INI)
    pytester.makepyfile(test_users=PYTEST_FILES[0])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=6)


def test_readme_pytest_file_on_sqlite(pytester: pytest.Pytester) -> None:
    _run_pytest_file(pytester)


def test_readme_pytest_file_on_postgres(pytester: pytest.Pytester, pg_server: PgServer) -> None:
    url = pg_server.url_for(pg_server.create_database("readme_plugin"))
    _run_pytest_file(pytester, f"--aegis-db-url={url}")
