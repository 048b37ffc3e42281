"""Models of an app label other than "models", as a multi-app Tortoise project has them."""

from tortoise import fields
from tortoise.models import Model


class Product(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50)

    class Meta:
        app = "shop"
        table = "dropin_shop_product"
