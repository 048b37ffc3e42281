"""The contended-counter row of the benchmark: one plain counter, one versioned."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

__all__ = ["BenchCounter", "BenchTally"]


class BenchCounter(Model):
    """A counter (for_update and SERIALIZABLE increments)."""

    id = fields.IntField(primary_key=True)
    value = fields.IntField(default=0)

    class Meta:
        table = "bench_counter"


class BenchTally(Model):
    """A counter with an optimistic version (expected_version increments)."""

    id = fields.IntField(primary_key=True)
    value = fields.IntField(default=0)
    version = fields.IntField(default=1)

    class Meta:
        table = "bench_tally"
        version_field = "version"
