"""Runnable examples (``examples.fastapi_app``)."""
