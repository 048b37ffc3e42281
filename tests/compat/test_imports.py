"""The seed's import paths serve the very objects of aegis_tortoise (no logic of their own)."""

from __future__ import annotations

import importlib

import pytest

import aegis_tortoise
from aegis_tortoise import config, errors, manager, models, retry, transactions

SHIM = {
    "aegis_shared.database": {
        "DatabaseManager": manager.DatabaseManager,
        "TransactionManager": transactions.TransactionManager,
        "transactional": transactions.transactional,
        "with_db_retry": retry.with_db_retry,
        "db_retry": retry.db_retry,
        "DatabaseError": errors.DatabaseError,
        "DatabaseConnectionError": errors.DatabaseConnectionError,
        "EntityNotFoundError": errors.EntityNotFoundError,
        "DuplicateEntityError": errors.DuplicateEntityError,
        "PoolTimeoutError": errors.PoolTimeoutError,
        "TransactionError": errors.TransactionError,
        "ValidationError": errors.ValidationError,
    },
    "aegis_shared.errors.exceptions": {
        "ErrorCode": errors.ErrorCode,
        "ServiceException": errors.ServiceException,
        "AegisBaseException": errors.ServiceException,
        "DatabaseError": errors.DatabaseError,
        "DatabaseConnectionError": errors.DatabaseConnectionError,
        "EntityNotFoundError": errors.EntityNotFoundError,
        "DuplicateEntityError": errors.DuplicateEntityError,
        "ValidationError": errors.ValidationError,
    },
    "aegis_shared.models": {
        "BaseEntity": models.BaseEntity,
        "PaginatedResponse": models.PaginatedResponse,
        "KeysetPage": models.KeysetPage,
    },
    "aegis_shared.config": {
        "Settings": config.DatabaseSettings,
    },
}


@pytest.mark.parametrize("module", sorted(SHIM))
def test_shim_reexports_the_native_objects(module: str) -> None:
    shim = importlib.import_module(module)
    for name, native in SHIM[module].items():
        assert getattr(shim, name) is native, f"{module}.{name}"
        assert getattr(aegis_tortoise, native.__name__) is native
        assert name in shim.__all__


def test_seed_import_statements() -> None:
    from aegis_shared.config import Settings
    from aegis_shared.database import DatabaseManager, TransactionManager, with_db_retry
    from aegis_shared.errors.exceptions import (
        DatabaseError,
        DuplicateEntityError,
        EntityNotFoundError,
    )

    assert DatabaseManager is aegis_tortoise.DatabaseManager
    assert TransactionManager is aegis_tortoise.TransactionManager
    assert with_db_retry is aegis_tortoise.with_db_retry
    assert Settings is aegis_tortoise.DatabaseSettings
    assert issubclass(DuplicateEntityError, aegis_tortoise.ServiceException)
    assert issubclass(EntityNotFoundError, aegis_tortoise.ServiceException)
    assert issubclass(DatabaseError, aegis_tortoise.ServiceException)


def test_errors_package_is_the_same_as_its_exceptions_module() -> None:
    errors_pkg = importlib.import_module("aegis_shared.errors")
    exceptions = importlib.import_module("aegis_shared.errors.exceptions")
    for name in exceptions.__all__:
        assert getattr(errors_pkg, name) is getattr(exceptions, name)


async def test_seed_settings_example_builds_a_working_manager(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from aegis_shared.config import Settings
    from aegis_shared.database import DatabaseManager

    for name in ("DATABASE_URL", "DATABASE_MODELS", "DATABASE_POOL_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(str(tmp_path))
    settings = Settings()
    db = DatabaseManager(
        database_url=settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout,
        pool_recycle=settings.database_pool_recycle,
    )
    try:
        async with db.session() as session:
            assert (await session.execute("SELECT :x", {"x": 1})).scalar() == 1
    finally:
        await db.close()
