from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "users" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "deleted_at" TIMESTAMPTZ,
    "id" SERIAL NOT NULL PRIMARY KEY,
    "email" VARCHAR(255) NOT NULL UNIQUE,
    "name" VARCHAR(100) NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx_users_deleted_f27077" ON "users" ("deleted_at");
COMMENT ON COLUMN "users"."created_at" IS 'Creation time (UTC)';
COMMENT ON COLUMN "users"."updated_at" IS 'Last update time (UTC)';
COMMENT ON COLUMN "users"."deleted_at" IS 'Soft-delete time (UTC), or NULL';
COMMENT ON TABLE "users" IS 'A user (the seed''s ``users`` table).';
        CREATE TABLE IF NOT EXISTS "policies" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "deleted_at" TIMESTAMPTZ,
    "id" SERIAL NOT NULL PRIMARY KEY,
    "title" VARCHAR(200) NOT NULL,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_policies_deleted_df0e19" ON "policies" ("deleted_at");
COMMENT ON COLUMN "policies"."created_at" IS 'Creation time (UTC)';
COMMENT ON COLUMN "policies"."updated_at" IS 'Last update time (UTC)';
COMMENT ON COLUMN "policies"."deleted_at" IS 'Soft-delete time (UTC), or NULL';
COMMENT ON TABLE "policies" IS 'A policy owned by a user (the seed''s ``policies`` table).';"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP TABLE IF EXISTS "policies";
        DROP TABLE IF EXISTS "users";"""


MODELS_STATE = (
    "eJztWW1T4jAQ/iuZfjmcUUc4Uee+VcSRE8GRenfjzU0JbYCMbVLb9LDj8d8vSVv6Aq3g4S"
    "gen4TN7nb77JNkH3lSbGoiy9u/phY2AuULeFIItBH/kFvZBQp0nMQuDAwOLOnqCB+MpBEO"
    "POZCg3H7EFoe4iYTeYaLHYYpEd4qkP4BoBOCTDAIAAS+h1xQYWMEPITMTx7o9+Ok/T6QD9"
    "rZF+lNavD8mIz+OZNP8IOPdEZHiHu7PN/PX9yMiYke+atEX517fYiRZWagwaZIIO06Cxxp"
    "axF2Lh1FkQPdoJZvk8TZCdiYkpk3JkxYR4ggFzIk0jPXF2AR37IiXGP8wkoTl7DEVIyJht"
    "C3BOQiOiwgsSm63ulqeq+p6boy1444IoVrZDIoEa3kpXry7UeihL1a9fD48OTz0eEJd5Fl"
    "zizH0/DRCTBhoISnoylTuQ4ZDD0kxgmohosEEjpk8+Ce8RWGbbQY4WxkDmkzCt2PP+Rxj1"
    "EuAz42JMgn3H459EpDFM4/A1EXqNxqjZ08xwt6wQPNLrGCiAMlwGutq2ZPU6+uRWbb8x4s"
    "CaiqNcVKTVqDnLVyJOugfB+HG3yWBHxvaRdAfAV33U5T4k09NnLlExM/7U4RNUGfUZ3QiQ"
    "7NFF1jawwj90xo4DvmC2mQjdwgGrShx0BY/f/ChBi3FBWi6hMm8GsGvYwJ2cg1MCEibgkR"
    "1nASKz06ZHth7Ske7ALqgs5tu70cITaXAPNnAcPMQvPNb4yhu7jxs4BczzlA72e/L3/j2v"
    "BRtxAZsbG4Zg8OSnr7Tb1pXKg3Fe6Va1gnWqqFa9PsacunJX2lcSYV8fxMswkgr2GsEYPi"
    "8H7hVCPgmkf3nLoIj8glCiTILV4RJMYi5kZT+G2UZsPAncbsia3JSenCyWyyTpOKv3t4BM"
    "qdrvYa6llTkQgPoHE/ga6pZ6AWK7RGc5aZ7/ySXbPzFkjgSIIj3kLUnEZ9gSaKu1GsiMQL"
    "LS2HFkgWGV+qfJYL2oqcrcjZipytyHl7GmxFzlbkKFuRM38WIBtiaxWRMwtYj8h52/s2K3"
    "Hq9WUkTr1eLHHEWlbiyL8rwBv7f0AJWV1KQlZLJGQ1lJBzgqd4Pk8akf6VINuM0yjy/PIG"
    "WXJYKFZCye8RG9aKIi00fU0FoyIXG2NlgYaJVkpVDEx8npMxxTBsJcj7kiC/uUiMdtiyR2"
    "Iq5AOeiq9y64hNtQLCkfsHRHdtd04aXf5EhsiCkflrr9sp0M9JSH5WxgYDf4CFvU38/2UJ"
    "uAKMzBQcY1q5Un/k4W60u6f58VYkOF3tul//ZTb9C2x+aGg="
)
