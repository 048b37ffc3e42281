"""``aegis_shared.errors.exceptions``: the seed's error classes and codes."""

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
    PoolTimeoutError,
    ServiceException,
    TransactionError,
    TransactionOutcomeUnknownError,
    ValidationError,
)

__all__ = [
    "AegisBaseException",
    "ConcurrentUpdateError",
    "ConfigurationError",
    "DatabaseConnectionError",
    "DatabaseError",
    "DuplicateEntityError",
    "EntityNotFoundError",
    "ErrorCode",
    "InvalidFilterError",
    "LockNotAvailableError",
    "PoolTimeoutError",
    "ServiceException",
    "TransactionError",
    "TransactionOutcomeUnknownError",
    "ValidationError",
]
