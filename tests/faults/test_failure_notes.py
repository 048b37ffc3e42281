"""The python blocks of the "Failure behaviour" page (docs/failures.md) run, as the docs'
blocks do (an open ``session`` in the namespace, top-level await), on sqlite and PostgreSQL; and
the idempotency example on PostgreSQL once more through the proxy with the COMMIT of the
idempotent unit lost, so the recovery paths run too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import MakeDb, Target
from tests.faults.proxy import CommitFault, FaultProxy

NOTES = Path(__file__).resolve().parents[2] / "docs" / "failures.md"
IDEMPOTENCY = "## When the COMMIT's reply is lost: idempotency keys\n"
SQLITE_URL = "sqlite+aiosqlite:///:memory:"


def _blocks(heading: str = "") -> list[str]:
    """The page's python blocks; with ``heading``, those of that section only."""
    text = NOTES.read_text(encoding="utf-8")
    if heading:
        text = text[text.index(heading):]
        end = text.find("\n## ", len(heading))
        text = text if end < 0 else text[:end]
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


async def _run(code: str, url: str | None, make_db: MakeDb, session_url: str) -> None:
    """Run ``code`` with an open session, its sqlite URL replaced by ``url``."""
    if url is not None:
        code = code.replace(SQLITE_URL, url)
    compiled = compile(code, str(NOTES), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    db = await make_db(session_url)
    async with db.session() as session:
        namespace: dict[str, Any] = {"session": session, "__name__": "failure_notes"}
        result = eval(compiled, namespace)  # noqa: S307 - our own documentation
        if result is not None:
            await result


def test_the_idempotency_section_has_one_example() -> None:
    assert len(_blocks(IDEMPOTENCY)) == 1
    assert len(_blocks()) >= 2  # "Commit never lies" has its own


@pytest.mark.parametrize("index", range(len(_blocks())))
async def test_failure_notes_block_runs(index: int, target: Target, make_db: MakeDb) -> None:
    url = None if target.backend == "sqlite" else target.url
    await _run(_blocks()[index], url, make_db, target.url)


@pytest.mark.parametrize("fault", ["lose_reply", "drop"])
async def test_idempotency_example_survives_a_lost_commit(
    fault: CommitFault, pg_target: Any, fault_proxy: FaultProxy, make_db: MakeDb
) -> None:
    """The COMMIT of the first unit that writes a request key is lost: its reply
    ("lose_reply": committed, the key is found) or the COMMIT itself ("drop": not committed,
    the unit runs again). Either way the example's own assertions (each account once) hold."""
    (code,) = _blocks(IDEMPOTENCY)
    fired = fault_proxy.fail_commit(fault, containing="INSERT INTO request_keys")
    await _run(code, fault_proxy.url_for(pg_target.database), make_db, pg_target.url())
    assert fired.is_set()
    assert fault_proxy.stats.commit_faults == 1
