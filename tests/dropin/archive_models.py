"""Models served by a second connection of a Tortoise config."""

from tortoise import fields
from tortoise.models import Model


class Record(Model):
    id = fields.IntField(primary_key=True)
    text = fields.CharField(max_length=50)

    class Meta:
        app = "archive"
        table = "dropin_archive_record"
