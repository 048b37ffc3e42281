"""``aegis_shared.errors``: the seed's error classes (the same names as ``.exceptions``)."""

from aegis_shared.errors.exceptions import *  # noqa: F403 - one list of names, kept there
from aegis_shared.errors.exceptions import __all__ as __all__
