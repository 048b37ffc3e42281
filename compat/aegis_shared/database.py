"""``aegis_shared.database``: the seed's database API."""

from aegis_tortoise.errors import (
    ConcurrentUpdateError,
    DatabaseConnectionError,
    DatabaseError,
    DuplicateEntityError,
    EntityNotFoundError,
    InvalidFilterError,
    LockNotAvailableError,
    PoolTimeoutError,
    TransactionError,
    TransactionOutcomeUnknownError,
    ValidationError,
)
from aegis_tortoise.manager import DatabaseManager
from aegis_tortoise.repository import BaseRepository
from aegis_tortoise.retry import db_retry, is_transient, with_db_retry
from aegis_tortoise.session import Result, Session
from aegis_tortoise.transactions import TransactionManager, transactional

__all__ = [
    "ConcurrentUpdateError",
    "BaseRepository",
    "DatabaseConnectionError",
    "DatabaseError",
    "DatabaseManager",
    "DuplicateEntityError",
    "EntityNotFoundError",
    "InvalidFilterError",
    "LockNotAvailableError",
    "PoolTimeoutError",
    "Result",
    "Session",
    "TransactionError",
    "TransactionManager",
    "TransactionOutcomeUnknownError",
    "ValidationError",
    "db_retry",
    "is_transient",
    "transactional",
    "with_db_retry",
]
