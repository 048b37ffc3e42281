"""Every ```python block of README.md and of the docs site (docs/**/*.md) runs, on sqlite
and on PostgreSQL.

Blocks run one by one, each in a fresh namespace holding an open ``session`` (on an empty
database with the example models' tables), with top-level ``await`` allowed; a block that
calls ``asyncio.run`` runs in a thread of its own. For the PostgreSQL run, the in-memory
sqlite URL in a block (``sqlite+aiosqlite:///:memory:``, and ``sqlite://:memory:`` in a
Tortoise config) is replaced by that same database. The comment line before a block
can say:

- ``<!-- file: NAME -->``: the block is a module, written to a temporary folder on
  ``sys.path`` so that later blocks of the same page can import it;
- ``<!-- pytest-file -->``: the block is a test file for the pytest plugin; it is run with
  pytest in a separate process, on sqlite and on PostgreSQL (one in the whole docs set);
- ``<!-- no-test: REASON -->``: skipped, and the reason names the test that covers it.

Every python block also says how to run it: the paragraph before it names ``asyncio.run``,
``python -m asyncio`` (top-level ``await``), ``python``, ``pytest`` or the file to save it
as. The seed-coverage assertions hold for the docs set as a whole.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aegis_tortoise import DatabaseManager, _model_state
from tests.conftest import PLUGIN_INI, PgServer

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SQLITE_URL = "sqlite+aiosqlite:///:memory:"
TORTOISE_SQLITE_URL = "sqlite://:memory:"
_BLOCK = re.compile(r"```python\n(?P<code>.*?)```", re.DOTALL)
_MARK = re.compile(r"<!--\s*(?P<kind>file|pytest-file|no-test)\s*:?\s*(?P<arg>[^>]*?)\s*-->")
# What the paragraph before a block must name: how to run it.
_HOW_TO_RUN = re.compile(r"(?s)\b(Run it|run it|Save it as|save it as)\b.*?"
                         r"(asyncio\.run|python -m asyncio|`python|`pytest`)")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int
    kind: str  # "run" when unmarked, else file / pytest-file / no-test
    arg: str
    code: str
    before: str  # the paragraph before the block (its marker line excluded)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    page = path.relative_to(ROOT).as_posix()
    blocks = []
    for match in _BLOCK.finditer(text):
        preceding = text[:match.start()].rstrip("\n").split("\n")
        mark = _MARK.search(preceding[-1]) if preceding else None
        if mark:
            preceding.pop()
            while preceding and not preceding[-1].strip():
                preceding.pop()
        paragraph: list[str] = []
        while preceding and preceding[-1].strip():
            paragraph.insert(0, preceding.pop())
        kind, arg = (mark.group("kind"), mark.group("arg")) if mark else ("run", "")
        line = text.count("\n", 0, match.start("code")) + 1
        blocks.append(Block(page, line, kind, arg, match.group("code"), "\n".join(paragraph)))
    return blocks


BLOCKS = [block for path in PAGES for block in _blocks(path)]
RUNNABLE = [block for block in BLOCKS if block.kind == "run"]
PYTEST_FILES = [block.code for block in BLOCKS if block.kind == "pytest-file"]


def _files(page: str) -> dict[str, str]:
    return {b.arg: b.code for b in BLOCKS if b.page == page and b.kind == "file"}


def test_docs_cover_the_seed_examples() -> None:
    text = "\n".join(path.read_text(encoding="utf-8") for path in PAGES)
    for name in ("get_by_email", "get_active_users", "get_users_with_policies", "search_users",
                 "create_users_batch", "update_users_batch", "get_user_with_policies",
                 "prefetch_related", "Q(", "icontains", "Count(", "TransactionManager(session)",
                 "with_db_retry(max_attempts=3, backoff_factor=", "EntityNotFoundError(",
                 "aerich upgrade", "aerich downgrade", "aerich migrate", "db_session",
                 "Settings()"):
        assert name in text, name
    assert len(RUNNABLE) >= 20
    assert len(PYTEST_FILES) == 1
    assert "app.py" in _files("docs/reference/fastapi.md")
    for block in BLOCKS:
        if block.kind == "no-test":
            assert "tests/" in block.arg, "a skipped block must name the test that covers it"


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    """The rest lives in docs/ (issue 12: the README had grown to 1,700 lines)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250
    first_block = lines[lines.index("```bash") + 1:lines.index("```bash") + 3]
    assert [line.split()[:2] for line in first_block] == [["make", "demo"], ["make", "test"]]
    linked = set(re.findall(r"\]\((docs/[^)#]+)\)", "\n".join(lines)))
    pages = {path.relative_to(ROOT).as_posix() for path in PAGES[1:]}
    assert linked == pages, "the README links every docs page"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_example_says_how_to_run_it(block: Block) -> None:
    assert _HOW_TO_RUN.search(block.before), (
        f"{block.id}: the paragraph before the example should say how to run it "
        "(asyncio.run, `python -m asyncio`, `python ...`, pytest, or the file to save it as)")


