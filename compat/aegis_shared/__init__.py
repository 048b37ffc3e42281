"""Compatibility shim: the original Aegis shared library's import paths, served by
aegis_tortoise. It holds no logic, only re-exports."""
