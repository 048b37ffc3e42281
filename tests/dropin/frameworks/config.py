"""The services' Tortoise config, and where register_tortoise comes from."""

import importlib
import os
from types import ModuleType

DB_URL = os.environ.get("DROPIN_DB_URL", "sqlite://:memory:")

TORTOISE_ORM = {
    "connections": {"default": DB_URL},
    "apps": {"models": {"models": ["tests.dropin.frameworks.models"],
                        "default_connection": "default"}},
    "use_tz": True,
    "timezone": "Asia/Seoul",
}


def contrib(framework: str) -> ModuleType:
    """The one line a service changes, as an environment variable for the test runs."""
    return importlib.import_module(
        os.environ.get("DROPIN_REGISTER", "tortoise.contrib.{}").format(framework))
