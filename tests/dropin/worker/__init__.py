"""A plain-Tortoise worker script (a job queue drained in batches), as workers write it.

Its one drop-in line is where ``Tortoise`` comes from: ``DROPIN_TORTOISE`` names the module
(``tortoise`` or ``aegis_tortoise``) so the same code runs on both.
"""
