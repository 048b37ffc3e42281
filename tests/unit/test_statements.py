"""Which statements may skip BEGIN or the pool's reset query (aegis_tortoise._statements)."""

from __future__ import annotations

from aegis_tortoise._statements import is_plain_read, is_stateless


def test_statement_classification() -> None:
    assert is_plain_read('SELECT "id","email" FROM "users" WHERE "id"=$1 LIMIT $2')
    assert is_plain_read("SELECT COUNT(*) FROM \"users\" WHERE \"name\"::TEXT ILIKE $1")
    assert is_plain_read("select \"id\" from \"users\" where \"id\" in ($1,$2)")
    assert not is_plain_read('SELECT "id" FROM "users" WHERE "id"=$1 FOR UPDATE')
    assert not is_plain_read("SELECT pg_advisory_lock(1)")
    assert not is_plain_read("SELECT * INTO new_table FROM users")
    for hidden in ('SELECT "pg_advisory_lock"(42)',
                   "SELECT \"set_config\"('application_name', 'x', false)",
                   'SELECT pg_catalog."pg_advisory_lock"(1)',
                   "SELECT $$it's$$, pg_advisory_lock(1), 'x'",
                   "SELECT E'\\'', pg_advisory_lock(1)"):
        assert not is_plain_read(hidden), hidden
        assert not is_stateless(hidden), hidden
    assert not is_plain_read("SELECT nextval('users_id_seq')")
    assert not is_plain_read("WITH gone AS (DELETE FROM users RETURNING id) SELECT * FROM gone")
    assert not is_plain_read("SELECT my_function_that_writes()")
    assert not is_plain_read('INSERT INTO "users" ("email") VALUES ($1)')
    assert is_plain_read("SELECT 'set_config(' AS text_not_a_call")
    assert is_stateless('INSERT INTO "users" ("email") VALUES ($1) RETURNING "id"')
    assert is_stateless('UPDATE "users" SET "name"=$1 WHERE "id"=$2')
    assert is_stateless('INSERT INTO "public"."users" ("email","name") SELECT * FROM '
                        'unnest($1::VARCHAR(255)[],$2::NUMERIC(10,2)[]) WITH ORDINALITY')
    assert is_stateless('INSERT INTO "users" ("email") VALUES ($1) '
                        'ON CONFLICT ("email") DO NOTHING RETURNING "id"')
    assert is_stateless("WITH x AS (SELECT 1) SELECT * FROM x")
    assert not is_stateless("SET search_path TO other")
    assert not is_stateless("LISTEN channel")
    assert not is_stateless("SELECT set_config('search_path', 'x', false)")
    assert not is_stateless("DECLARE c CURSOR WITH HOLD FOR SELECT 1")
