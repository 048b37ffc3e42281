"""The hostile suite's fixtures (tests/hostile/fixtures.py)."""

from tests.hostile.fixtures import items

__all__ = ["items"]
