"""``aegis_shared.errors``: the seed's error classes."""

from aegis_shared.errors.exceptions import (
    AegisBaseException,
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseError,
    DuplicateEntityError,
    EntityNotFoundError,
    ErrorCode,
    InvalidFilterError,
    PoolTimeoutError,
    ServiceException,
    TransactionError,
    TransactionOutcomeUnknownError,
    ValidationError,
)

__all__ = [
    "AegisBaseException",
    "ConfigurationError",
    "DatabaseConnectionError",
    "DatabaseError",
    "DuplicateEntityError",
    "EntityNotFoundError",
    "ErrorCode",
    "InvalidFilterError",
    "PoolTimeoutError",
    "ServiceException",
    "TransactionError",
    "TransactionOutcomeUnknownError",
    "ValidationError",
]
