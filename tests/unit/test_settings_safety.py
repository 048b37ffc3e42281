"""Settings that do not leak or mislead: unencoded passwords (#18 item 12), dumps that mask
the URL (#18 item 13), misspelled DATABASE_* names (#20 item 6) and the in-memory default
(#20 item 3). No database."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from aegis_tortoise import ConfigurationError, DatabaseManager, DatabaseSettings
from aegis_tortoise import config as config_module
from aegis_tortoise.config import parse_database_url

SECRET = "Tr0ub4dor"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DATABASE_* variables, no .env but the test's own, warnings not yet given."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("DATABASE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config_module, "_warned", set(), raising=False)
    return tmp_path


@pytest.mark.parametrize(("url", "secrets"), [
    ("postgresql+asyncpg://app:p@ss:w/rd%@host/db", ["p@ss", "ss:w", "'w'", "rd%"]),
    (f"postgresql+asyncpg://app:{SECRET}@secrethostpart:5432/abc@127.0.0.1/db",
     [SECRET, "secrethostpart", "abc"]),
    (f"postgresql://app:{SECRET}@h1:5432,h2:5433/x@127.0.0.1/db", [SECRET, "h1", "h2"]),
    (f"postgresql://app:{SECRET}@host?x@127.0.0.1/db", [SECRET, "?x"]),
    (f"postgresql://app:{SECRET}@host#frag@127.0.0.1/db", [SECRET, "frag"]),
    (f"asyncpg://app:{SECRET}:x@secret:1/abc@127.0.0.1:5432/db", [SECRET, "secret:", "abc"]),
])
def test_an_at_after_the_host_part_is_the_percent_encode_error(
        url: str, secrets: list[str], caplog: pytest.LogCaptureFixture) -> None:
    """Before: the first URL failed quoting 'w' (password text) as the port, the second
    was accepted with password text as its host."""
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigurationError) as info:
        parse_database_url(url)
    error = info.value
    assert "percent-encode your password" in error.message
    shown = f"{error.message} {error.details} {error!r} {caplog.text}"
    for secret in secrets:
        assert secret not in shown, (secret, shown)
    assert "port" not in error.details
    with pytest.raises(ConfigurationError) as from_settings:
        DatabaseSettings(database_url=url)
    assert "percent-encode your password" in from_settings.value.message
    for secret in secrets:
        assert secret not in str(from_settings.value)


def test_an_encoded_password_with_every_special_character_parses() -> None:
    from urllib.parse import quote

    password = "p@ss:w/rd%?#"
    parsed = parse_database_url(f"postgresql://app:{quote(password, safe='')}@host/db")
    assert (parsed.password, parsed.host, parsed.database) == (password, "host", "db")


URL = f"postgresql+asyncpg://alice:{SECRET}@db.example:5433/app?application_name=svc"
REPLICA = f"postgresql://bob:{SECRET}@replica/app"


def test_every_dump_of_the_settings_masks_the_passwords() -> None:
    """Before: model_dump(), model_dump_json() and dict() returned both passwords."""
    settings = DatabaseSettings(database_url=URL, database_replica_urls=[REPLICA, REPLICA])
    dumped = settings.model_dump()
    assert dumped["database_url"] == (
        "postgresql+asyncpg://alice:***@db.example:5433/app?application_name=svc")
    assert dumped["database_replica_urls"] == ["postgresql://bob:***@replica/app"] * 2
    as_json = settings.model_dump_json()
    assert json.loads(as_json)["database_url"] == dumped["database_url"]
    with pytest.warns(DeprecationWarning, match="dict"):
        as_dict = settings.dict()
    for text in (str(dumped), as_json, str(as_dict), repr(settings), str(settings)):
        assert SECRET not in text
    # The library (and an app that must) still reads the real URLs.
    assert settings.database_url == URL
    assert settings.database_replica_urls == [REPLICA, REPLICA]
    revealed = settings.model_dump(context={"reveal_secrets": True})
    assert revealed["database_url"] == URL
    assert revealed["database_replica_urls"] == [REPLICA, REPLICA]


@pytest.mark.parametrize(("url", "masked"), [
    ("sqlite:///x.db?journal_mode=wal", "sqlite:///x.db?journal_mode=wal"),
    ("postgresql://alice@db/app", "postgresql://alice@db/app"),
    (f"postgresql://alice:{SECRET}@h1,h2:5433/app", "postgresql://alice:***@h1,h2:5433/app"),
    (f"postgresql://:{SECRET}@db/app", "postgresql://:***@db/app"),
])
def test_mask_url_keeps_all_but_the_password(url: str, masked: str) -> None:
    assert config_module.mask_url(url) == masked


def test_misspelled_setting_in_the_environment_names_the_closest(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Before: DATABASE_POOLSIZE=5 left the pool at 20 without a word."""
    monkeypatch.setenv("DATABASE_POOLSIZE", "5")
    with caplog.at_level(logging.WARNING, logger="aegis_tortoise.config"):
        settings = DatabaseSettings()
        DatabaseSettings()  # once a name, not once a settings object
    assert settings.database_pool_size == 20
    warnings = [r.getMessage() for r in caplog.records if "DATABASE_POOLSIZE" in r.getMessage()]
    assert len(warnings) == 1
    assert "environment" in warnings[0]
    assert "did you mean DATABASE_POOL_SIZE?" in warnings[0]


