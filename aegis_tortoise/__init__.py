"""aegis-tortoise: the Aegis shared database API on Tortoise ORM and asyncpg."""

from aegis_tortoise._facade import Tortoise
from aegis_tortoise.config import DatabaseSettings, DatabaseURL, Settings, parse_database_url
from aegis_tortoise.errors import (
    AegisBaseException,
    ConcurrentUpdateError,
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseError,
    DuplicateEntityError,
    EntityNotFoundError,
    ErrorCode,
    InvalidFilterError,
    LockNotAvailableError,
    MultipleResultsFoundError,
    NoResultFoundError,
    PoolTimeoutError,
    ServiceException,
    TransactionConflictError,
    TransactionError,
    TransactionOutcomeUnknownError,
    ValidationError,
    translate_errors,
)
from aegis_tortoise.manager import DatabaseManager
from aegis_tortoise.models import (
    BaseEntity,
    KeysetPage,
    PaginatedResponse,
    SoftDeleteMixin,
    TimestampMixin,
    VersionedEntity,
)
from aegis_tortoise.repository import BaseRepository
from aegis_tortoise.retry import db_retry, is_transient, with_db_retry
from aegis_tortoise.session import Result, Row, Session
from aegis_tortoise.transactions import TransactionManager, transactional

__version__ = "0.1.0"

__all__ = [
    "AegisBaseException",
    "ConcurrentUpdateError",
    "BaseEntity",
    "BaseRepository",
    "ConfigurationError",
    "DatabaseConnectionError",
    "DatabaseError",
    "DatabaseManager",
    "DatabaseSettings",
    "DatabaseURL",
    "DuplicateEntityError",
    "EntityNotFoundError",
    "ErrorCode",
    "InvalidFilterError",
    "KeysetPage",
    "LockNotAvailableError",
    "MultipleResultsFoundError",
    "NoResultFoundError",
    "PaginatedResponse",
    "PoolTimeoutError",
    "Result",
    "Row",
    "ServiceException",
    "Session",
    "Settings",
    "SoftDeleteMixin",
    "TimestampMixin",
    "Tortoise",
    "TransactionConflictError",
    "TransactionError",
    "TransactionManager",
    "TransactionOutcomeUnknownError",
    "ValidationError",
    "VersionedEntity",
    "__version__",
    "db_retry",
    "is_transient",
    "parse_database_url",
    "transactional",
    "translate_errors",
    "with_db_retry",
]
