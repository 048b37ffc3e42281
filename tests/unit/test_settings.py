"""DatabaseSettings from the environment and .env (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis_tortoise import ConfigurationError, DatabaseManager, DatabaseSettings
from aegis_tortoise.config import DEFAULT_DATABASE_URL

SECRET = "S3cr3t-pw"
_VARIABLES = (
    "DATABASE_URL", "DATABASE_MODELS", "DATABASE_POOL_SIZE", "DATABASE_MAX_OVERFLOW",
    "DATABASE_POOL_TIMEOUT", "DATABASE_POOL_RECYCLE", "DATABASE_RETRY_ATTEMPTS",
    "DATABASE_RETRY_BACKOFF", "DATABASE_ECHO",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DATABASE_* variables and no .env but the test's own."""
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_with_nothing_set() -> None:
    settings = DatabaseSettings()
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///:memory:"
    assert settings.parsed_url.is_memory
    assert settings.database_models == []
    assert (settings.database_pool_size, settings.database_max_overflow) == (20, 10)
    assert (settings.database_pool_timeout, settings.database_pool_recycle) == (30.0, 3600.0)
    assert (settings.database_retry_attempts, settings.database_retry_backoff) == (3, 2.0)
    assert settings.database_echo is False


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:pw@db/app")
    monkeypatch.setenv("DATABASE_MODELS", "app.models, app.other ,")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "7")
    monkeypatch.setenv("DATABASE_MAX_OVERFLOW", "0")
    monkeypatch.setenv("DATABASE_POOL_TIMEOUT", "2.5")
    monkeypatch.setenv("DATABASE_POOL_RECYCLE", "60")
    monkeypatch.setenv("DATABASE_RETRY_ATTEMPTS", "5")
    monkeypatch.setenv("DATABASE_RETRY_BACKOFF", "0.5")
    monkeypatch.setenv("DATABASE_ECHO", "true")
    settings = DatabaseSettings()
    assert settings.database_url == "postgresql+asyncpg://u:pw@db/app"
    assert settings.database_models == ["app.models", "app.other"]
    assert settings.database_pool_size == 7
    assert settings.database_max_overflow == 0
    assert settings.database_pool_timeout == 2.5
    assert settings.database_pool_recycle == 60.0
    assert settings.database_retry_attempts == 5
    assert settings.database_retry_backoff == 0.5
    assert settings.database_echo is True


def test_values_from_dotenv(clean_env: Path) -> None:
    (clean_env / ".env").write_text(
        "DATABASE_URL=sqlite:///from_env_file.db\nDATABASE_POOL_SIZE=3\n"
        "DATABASE_MODELS=aegis_tortoise.examples.models\n", encoding="utf-8")
    settings = DatabaseSettings()
    assert settings.database_url == "sqlite:///from_env_file.db"
    assert settings.database_pool_size == 3
    assert settings.database_models == ["aegis_tortoise.examples.models"]


def test_environment_wins_over_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("DATABASE_POOL_SIZE=3\n", encoding="utf-8")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "4")
    assert DatabaseSettings().database_pool_size == 4


@pytest.mark.parametrize(("variable", "value"), [
    ("DATABASE_POOL_SIZE", "abc"),
    ("DATABASE_POOL_SIZE", "0"),
    ("DATABASE_MAX_OVERFLOW", "-1"),
    ("DATABASE_POOL_TIMEOUT", "soon"),
    ("DATABASE_RETRY_ATTEMPTS", "0"),
    ("DATABASE_ECHO", "maybe"),
])
def test_wrong_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings()
    assert variable in str(info.value)
    assert info.value.details["variables"] == [variable]


def test_wrong_value_in_dotenv_names_the_variable(clean_env: Path) -> None:
    (clean_env / ".env").write_text("DATABASE_POOL_SIZE=abc\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="DATABASE_POOL_SIZE"):
        DatabaseSettings()


def test_bad_url_names_variable_and_scheme_not_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"mysql://root:{SECRET}@localhost/app")
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings()
    assert "DATABASE_URL" in str(info.value)
    assert "mysql" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_settings_repr_masks_password() -> None:
    settings = DatabaseSettings(database_url=f"postgresql://alice:{SECRET}@db/app")
    for text in (repr(settings), str(settings)):
        assert SECRET not in text
        assert "alice:***@db" in text


async def test_from_settings_opens_a_working_session(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///settings.db")
    monkeypatch.setenv("DATABASE_MODELS", "aegis_tortoise.examples.models")
    monkeypatch.setenv("DATABASE_POOL_TIMEOUT", "4")
    db = DatabaseManager.from_settings()
    assert db.url.database == "settings.db"
    assert db.models == ["aegis_tortoise.examples.models"]
    assert db.pool_timeout == 4.0
    try:
        await db.generate_schemas()
        async with db.session() as session:
            await session.execute("INSERT INTO users (email, name, created_at, updated_at) "
                                  "VALUES ('a@x', 'A', '2024-01-01', '2024-01-01')")
        async with db.session() as session:
            assert (await session.execute("SELECT count(*) FROM users")).scalar_one() == 1
    finally:
        await db.close()
    assert (clean_env / "settings.db").is_file()


async def test_explicit_settings_object_and_overrides() -> None:
    settings = DatabaseSettings(database_url="sqlite://:memory:", database_pool_size=2)
    db = DatabaseManager.from_settings(settings, pool_timeout=1)
    assert (db.pool_size, db.pool_timeout, db.url.is_memory) == (2, 1.0, True)


async def test_manager_with_nothing_set_is_in_memory_sqlite() -> None:
    db = DatabaseManager()
    assert db.dialect == "sqlite"
    assert db.url.is_memory
    try:
        async with db.session() as session:
            assert (await session.execute("SELECT 1")).scalar() == 1
    finally:
        await db.close()


def test_bad_manager_arguments_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="pool_size"):
        DatabaseManager("sqlite://:memory:", models=[], pool_size=0)
    with pytest.raises(ConfigurationError, match="pool_timeout"):
        DatabaseManager("sqlite://:memory:", models=[], pool_timeout=0)
