"""Benchmark suite of issue 5: raw asyncpg, SQLAlchemy 2, plain Tortoise and aegis-tortoise.

Run it with ``make bench`` or ``python bench/run.py --help``; results are in bench/README.md.
"""
