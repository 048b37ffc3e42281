"""The services' model."""

from tortoise import fields
from tortoise.models import Model


class Item(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "fw_item"

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "created_at": self.created_at.isoformat()}