@contextmanager
def _page_modules(page: str, folder: Path) -> Iterator[None]:
    """The page's ``<!-- file: -->`` blocks, importable by name."""
    files = _files(page)
    for name, code in files.items():
        (folder / name).write_text(code, encoding="utf-8")
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in files:
            module = name.removesuffix(".py")
            sys.modules.pop(module, None)
            # The next block imports the page's models anew (new classes, same tables):
            # forget the old classes' claim on their tables, as a new process would.
            for key, model in list(_model_state.table_owners.items()):
                if model.__module__ == module:
                    del _model_state.table_owners[key]


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
async def test_docs_block(block: Block, backend: str, db_url: str, db: DatabaseManager,
                          tmp_path: Path) -> None:
    code = block.code
    if backend == "postgres":
        code = code.replace(SQLITE_URL, db_url)
        # A Tortoise config's in-memory sqlite, in Tortoise's URL form.
        code = code.replace(TORTOISE_SQLITE_URL,
                            db_url.replace("postgresql://", "postgres://", 1))
    module_name = re.sub(r"\W", "_", block.id)
    with _page_modules(block.page, tmp_path):
        if "asyncio.run(" in code:
            compiled = compile(code, block.id, "exec")
            await asyncio.to_thread(exec, compiled, {"__name__": module_name})
            return
        compiled = compile(code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        async with db.session() as session:
            namespace: dict[str, Any] = {"__name__": module_name, "session": session}
            result = eval(compiled, namespace)  # noqa: S307 - the docs' own examples
            if result is not None:
                await result


REPL_BLOCKS = [block for block in RUNNABLE if "python -m asyncio" in block.before]


@pytest.mark.parametrize("block", REPL_BLOCKS, ids=[b.id for b in REPL_BLOCKS])
def test_repl_block_runs_in_python_m_asyncio(block: Block, tmp_path: Path) -> None:
    """What the docs say: pasted into ``python -m asyncio`` (sqlite), the example runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    result = subprocess.run(
        [sys.executable, "-m", "asyncio"], input=block.code + "\n\n", capture_output=True,
        text=True, cwd=tmp_path, env=env, timeout=120, check=False)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert 'File "<console>"' not in output, output  # a syntax error, as pasted


INI = PLUGIN_INI


def _run_pytest_file(pytester: pytest.Pytester, *args: str) -> None:
    pytester.makefile(".ini", pytest=INI)
    pytester.makepyfile(test_users=PYTEST_FILES[0])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=6)


def test_docs_pytest_file_on_sqlite(pytester: pytest.Pytester) -> None:
    _run_pytest_file(pytester)


def test_docs_pytest_file_on_postgres(pytester: pytest.Pytester, pg_server: PgServer) -> None:
    url = pg_server.url_for(pg_server.create_database("readme_plugin"))
    _run_pytest_file(pytester, f"--aegis-db-url={url}")