def test_misspelled_setting_in_dotenv_names_the_closest(
        clean_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    (clean_env / ".env").write_text("DATABASE_POOL_TIMOUT=3\nDATABASE_URL=sqlite://:memory:\n",
                                    encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="aegis_tortoise.config"):
        DatabaseSettings()
    messages = [r.getMessage() for r in caplog.records]
    assert any("DATABASE_POOL_TIMOUT (in the .env)" in m
               and "did you mean DATABASE_POOL_TIMEOUT?" in m for m in messages), messages
    assert not any("DATABASE_URL" in m for m in messages), messages


def test_every_field_is_a_known_name(monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    # Derived from the fields: a setting another module adds is known without a list.
    for name in DatabaseSettings.model_fields:
        monkeypatch.setenv(name.upper(), "")
    with caplog.at_level(logging.WARNING, logger="aegis_tortoise.config"):
        config_module._warn_unknown_names(None)
    assert caplog.records == []


def test_the_default_url_logs_one_warning_naming_database_url(
        caplog: pytest.LogCaptureFixture) -> None:
    """Before: a service without DATABASE_URL ran on an empty in-memory database silently."""
    with caplog.at_level(logging.WARNING, logger="aegis_tortoise.config"):
        first, second = DatabaseManager(models=[]), DatabaseManager(models=[])
    warnings = [r for r in caplog.records if "DATABASE_URL" in r.getMessage()]
    assert len(warnings) == 1
    assert "in-memory" in warnings[0].getMessage()
    assert first.url_is_default
    assert second.url_is_default


def test_no_warning_when_the_url_is_set(monkeypatch: pytest.MonkeyPatch, clean_env: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="aegis_tortoise.config"):
        explicit = DatabaseManager("sqlite://:memory:", models=[])
        monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///:memory:")
        from_env = DatabaseManager(models=[])
        monkeypatch.delenv("DATABASE_URL")
        (clean_env / ".env").write_text("DATABASE_URL=sqlite://:memory:\n", encoding="utf-8")
        from_dotenv = DatabaseManager(models=[])
    assert caplog.records == []
    assert not (explicit.url_is_default)
    assert not (from_env.url_is_default)
    assert not (from_dotenv.url_is_default)


# -- review of the branch: further paths a password took (found by probing) ----------------


def _chain_text(error: BaseException) -> str:
    """Everything a traceback or an error reporter shows: the messages of the whole chain."""
    import traceback

    return "".join(traceback.format_exception(error)) + " ".join(
        f"{e!r} {getattr(e, 'details', '')}" for e in _chain(error))


def _chain(error: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def test_model_validate_quotes_no_password() -> None:
    """Before: pydantic's ValidationError echoed input_value, the URL with its password."""
    bad = f"postgresql://app:x/{SECRET}@host/db"
    with pytest.raises(ValueError, match="percent-encode your password") as info:
        DatabaseSettings.model_validate({"database_url": bad})
    assert SECRET not in str(info.value)


def test_an_invalid_replica_setting_quotes_no_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the error quoted DATABASE_REPLICA_URLS from the environment, passwords
    included ("Input should be a valid list (got 'postgresql://r:...')")."""
    monkeypatch.setenv("DATABASE_REPLICA_URLS", f"postgresql://r:{SECRET}@replica/app")
    with pytest.raises(ConfigurationError, match="DATABASE_REPLICA_URLS") as info:
        DatabaseSettings(database_replica_urls=5)
    assert SECRET not in _chain_text(info.value)


def test_an_invalid_secret_setting_of_a_subclass_is_not_quoted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A value is quoted for a number (DATABASE_POOL_SIZE=abc), never for a secret."""

    class AppSettings(DatabaseSettings):
        database_api_key: int = 0

    monkeypatch.setenv("DATABASE_API_KEY", SECRET)
    monkeypatch.setenv("DATABASE_POOL_SIZE", "lots")
    with pytest.raises(ConfigurationError, match="DATABASE_API_KEY") as info:
        AppSettings()
    assert SECRET not in _chain_text(info.value)
    assert "(got 'lots')" in info.value.message


def test_a_subclass_setting_is_a_known_name(monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """Before: an app's own DATABASE_* field (a subclass) was reported as ignored."""

    class AppSettings(DatabaseSettings):
        database_schema: str = "public"

    monkeypatch.setenv("DATABASE_SCHEMA", "tenant")
    with caplog.at_level(logging.WARNING, logger="aegis_tortoise.config"):
        DatabaseSettings()  # as a DatabaseManager() without settings reads them
        settings = AppSettings()
    assert settings.database_schema == "tenant"
    assert not [r for r in caplog.records if "DATABASE_SCHEMA" in r.getMessage()]


@pytest.mark.parametrize("url", [
    f"asyncpg://app:{SECRET}/x@host/db",
    f"postgres://app:{SECRET}?x@host/db",
    f"postgres://app:{SECRET}#x@host/db",
    f"postgres://app:{SECRET}@secrethostpart:5432/abc@127.0.0.1/db",
])
def test_a_tortoise_config_url_with_an_unencoded_password(url: str) -> None:
    """Before: Tortoise's expansion chained a ValueError quoting password text as the port,
    or accepted the URL with password text as its host."""
    from aegis_tortoise import DatabaseManager

    config = {"connections": {"default": url},
              "apps": {"models": {"models": ["aegis_tortoise.examples.models"]}}}
    with pytest.raises(ConfigurationError, match="percent-encode your password") as info:
        DatabaseManager.from_tortoise_config(config)
    shown = _chain_text(info.value)
    for secret in (SECRET, "secrethostpart", "abc"):
        assert secret not in shown, shown


@pytest.mark.parametrize("url", [
    "asyncpg://app:pw@ho[st/db",  # urlparse's ValueError ("Invalid IPv6 URL")
    "asyncpg://app:pw@host/db?max_size=lots",  # Tortoise's int() of a query value
])
def test_a_malformed_tortoise_config_url_is_our_error(url: str) -> None:
    """Before: a raw ValueError left from_tortoise_config."""
    from aegis_tortoise import DatabaseManager

    config = {"connections": {"default": url},
              "apps": {"models": {"models": ["aegis_tortoise.examples.models"]}}}
    with pytest.raises(ConfigurationError, match="'default'") as info:
        DatabaseManager.from_tortoise_config(config)
    assert "pw" not in info.value.message


def test_the_plugins_settings_repr_masks_the_password() -> None:
    """Before: repr() of the plugin's settings (shown by ``pytest -l`` in a failing
    fixture's locals) held the test database URL with its password."""
    from aegis_tortoise.testing import PluginSettings

    url = f"postgresql://app:{SECRET}@127.0.0.1/app_test"
    settings = PluginSettings(url=url, parsed=parse_database_url(url), models=(),
                              source="AEGIS_TEST_DATABASE_URL")
    assert SECRET not in repr(settings)
    assert "app:***@127.0.0.1" in repr(settings)
    assert settings.url == url


def test_a_dotenv_in_the_settings_encoding_is_read(
        clean_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before: the unknown-name check read .env as UTF-8 whatever env_file_encoding said,
    and a latin-1 .env that pydantic-settings reads crashed DatabaseSettings()."""
    from pydantic_settings import SettingsConfigDict

    class Latin1Settings(DatabaseSettings):
        model_config = SettingsConfigDict(env_file_encoding="latin-1")

    (clean_env / ".env").write_bytes(b"DATABASE_POOL_SIZE=5\nDATABASE_POOLSIZE=6\n"
                                     b"APP_NAME=caf\xe9\n")
    with caplog.at_level(logging.WARNING, logger="aegis_tortoise.config"):
        settings = Latin1Settings()
    assert settings.database_pool_size == 5
    assert any("DATABASE_POOLSIZE (in the .env)" in r.getMessage() for r in caplog.records)
