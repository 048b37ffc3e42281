"""A self-referencing foreign key to a unique non-key column (``to_field``)."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

MODELS = ["tests.integration.node_models"]


class Node(Model):
    """Nodes whose parent is named by its ``code`` (Tortoise creates
    ``parent_id REFERENCES rv_node (code)``, checked by PostgreSQL at the end of each
    statement)."""

    id = fields.IntField(primary_key=True)
    code = fields.CharField(max_length=16, unique=True)
    parent: fields.ForeignKeyNullableRelation[Node] = fields.ForeignKeyField(
        "models.Node", to_field="code", null=True, related_name="children")

    class Meta:
        table = "rv_node"
