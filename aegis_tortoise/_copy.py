"""create_many by binary COPY on PostgreSQL, for batches of ``COPY_THRESHOLD`` rows or more.

``INSERT ... SELECT FROM unnest(...)`` sends one array per column and makes the server
unpack them; binary ``COPY`` streams the rows as they are stored and skips the executor, but
returns nothing. The generated keys are therefore taken first, from the key's own sequence,
in one round trip (``SELECT nextval(seq) FROM generate_series(1, n)``), and sent with the
rows. The sequence moves exactly as the INSERT would have moved it (a rolled-back COPY
leaves a gap, as a rolled-back INSERT does).

Measured on the example ``users`` table (PostgreSQL 15, local socket, median of 5 paired
runs), COPY against ``unnest`` was 1.3-1.9x slower up to 20,000 rows (two more round trips,
and asyncpg encodes COPY rows in the event loop's thread, where the instances are built
meanwhile) and even from 50,000 (0.99-1.07x): the unique index on ``email`` dominates. So
``COPY_THRESHOLD`` is 50,000: above it COPY costs no more and keeps each statement's
server memory flat (bench/README.md, "Cost curves").
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from aegis_tortoise._bulk import Batch, BulkPlan, _table, insert_batch
from aegis_tortoise._keys import SEQUENCE_SQL

if TYPE_CHECKING:
    from aegis_tortoise.session import Session

__all__ = ["COPY_THRESHOLD", "copy_batch"]

#: Rows from which create_many sends a batch by COPY (measured: bench/curves.py).
COPY_THRESHOLD = 50_000

# The sequence as one regclass parameter: nextval($1::text::regclass) per row would look the
# name up per row (~2 us each).
_KEYS_SQL = "SELECT nextval($1::regclass) FROM generate_series(1, $2)"

#: (database, model) -> the key's sequence, or None when there is none or a BEFORE INSERT
#: trigger may replace the key (_keys.SEQUENCE_SQL; COPY fires such triggers too).
_sequences: dict[tuple[str, type[Any]], str | None] = {}


async def copy_batch(session: Session, plan: BulkPlan, batch: Batch, nrows: int) -> list[Any]:
    """COPY the prepared batch; returns the generated keys in row order (empty if none)."""
    model = plan.model
    meta = model._meta
    columns = [c.column for c in batch.sent] + [c.column for c, _ in batch.scalars]
    arrays: list[Any] = [*batch.arrays,
                         *(itertools.repeat(value, nrows) for _, value in batch.scalars)]
    keys: list[Any] = []
    session._wrote = True  # the connection directly, past LazyReads._note: mark it here
    async with session.connection.acquire_connection() as connection:
        if meta.pk.generated:
            where = (session.manager.url.masked(), model)
            if where not in _sequences:
                _sequences[where] = await connection.fetchval(
                    SEQUENCE_SQL, _table(model), meta.db_pk_column)
            sequence = _sequences[where]
            if sequence is not None:
                records = await connection.fetch(_KEYS_SQL, sequence, nrows)
                # In the order nextval gave them, as an INSERT of the rows in input order
                # would (a sequence may count down: no sorting).
                keys = [record[0] for record in records]
                columns.insert(0, meta.db_pk_column)
                arrays.insert(0, keys)
        if not meta.pk.generated or keys:
            await connection.copy_records_to_table(
                meta.db_table, records=zip(*arrays, strict=False), columns=columns,
                schema_name=meta.schema or None)
            return keys
    # No sequence behind the key (a default from a trigger, a function): unnest instead.
    return await insert_batch(session, plan, batch, nrows)
