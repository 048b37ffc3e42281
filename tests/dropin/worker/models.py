"""The worker's models."""

from tortoise import fields
from tortoise.models import Model


class Job(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100, unique=True)
    done = fields.BooleanField(default=False)
    attempts = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "worker_job"
