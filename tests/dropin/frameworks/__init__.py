"""One small service per framework Tortoise integrates with (Starlette, Sanic, aiohttp,
Quart, BlackSheep), each registered with ``register_tortoise`` from the module that
``DROPIN_REGISTER`` names: Tortoise's ``tortoise.contrib.<framework>`` or this library's
``aegis_tortoise.contrib.<framework>``. Their suites are in ``frameworks_tests/``."""
