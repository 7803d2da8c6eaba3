-- Least-privileged PostgreSQL roles for Sluice. Apply after schema.sql, as the role that owns the sluice
-- schema (the one that ran schema.sql); applying it again is safe:
--
--   psql -v ON_ERROR_STOP=1 -f deploy/roles.sql
--
-- sluice_receiver  a login role for `sluice receive`: it may add webhook jobs through
--                  sluice.enqueue_unique() and read sluice.schema_version (for /readyz), and nothing else.
--                  It cannot read a job, a payload or a dead letter. Give it a password
--                  (\password sluice_receiver) or a certificate, then point the receiver's DATABASE_URL at it.
-- sluice_enqueuer  a group role for other services that add jobs with sluice.enqueue() and friends, and read
--                  results with sluice.job_result(): GRANT sluice_enqueuer TO your_service;
--
-- The enqueue functions run as the schema's owner (SECURITY DEFINER), which is what lets these roles add
-- rows to sluice.jobs without holding any privilege on it. `sluice serve` and `sluice work` run as the owner.

BEGIN;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_receiver') THEN
        CREATE ROLE sluice_receiver LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_enqueuer') THEN
        CREATE ROLE sluice_enqueuer NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE sluice_receiver IS
    'sluice receive: may call sluice.enqueue_unique() and read sluice.schema_version, nothing else (deploy/roles.sql).';
COMMENT ON ROLE sluice_enqueuer IS
    'Other services that enqueue Sluice jobs: may call sluice.enqueue, enqueue_many and enqueue_unique (deploy/roles.sql).';

GRANT USAGE ON SCHEMA sluice TO sluice_receiver, sluice_enqueuer;

GRANT SELECT ON sluice.schema_version TO sluice_receiver;
GRANT EXECUTE ON FUNCTION
    sluice.enqueue_unique(text[], jsonb[], text[], text[], integer[], timestamptz[], integer[], boolean)
    TO sluice_receiver;

GRANT EXECUTE ON FUNCTION
    sluice.enqueue(text, jsonb, text, integer, timestamptz, integer, text, boolean),
    sluice.enqueue_many(text[], jsonb[], text[], integer[], timestamptz[], integer[], text[], boolean),
    sluice.enqueue_unique(text[], jsonb[], text[], text[], integer[], timestamptz[], integer[], boolean),
    sluice.job_result(bigint)
    TO sluice_enqueuer;

COMMIT;
