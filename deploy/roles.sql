-- Least-privileged PostgreSQL roles for Sluice, in two parts; applying either again is safe.
--
-- Part 1, as a database administrator (a role with CREATEROLE), once per cluster:
--   psql -v ON_ERROR_STOP=1 -f deploy/roles.sql
-- Part 2, as the schema's owner (the role that runs sluice migrate): nothing to do by hand. Every run of
-- schema.sql (sluice migrate) calls sluice.grant_roles(), which grants each role below that exists what
-- it may do; the end of this file calls it too when the schema is already there.
--
-- sluice_receiver  login, for `sluice receive`: adds stripe.event and clerk.event jobs in queue webhooks
--                  under their event's key (checked by the enqueue functions), reads the schema version.
--                  It cannot read a job, a payload or a dead letter.
-- sluice_enqueuer  group, for other services: adds jobs of ordinary kinds (not webhook events, Stripe actions
--                  or owner-only kinds; no reserved queue or key), reads the results of its own jobs.
-- sluice_billing   group: what sluice_enqueuer may, plus the Stripe action kinds, usage.record and
--                  billing.record_usage.
-- sluice_operator  group, for people in psql: pause, resume, cancel, retry and discard (recorded in
--                  sluice.operator_actions with the role and time), the operator views, and read billing.
-- sluice_api       login, for `sluice api`: the Stripe action kinds, billing.record_usage, its jobs' results.
--
-- Give the login roles a password (\password sluice_receiver) or a certificate; grant a group to a
-- service's own login role: GRANT sluice_enqueuer TO your_service. The schema owner need not be a
-- superuser: CREATE ROLE sluice_owner LOGIN; CREATE DATABASE sluice OWNER sluice_owner.

BEGIN;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_receiver') THEN
        CREATE ROLE sluice_receiver LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_api') THEN
        CREATE ROLE sluice_api LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_enqueuer') THEN
        CREATE ROLE sluice_enqueuer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_billing') THEN
        CREATE ROLE sluice_billing NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_operator') THEN
        CREATE ROLE sluice_operator NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE sluice_receiver IS 'sluice receive: adds verified webhook jobs only (deploy/roles.sql).';
COMMENT ON ROLE sluice_api IS 'sluice api: Stripe actions for users, usage, its own results (deploy/roles.sql).';
COMMENT ON ROLE sluice_enqueuer IS 'Other services: add jobs of ordinary kinds, read their results (deploy/roles.sql).';
COMMENT ON ROLE sluice_billing IS 'Services that also start Stripe actions and record usage (deploy/roles.sql).';
COMMENT ON ROLE sluice_operator IS 'Operators: dead letters, pauses, statistics, billing read-only (deploy/roles.sql).';

-- Nobody creates objects in public, where a function could shadow a built-in one for a role whose
-- search_path reaches it (PostgreSQL 15 and later start this way; older clusters did not).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Part 2: the grants, when the schema is already there and this role owns it (else sluice migrate does it).
DO $$
BEGIN
    IF to_regprocedure('sluice.grant_roles()') IS NOT NULL THEN
        IF sluice.is_owner(current_user) THEN
            PERFORM sluice.grant_roles();
        END IF;
    END IF;
END
$$;

COMMIT;
