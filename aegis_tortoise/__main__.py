"""``python -m aegis_tortoise``: see :mod:`aegis_tortoise.cli`."""

import sys

from aegis_tortoise.cli import main

sys.exit(main())
