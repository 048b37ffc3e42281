"""Models of the anomaly suite: a counter, on-call doctors, a job queue."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from aegis_tortoise.models import VersionedEntity

__all__ = ["Counter", "Doctor", "Job", "Tally"]


class Counter(Model):
    """A plain counter (no version field)."""

    id = fields.IntField(primary_key=True)
    value = fields.IntField(default=0)

    class Meta:
        table = "counters"


class Tally(VersionedEntity):
    """A counter with an optimistic version (VersionedEntity)."""

    value = fields.IntField(default=0)

    class Meta:
        table = "tallies"


class Doctor(Model):
    """An on-call doctor of a shift."""

    id = fields.IntField(primary_key=True)
    shift = fields.IntField(db_index=True)
    name = fields.CharField(max_length=50)
    on_call = fields.BooleanField(default=True)

    class Meta:
        table = "doctors"


class Job(Model):
    """A queued job; ``done`` counts how often it was processed."""

    id = fields.IntField(primary_key=True)
    status = fields.CharField(max_length=10, default="ready", db_index=True)
    done = fields.IntField(default=0)

    class Meta:
        table = "jobs"
