"""Primary keys: every method that takes an id answers a key the way Tortoise does.

For int (Item), UUID (Tag) and char (Badge) keys, generated keys (valid, missing, of the
wrong type, out of range, lone surrogates) go to get_by_id, get, exists, get_by_ids, update
and delete. Where ``Model.filter(pk=key).first()`` finds the row, each method finds it; where
it finds none, none does; where Tortoise raises, every method raises our ValidationError
(the same for all of them, issue 11 item 11) and nothing is written.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tortoise.models import Model

from aegis_tortoise import BaseRepository, EntityNotFoundError
from tests.differential import strategies as s
from tests.differential.harness import (
    Harness,
    attempt,
    check_ours,
    harness,
    scaled,
    seed,
    values,
)
from tests.differential.models import Badge, Item, Tag

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ODD_KEYS = [None, "", "1", "abc", 1.5, 2.0, True, 2**31, 2**63, -2**63 - 1, "\ud800", "a\x00",
            [1], "nope", 12, "e3e70682-c209-4cac-629f-6fbed82c07cd", "x" * 20]


def keys_for(model: type[Model], data: s.Dataset) -> st.SearchStrategy[Any]:
    stored: list[Any] = {Item: [r["id"] for r in data.items],
                         Tag: [r["id"] for r in data.tags],
                         Badge: [r["code"] for r in data.badges]}[model]
    options: list[st.SearchStrategy[Any]] = [st.sampled_from(ODD_KEYS), st.integers(-3, 9)]
    if stored:
        options.append(st.sampled_from(stored))
        if model is Tag:
            options.append(st.sampled_from([str(k) for k in stored]))
    if model is Tag:
        options.append(st.uuids())
    if model is Badge:
        options.append(s.texts(10))
    return st.one_of(*options)


@pytest.fixture
def h(backend: str, db_url: str) -> Any:
    with harness(backend, db_url) as running:
        yield running


@pytest.mark.parametrize("model", [Item, Tag, Badge], ids=["int", "uuid", "char"])
def test_keys(h: Harness, model: type[Model]) -> None:
    backend = h.backend

    @scaled(1)
    @given(st.data())
    def check(draw: st.DataObject) -> None:
        data = draw.draw(s.datasets(backend, max_items=3))
        key = draw.draw(keys_for(model, data))
        change = {Item: {"note": "changed"}, Tag: {"weight": 2.5}, Badge: {"title": "t"}}[model]

        async def case() -> None:
            await seed(h, data)
            before = await h.snapshot()

            async def reference() -> Any:
                async with h.db.session():
                    found = await model.filter(pk=key).first()
                return None if found is None else values(found)

            ref = await attempt(reference)

            async def call(method: str) -> Any:
                async with h.db.session() as session:
                    repo = BaseRepository(session, model)
                    if method == "get_by_id":
                        got = await repo.get_by_id(key)
                        return None if got is None else values(got)
                    if method == "get":
                        try:
                            return values(await repo.get(key))
                        except EntityNotFoundError:
                            return None
                    if method == "exists":
                        return await repo.exists(key)
                    if method == "get_by_ids":
                        return [values(x) for x in await repo.get_by_ids([key])]
                    if method == "update":
                        got = await repo.update(key, **change)
                        return None if got is None else "updated"
                    return await repo.delete(key)

            methods = ["get_by_id", "get", "exists", "get_by_ids", "update", "delete"]
            if model is Badge and backend == "sqlite":
                # Badge.stamp is TimeField(auto_now=True): on sqlite no one can write it
                # (Tortoise 1.1.9's own save() fails alike; test_update_time_auto_now).
                methods.remove("update")
            outcomes = {m: await attempt(lambda m=m: call(m)) for m in methods}  # type: ignore[misc]
            refused = [m for m, o in outcomes.items() if not o.ok]
            if ref.ok and ref.value is None and refused:
                # No row for this key (None, 1.5, a text for an int key...): the repository
                # may refuse such a key as invalid, but then in every method alike.
                for method, outcome in outcomes.items():
                    check_ours(outcome, f"{method}({key!r}) (refused by {refused}: "
                                        f"{outcomes[refused[0]].error!r})")
                assert await h.snapshot() == before, f"{key!r}: a refused call changed the database"
            elif ref.ok:
                found = ref.value
                expected = {"get_by_id": found, "get": found, "exists": found is not None,
                            "get_by_ids": [found] if found is not None else [],
                            "update": "updated" if found is not None else None,
                            "delete": found is not None}
                for method, outcome in outcomes.items():
                    assert outcome.ok, (
                        f"{method}({key!r}): Tortoise answered, we raised {outcome.error!r}")
                    assert outcome.value == expected[method], f"{method}({key!r})"
            else:
                for method, outcome in outcomes.items():
                    check_ours(outcome, f"{method}({key!r}) (Tortoise raised {ref.error!r})")
                assert await h.snapshot() == before, f"{key!r}: a failed call changed the database"

        h.run(case)

    check()


def test_uuid_text_and_object_keys_agree(h: Harness) -> None:
    """A UUID key given as text finds the same row as the UUID object."""
    key = uuid.UUID("e3e70682-c209-4cac-629f-6fbed82c07cd")
    data = s.Dataset([], [{"id": 1, "num": 1, "name": "a", "token": key, "label": "l",
                           "status": "s"}],
                     [{"id": key, "label": "t", "weight": 1.0, "item_id": 1}], [])

    async def case() -> None:
        await seed(h, data)
        async with h.db.session() as session:
            repo = BaseRepository(session, Tag)
            by_object = await repo.get_by_id(key)
            by_text = await repo.get_by_id(str(key))
        assert by_object is not None
        assert by_text is not None
        assert values(by_object) == values(by_text)

    h.run(case)
