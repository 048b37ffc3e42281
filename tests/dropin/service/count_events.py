"""A script of the service: counts events in a fresh process, with plain Tortoise.init."""

from tortoise import Tortoise, run_async

from tests.dropin.service.config import TORTOISE_ORM
from tests.dropin.service.models import Event


async def main() -> None:
    await Tortoise.init(config=TORTOISE_ORM)
    print(await Event.all().count(), ",".join(await Event.all().order_by("id")
                                              .values_list("title", flat=True)))


if __name__ == "__main__":
    run_async(main())
