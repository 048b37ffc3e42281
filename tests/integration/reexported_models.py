"""A model module that re-exports the example models under another module name."""

from aegis_tortoise.examples.models import Policy, User

__all__ = ["Policy", "User"]
