"""``aegis_shared.config``: the seed's ``Settings``."""

from aegis_tortoise.config import DatabaseSettings, Settings

__all__ = ["DatabaseSettings", "Settings"]
