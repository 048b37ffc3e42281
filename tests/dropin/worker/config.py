"""The worker's Tortoise config."""

import os

DB_URL = os.environ.get("DROPIN_DB_URL", "sqlite://:memory:")
MODULES = {"models": ["tests.dropin.worker.models"]}

TORTOISE_ORM = {
    "connections": {"default": DB_URL},
    "apps": {"models": {"models": MODULES["models"], "default_connection": "default"}},
}
