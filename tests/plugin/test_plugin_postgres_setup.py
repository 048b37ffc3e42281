"""The plugin on PostgreSQL as a newcomer meets it (#20 item 5): a missing test database is
created, an unreachable server fails once at the start in one line naming the option that
was used, and a model module plain pytest cannot import names ``pythonpath``."""

from __future__ import annotations

import uuid

import pytest

from aegis_tortoise.testing import ENV_DATABASE_URL
from tests.conftest import PLUGIN_INI, PgServer

pytest_plugins = ["pytester"]

THREE_TESTS = '''
import pytest

from aegis_tortoise.examples.models import User


@pytest.mark.parametrize("run", range(3))
async def test_user(db_session, run):
    user = await User.create(email=f"u{run}@x", name="U")
    assert user.id == 1
'''


@pytest.mark.postgres
def test_a_missing_test_database_is_created(pytester: pytest.Pytester,
                                            pg_server: PgServer) -> None:
    """Before: only pytest-xdist workers' databases were created; this one failed 3D000."""
    name = f"{pg_server.prefix}_missing_{uuid.uuid4().hex[:6]}"
    pg_server.created.append(name)  # dropped at the end of the run
    pytester.makeini(PLUGIN_INI)
    pytester.makepyfile(test_users=THREE_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider",
                                           f"--aegis-db-url={pg_server.url_for(name)}",
                                           timeout=120)
    result.assert_outcomes(passed=3)
    exists = pg_server._sync(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'")
    assert exists == 1


@pytest.mark.parametrize("how", ["--aegis-db-url", ENV_DATABASE_URL])
def test_an_unreachable_server_fails_once_in_one_line(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Before: each test failed with a long traceback, and the message named DATABASE_URL."""
    url = "postgresql://postgres:s3cr3t-pw@127.0.0.1:1/app_test"
    pytester.makeini(PLUGIN_INI)
    pytester.makepyfile(test_users=THREE_TESTS)
    args = ["-p", "no:cacheprovider"]
    if how == ENV_DATABASE_URL:
        monkeypatch.setenv(ENV_DATABASE_URL, url)
    else:
        monkeypatch.delenv(ENV_DATABASE_URL, raising=False)
        args.append(f"--aegis-db-url={url}")
    result = pytester.runpytest_subprocess(*args, timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    lines = [line for line in output.splitlines() if "cannot reach PostgreSQL" in line]
    assert len(lines) == 1, output
    assert how in lines[0]
    assert "start the server" in lines[0]
    assert "s3cr3t-pw" not in output
    assert "Traceback" not in output
    assert "passed" not in output
    assert "failed" not in output


def test_a_model_module_pytest_cannot_import_names_pythonpath(
        pytester: pytest.Pytester) -> None:
    pytester.makeini(PLUGIN_INI.replace("aegis_tortoise.examples.models", "myservice.models"))
    pytester.makepyfile(test_x="async def test_x(db_manager):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(['*myservice.models*pythonpath = ["."]*'])


@pytest.mark.postgres
async def test_a_multi_host_url_reaches_the_server_that_answers(pg_server: PgServer) -> None:
    """Before: the check before the first test passed 'h1:1,h2:5432' to asyncpg as one
    host name (gaierror) and stopped the run with "cannot reach PostgreSQL"."""
    from urllib.parse import urlsplit, urlunsplit

    from aegis_tortoise.config import parse_database_url
    from aegis_tortoise.testing import _ensure_database

    name = f"{pg_server.prefix}_multi_{uuid.uuid4().hex[:6]}"
    pg_server.created.append(name)  # dropped at the end of the run
    parts = urlsplit(pg_server.url_for(name))
    userinfo = parts.netloc.rpartition("@")[0]
    # A closed port first, as a failed-over primary would be, then the real server.
    netloc = f"{userinfo}@127.0.0.1:1,{parts.hostname}:{parts.port or 5432}"
    await _ensure_database(parse_database_url(urlunsplit(parts._replace(netloc=netloc))))
    exists = pg_server._sync(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'")
    assert exists == 1
