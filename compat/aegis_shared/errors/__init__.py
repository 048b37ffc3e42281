"""``aegis_shared.errors``: the seed's error classes."""

from aegis_shared.errors.exceptions import *  # noqa: F403
from aegis_shared.errors.exceptions import __all__
