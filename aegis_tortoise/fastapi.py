"""FastAPI integration: one session per request, committed before the response is sent.

Needs the ``fastapi`` extra (``pip install 'aegis-tortoise[fastapi]'``, FastAPI >= 0.121).

.. code-block:: python

    db = DatabaseManager()                        # DATABASE_URL, DATABASE_MODELS
    DbSession = Annotated[Session, session_dependency(db)]

    @app.post("/users")
    async def create_user(data: UserCreate, session: DbSession) -> UserOut: ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Depends, params

from aegis_tortoise._register import (
    RegisterTortoise,
    register_tortoise,
    test_manager,
    tortoise_exception_handlers,
)
from aegis_tortoise.manager import DatabaseManager
from aegis_tortoise.session import Session

__all__ = [
    "RegisterTortoise",
    "register_tortoise",
    "session_dependency",
    "tortoise_exception_handlers",
]


def session_dependency(db: DatabaseManager) -> params.Depends:
    """A FastAPI dependency that gives each request its own session of ``db``.

    The session commits when the endpoint returns and rolls back when it raises (an
    ``HTTPException`` or a :class:`~aegis_tortoise.ServiceException` included), both before
    the response is sent: the dependency is declared with ``scope="function"``, because with
    FastAPI's default scope for dependencies with ``yield`` the commit would run after the
    client had already received a success, and a failed commit could no longer change the
    response. A commit error (e.g. a deferred constraint) therefore reaches the app's
    exception handlers. One dependency object per request is shared by every parameter that
    uses it (FastAPI's dependency cache), so they all see one transaction.

    The generator itself is ``session_dependency(db).dependency``, for use in other
    dependencies.

    Returns:
        A ``Depends`` marker: ``session: Session = session_dependency(db)`` or
        ``Annotated[Session, session_dependency(db)]``.
    """

    async def request_session() -> AsyncIterator[Session]:
        # Under the pytest plugin's app_client, requests run on the test's manager.
        manager = test_manager.get() or db
        async with manager.session() as session:
            yield session

    dependency: params.Depends = Depends(request_session, scope="function")
    return dependency
