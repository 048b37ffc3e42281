"""``aegis_shared.errors.exceptions``: the seed's error classes and codes."""

from aegis_tortoise.errors import (
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
