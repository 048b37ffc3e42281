"""The example service, kept importable here for checkouts: it lives in the package.

``uvicorn aegis_tortoise.examples.fastapi_app:app`` runs it from an install;
``uvicorn examples.fastapi_app:app`` still works inside a checkout.
"""

from aegis_tortoise.examples.fastapi_app import (
    PolicyCreate,
    PolicyOut,
    UserCreate,
    UserOut,
    UserRepository,
    app,
    create_app,
)

__all__ = ["PolicyCreate", "PolicyOut", "UserCreate", "UserOut", "UserRepository", "app",
           "create_app"]
