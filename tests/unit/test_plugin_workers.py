"""The database each pytest-xdist worker gets (aegis_tortoise.testing._per_worker)."""

from __future__ import annotations

import pytest

from aegis_tortoise.config import parse_database_url
from aegis_tortoise.testing import _per_worker


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://u@h/app_test", "postgresql://u@h/app_test_gw1"),
    ("postgresql://u@h:5433/app%20test?sslmode=disable",
     "postgresql://u@h:5433/app%20test_gw1?sslmode=disable"),
    ("postgresql://alice@h", "postgresql://alice@h/alice_gw1"),
    ("sqlite:///tests.db", "sqlite:///tests_gw1.db"),
    ("sqlite:///s", "sqlite:///s_gw1"),
    ("sqlite+aiosqlite:////tmp/lite/sqlite.db", "sqlite+aiosqlite:////tmp/lite/sqlite_gw1.db"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
])
def test_each_worker_gets_its_own_database(url: str, expected: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert _per_worker(url, parse_database_url(url))[0] == expected


def test_without_xdist_the_url_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    url = "postgresql://u@h/app_test"
    assert _per_worker(url, parse_database_url(url))[0] == url
