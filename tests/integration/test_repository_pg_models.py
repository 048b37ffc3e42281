"""A PostgreSQL-only model for the repository tests (no tests here): an array column."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.contrib.postgres.fields import ArrayField
from tortoise.models import Model

SHEET_MODELS = ["tests.integration.test_repository_pg_models"]


class Sheet(Model):
    """``unnest`` would flatten an array column: create_many uses multi-row VALUES here."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50, unique=True)
    tags: Any = ArrayField(element_type="text")

    class Meta:
        table = "repo_sheets"
