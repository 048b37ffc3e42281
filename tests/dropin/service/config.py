"""The service's Tortoise config, as plain-Tortoise services write it."""

import os

DB_URL = os.environ.get("DROPIN_DB_URL", "sqlite://:memory:")

TORTOISE_ORM = {
    "connections": {"default": DB_URL},
    "apps": {"models": {"models": ["tests.dropin.service.models"],
                        "default_connection": "default"}},
}

# The third app's config: naive datetimes, in a time zone other than UTC.
TORTOISE_ORM_NAIVE = {**TORTOISE_ORM, "use_tz": False, "timezone": "Asia/Tokyo"}
