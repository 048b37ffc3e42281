"""A model in a non-default PostgreSQL schema (``Meta.schema``, which Tortoise 1.1.9 renders
as a schema-qualified table name); PostgreSQL only (sqlite has no schemas)."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

MODELS = ["tests.differential.schema_pg_models"]
SCHEMA = "aegis_other"


class Elsewhere(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=20, unique=True, source_field="label_text")
    qty = fields.IntField(default=0)

    class Meta:
        table = "schema_elsewhere"
        schema = SCHEMA
