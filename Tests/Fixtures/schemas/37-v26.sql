-- Sluice: the whole database schema, and the operators' manual for it.
--
-- Apply with `psql -v ON_ERROR_STOP=1 -f schema.sql` or `sluice migrate`. Applying it again is safe, and a
-- database made by any earlier schema.sql is upgraded in place without losing a row: the whole file runs
-- in one transaction under an advisory lock (two deploys applying it at once take turns), the
-- "Upgrades" section alters what older versions made, and everything else is created only if missing or
-- replaced in place. `sluice migrate --dry-run` lists the upgrade steps without applying them.
--
-- The file reads top-down: version guard, upgrades, the queue (and who may enqueue what), the operators'
-- API, the billing tables, reading events and billing.write, the event families, access and usage,
-- analytics, retention, the roles' grants, and the version stamp last, so a run that fails leaves the old
-- version recorded.
--
-- Everyday operator commands:
--   SELECT * FROM sluice.queue_stats;                        -- what is waiting, running, dead
--   SELECT * FROM sluice.dead_letter_summary;                -- which kinds die, and why
--   SELECT id, kind, reason, errors -> -1 ->> 'error' FROM sluice.dead_letters ORDER BY died_at DESC;
--   SELECT sluice.retry_dead(42);                            -- one dead letter back to the queue
--   SELECT sluice.retry_dead_kind('stripe.event');           -- every dead letter of a kind
--   SELECT sluice.discard_dead(42);                          -- forget one
--   SELECT sluice.pause_queue('webhooks');  SELECT sluice.resume_queue('webhooks');
--   SELECT sluice.enqueue('sluice.noop', '{}');              -- a smoke test
--   SELECT * FROM billing.user_access;                       -- who has access, on which plan, and why
--   SELECT * FROM sluice.settings;  SELECT * FROM billing.settings;   -- retention and other settings

BEGIN;

-- "already exists, skipping" notices on a re-run are expected; keep psql's output to what matters.
SET LOCAL client_min_messages = warning;

-- The version of this file, its one literal: every change to schema.sql raises it (make test fails
-- otherwise). serves_from is the oldest version whose Sluice release still works against this schema:
-- changes are additive first and removals a release later, so it stays below the version until a
-- release removes something an older one uses.
SET LOCAL sluice.schema_version = 26;
SET LOCAL sluice.serves_from = 2;

-- One key for every run of this file, so concurrent migrations queue up behind each other.
DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtextextended('sluice.schema', 0)); END $$;

CREATE SCHEMA IF NOT EXISTS sluice;
COMMENT ON SCHEMA sluice IS
    'Sluice''s durable job queue. Jobs wait and run in sluice.jobs; failures that used up their attempts '
    'rest in sluice.dead_letters. Call sluice.enqueue() to add work; see sluice.queue_stats for an overview.';

-- ---------------------------------------------------------------------------------------------------
-- Version guard
-- ---------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS sluice.schema_version (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    version     integer     NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    serves_from integer
);
COMMENT ON TABLE sluice.schema_version IS
    'The version of schema.sql last applied to this database (one row). A Sluice release built for version W '
    'works against it while serves_from <= W <= version; otherwise it claims nothing, says so once in its log, '
    'and its /readyz answers 503 naming both versions.';

-- Refuse to run an older schema.sql over a newer database: it would replace newer functions with old ones.
DO $$
DECLARE
    found_version integer;
    this_version  integer := current_setting('sluice.schema_version')::integer;
BEGIN
    SELECT version INTO found_version FROM sluice.schema_version;
    IF found_version > this_version THEN
        RAISE EXCEPTION 'sluice schema: this database is at version %, newer than this schema.sql (version %)',
            found_version, this_version
            USING HINT = 'Apply the schema.sql of the newest Sluice release instead.';
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS sluice.schema_upgrades (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_version integer,
    to_version   integer     NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    steps        text[]      NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE sluice.schema_upgrades IS
    'Every run of schema.sql that created the schema or changed its version, with the upgrade steps it took '
    '(from_version NULL: a fresh install).';

-- ---------------------------------------------------------------------------------------------------
-- Upgrades
--
-- Steps that bring a database made by an earlier schema.sql to this one. They come before everything
-- else because PostgreSQL checks views, indexes and SQL functions against the columns they name when
-- they are created. Versions 1 and 2 were each used by several different files, so a step never trusts
-- the version: it looks at the catalog and acts only where the database differs (a missing column, an
-- old constraint), which also makes every step safe to run twice. On a fresh database there is nothing
-- to upgrade and every step passes. Each step that acts records itself with sluice.note_upgrade().
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION sluice.note_upgrade(step text) RETURNS void
LANGUAGE sql AS $$
    SELECT set_config('sluice.upgrade_steps',
                      concat_ws(E'\n', nullif(current_setting('sluice.upgrade_steps', true), ''), step), true);
$$;
COMMENT ON FUNCTION sluice.note_upgrade(text) IS
    'Records one upgrade step taken by this run of schema.sql (listed by sluice migrate and --dry-run, and kept '
    'in sluice.schema_upgrades).';

CREATE OR REPLACE FUNCTION sluice.has_column(table_name regclass, column_name text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_attribute a
                   WHERE a.attrelid = table_name AND a.attname = column_name AND a.attnum > 0 AND NOT a.attisdropped);
$$;
COMMENT ON FUNCTION sluice.has_column(regclass, text) IS 'Whether a table has a column: what upgrade steps look at.';

-- Adds a column an earlier version lacked, where the table exists (a fresh install creates it whole below).
CREATE OR REPLACE FUNCTION sluice.add_missing_column(table_name text, column_name text, definition text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF to_regclass(table_name) IS NOT NULL AND NOT sluice.has_column(to_regclass(table_name), column_name) THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s', table_name, column_name, definition);
        PERFORM sluice.note_upgrade(format('add column %s.%s %s', table_name, column_name, definition));
    END IF;
END
$$;
COMMENT ON FUNCTION sluice.add_missing_column(text, text, text) IS
    'Upgrade step: adds table_name.column_name with the given type and default when the table exists without it.';

-- Version 3: the oldest tables grew columns; each is added where it is missing.
DO $$
BEGIN
    PERFORM sluice.add_missing_column('sluice.schema_version', 'serves_from', 'integer');
    PERFORM sluice.add_missing_column('sluice.kinds', 'timeout_seconds', 'double precision');
    PERFORM sluice.add_missing_column('billing.subscriptions', 'billing_interval', 'text');
    PERFORM sluice.add_missing_column('billing.subscriptions', 'interval_count', 'integer');
    PERFORM sluice.add_missing_column('billing.subscriptions', 'created_at', 'timestamptz');
    PERFORM sluice.add_missing_column('billing.invoices', 'first_failed_at', 'timestamptz');
    PERFORM sluice.add_missing_column('billing.usage_events', 'report_error', 'text');
    -- Version 5: who enqueued a job, so only that role reads its result.
    PERFORM sluice.add_missing_column('sluice.jobs', 'enqueued_by', 'text DEFAULT SESSION_USER');
    PERFORM sluice.add_missing_column('sluice.dead_letters', 'enqueued_by', 'text');
    PERFORM sluice.add_missing_column('sluice.job_results', 'enqueued_by', 'text');
    -- Version 7: the status a subscription's last write came from, for same-second ties.
    PERFORM sluice.add_missing_column('billing.subscriptions', 'previous_status', 'text');
    -- Version 8: a user's link to a deleted customer is kept as history when a later one replaces it.
    PERFORM sluice.add_missing_column('billing.customer_links', 'unlinked_at', 'timestamptz');
    -- Version 13: what the app's API shows of an invoice.
    PERFORM sluice.add_missing_column('billing.invoices', 'hosted_invoice_url', 'text');
    PERFORM sluice.add_missing_column('billing.invoices', 'created_at', 'timestamptz');
END
$$;
COMMENT ON COLUMN sluice.schema_version.serves_from IS
    'The oldest schema version whose release still works against this one (NULL: only this version).';

DO $$
BEGIN
    -- Version 24: sluice.member_of_any takes the group it must leave out.
    IF to_regprocedure('sluice.member_of_any(text, text[])') IS NOT NULL THEN
        DROP FUNCTION sluice.member_of_any(text, text[]);
        PERFORM sluice.note_upgrade('sluice.member_of_any takes the group to leave out');
    END IF;
END
$$;

DO $$
BEGIN
    -- Version 8: one current customer per user (a partial unique index below), no longer one ever.
    IF to_regclass('billing.customer_links') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = to_regclass('billing.customer_links') AND conname = 'customer_links_user_id_key') THEN
        ALTER TABLE billing.customer_links DROP CONSTRAINT customer_links_user_id_key;
        PERFORM sluice.note_upgrade('billing.customer_links: one current customer per user, earlier ones kept');
    END IF;
END
$$;

DO $$
BEGIN
    -- Version 7: the subscription family also takes the event's previous_attributes.
    IF to_regprocedure('billing.apply_stripe_subscription_event(text, jsonb, text, bigint)') IS NOT NULL THEN
        DROP FUNCTION billing.apply_stripe_subscription_event(text, jsonb, text, bigint);
        PERFORM sluice.note_upgrade('billing.apply_stripe_subscription_event takes previous_attributes');
    END IF;
END
$$;

DO $$
BEGIN
    -- Version 7: a waiting job holding a deleted user's data is discarded with reason erased.
    IF to_regclass('sluice.dead_letters') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_constraint
                       WHERE conrelid = to_regclass('sluice.dead_letters') AND conname = 'dead_letters_reason_valid'
                         AND pg_get_constraintdef(oid) LIKE '%erased%') THEN
        ALTER TABLE sluice.dead_letters DROP CONSTRAINT IF EXISTS dead_letters_reason_valid;
        ALTER TABLE sluice.dead_letters ADD CONSTRAINT dead_letters_reason_valid
            CHECK (reason IN ('attempts_exhausted', 'permanent_failure', 'lease_expired', 'erased'));
        PERFORM sluice.note_upgrade('sluice.dead_letters.reason may be erased');
    END IF;
END
$$;

DO $$
BEGIN
    -- The index of unreported uses once included refused ones too; it is made again below.
    IF pg_get_indexdef(to_regclass('billing.usage_events_unreported')) NOT LIKE '%report_error%' THEN
        DROP INDEX billing.usage_events_unreported;
        PERFORM sluice.note_upgrade('billing.usage_events_unreported also leaves out uses Stripe refused');
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('sluice.kinds') IS NULL THEN
        RETURN;
    END IF;
    -- The first version made max_attempts required; a kind may now set only a timeout.
    IF EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = 'sluice.kinds'::regclass AND attname = 'max_attempts' AND attnotnull) THEN
        ALTER TABLE sluice.kinds ALTER COLUMN max_attempts DROP NOT NULL;
        PERFORM sluice.note_upgrade('sluice.kinds.max_attempts may be NULL (the default)');
    END IF;
    -- A timeout must be finite: the first check let 'Infinity' through. Such a row goes back to the default.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'sluice.kinds'::regclass AND conname = 'kinds_timeout_seconds_check'
                     AND pg_get_constraintdef(oid) LIKE '%Infinity%') THEN
        UPDATE sluice.kinds SET timeout_seconds = NULL WHERE timeout_seconds = 'Infinity';
        ALTER TABLE sluice.kinds DROP CONSTRAINT IF EXISTS kinds_timeout_seconds_check;
        ALTER TABLE sluice.kinds ADD CONSTRAINT kinds_timeout_seconds_check
            CHECK (timeout_seconds > 0 AND timeout_seconds < 'Infinity');
        PERFORM sluice.note_upgrade('sluice.kinds.timeout_seconds must be finite (an infinite one is reset to the default)');
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.subscriptions') IS NULL THEN
        RETURN;  -- a fresh install, or a database from before the billing model
    END IF;
    -- Subscriptions written before billing_interval existed: take it from their first item, as writes do now.
    UPDATE billing.subscriptions
    SET billing_interval = items -> 0 ->> 'interval',
        interval_count = coalesce((items -> 0 ->> 'interval_count')::integer, 1)
    WHERE billing_interval IS NULL AND items -> 0 ->> 'interval' IS NOT NULL;
    IF FOUND THEN
        PERFORM sluice.note_upgrade('billing.subscriptions: billing_interval and interval_count filled from the first item');
    END IF;
    -- Invoices that failed before first_failed_at existed: the earliest failure their audit entries show.
    UPDATE billing.invoices i
    SET first_failed_at = (SELECT min(p.event_created)
                           FROM billing.audit_log a
                           JOIN billing.processed_events p ON p.source = 'stripe' AND p.event_id = a.event_id
                           WHERE a.entity = 'invoices' AND a.entity_id = i.id
                             AND a.event_type = 'invoice.payment_failed')
    WHERE i.first_failed_at IS NULL AND i.last_event_type = 'invoice.payment_failed';
    IF FOUND THEN
        PERFORM sluice.note_upgrade('billing.invoices: first_failed_at filled from the audit log');
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- The queue: tables
-- ---------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS sluice.jobs (
    id           bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    queue        text        NOT NULL DEFAULT 'default',
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL DEFAULT '{}',
    priority     integer     NOT NULL DEFAULT 0,
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempt      integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL DEFAULT 20,
    state        text        NOT NULL DEFAULT 'available',
    locked_by    text,
    locked_until timestamptz,
    unique_key   text,
    errors       jsonb       NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    enqueued_by  text                 DEFAULT SESSION_USER,
    -- Only the queue's own invariants are checked here. PostgreSQL parses and plans a table's CHECK
    -- expressions anew for every statement that writes it: the four checks of input this table once had
    -- cost about as much as the rest of a one-row INSERT. The enqueue functions, the only way in for any
    -- role but the owner, refuse that input themselves (22023, naming what is wrong).
    CONSTRAINT jobs_state_valid CHECK (state IN ('available', 'running')),
    CONSTRAINT jobs_running_has_lease CHECK ((state = 'running') = (locked_until IS NOT NULL))
) WITH (
    -- Room on each page for heartbeat updates to stay HOT (no index entry rewritten).
    fillfactor = 80,
    -- Rows are deleted as fast as they are added: vacuum early so dead tuples do not pile up.
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
-- The table's own upgrade steps, here before any statement below takes a weaker lock on it (COMMENT and
-- CREATE INDEX IF NOT EXISTS take theirs even when nothing changes): an ALTER raising a lock held until the
-- commit could deadlock with a transaction queued behind it.
DO $$
BEGIN
    -- Version 20: only the queue's invariants are checked by the table; the enqueue functions check input.
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'sluice.jobs'::regclass
                 AND conname IN ('jobs_kind_not_empty', 'jobs_queue_not_empty', 'jobs_payload_is_object',
                                 'jobs_max_attempts_positive')) THEN
        ALTER TABLE sluice.jobs
            DROP CONSTRAINT IF EXISTS jobs_kind_not_empty,
            DROP CONSTRAINT IF EXISTS jobs_queue_not_empty,
            DROP CONSTRAINT IF EXISTS jobs_payload_is_object,
            DROP CONSTRAINT IF EXISTS jobs_max_attempts_positive;
        PERFORM sluice.note_upgrade('sluice.jobs: input checked by the enqueue functions, not per statement by the table');
    END IF;
    -- Version 21: a payload is compressed when its row passes about 2 kB, as most Stripe events do. pglz,
    -- PostgreSQL's default, was a sixth of the database's work for a batch of 3.5 kB events, lz4 a fortieth
    -- of it (callgrind), and a row here lives seconds: lz4, where the server is built with it (Debian's is;
    -- asked of the settings, not by trying). A dump of such a database restores only into a server with
    -- lz4, or with pg_restore --no-toast-compression.
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        IF (SELECT a.attcompression FROM pg_attribute a
            WHERE a.attrelid = 'sluice.jobs'::regclass AND a.attname = 'payload') <> 'l' THEN
            ALTER TABLE sluice.jobs ALTER COLUMN payload SET COMPRESSION lz4;
            -- A fresh install has no version recorded yet: nothing was upgraded.
            IF EXISTS (SELECT 1 FROM sluice.schema_version) THEN
                PERFORM sluice.note_upgrade('sluice.jobs.payload: compressed with lz4');
            END IF;
        END IF;
    END IF;
END
$$;
COMMENT ON TABLE sluice.jobs IS
    'Waiting and running jobs, and nothing else: a job leaves this table when it completes (deleted), '
    'dies (moved to sluice.dead_letters) or is cancelled, so the table stays small however long Sluice runs. '
    'Add jobs with sluice.enqueue(), not INSERT.';
COMMENT ON COLUMN sluice.jobs.queue IS 'Queue name; each queue can be paused and has its own concurrency in each worker.';
COMMENT ON COLUMN sluice.jobs.kind IS 'Which handler runs the job, for example stripe.event.';
COMMENT ON COLUMN sluice.jobs.payload IS 'The handler''s input: always a JSON object.';
COMMENT ON COLUMN sluice.jobs.priority IS 'Lower runs first; ties go to the earlier run_at, then the lower id.';
COMMENT ON COLUMN sluice.jobs.run_at IS 'Not claimed before this time: the scheduled time, or the next retry after a failure.';
COMMENT ON COLUMN sluice.jobs.attempt IS 'Attempts made so far, counted when a worker claims the job (a snooze or a release at shutdown gives one back).';
COMMENT ON COLUMN sluice.jobs.max_attempts IS 'After this many attempts a failure sends the job to sluice.dead_letters.';
COMMENT ON COLUMN sluice.jobs.state IS 'available (waiting for run_at and a worker) or running (claimed, leased to locked_by).';
COMMENT ON COLUMN sluice.jobs.locked_by IS 'The worker process holding the lease while running (host:pid:nonce).';
COMMENT ON COLUMN sluice.jobs.locked_until IS 'End of the running lease; heartbeats extend it, and past it the rescuer returns the job to the queue.';
COMMENT ON COLUMN sluice.jobs.unique_key IS 'Optional deduplication key; see sluice.unique_keys.';
COMMENT ON COLUMN sluice.jobs.errors IS 'One object per failed attempt: {"attempt", "at", "error", "kind"}.';
COMMENT ON COLUMN sluice.jobs.enqueued_by IS
    'The login role that enqueued the job (session_user): only it, and the schema owner, read the job''s result.';

-- The claim reads exactly this index: its WHERE is the predicate and its ORDER BY the column order.
CREATE INDEX IF NOT EXISTS jobs_claim_order ON sluice.jobs (queue, priority, run_at, id)
    WHERE state = 'available';
COMMENT ON INDEX sluice.jobs_claim_order IS 'Serves the claim: available jobs of one queue in priority, run_at, id order.';

CREATE TABLE IF NOT EXISTS sluice.unique_keys (
    key        text        PRIMARY KEY,
    job_id     bigint      NOT NULL,
    expires_at timestamptz
);
COMMENT ON TABLE sluice.unique_keys IS
    'Deduplication keys of jobs enqueued with a unique_key. While the job waits or runs expires_at is NULL; '
    'when it completes the key is kept until expires_at (the retention, 7 days by default), so a redelivered '
    'event is absorbed even after its job finished. A job that dies or is cancelled frees its key.';
COMMENT ON COLUMN sluice.unique_keys.job_id IS 'The job (waiting, running or completed) that owns the key.';
COMMENT ON COLUMN sluice.unique_keys.expires_at IS 'NULL while the job is live; afterwards, when the key may be reused.';
CREATE INDEX IF NOT EXISTS unique_keys_expiry ON sluice.unique_keys (expires_at) WHERE expires_at IS NOT NULL;
COMMENT ON INDEX sluice.unique_keys_expiry IS 'Finds expired keys for sluice.prune_unique_keys().';

CREATE TABLE IF NOT EXISTS sluice.dead_letters (
    id           bigint      PRIMARY KEY,
    queue        text        NOT NULL,
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL,
    priority     integer     NOT NULL DEFAULT 0,
    attempt      integer     NOT NULL,
    max_attempts integer     NOT NULL,
    errors       jsonb       NOT NULL DEFAULT '[]',
    reason       text        NOT NULL,
    unique_key   text,
    created_at   timestamptz NOT NULL,
    died_at      timestamptz NOT NULL DEFAULT now(),
    enqueued_by  text,
    CONSTRAINT dead_letters_reason_valid
        CHECK (reason IN ('attempts_exhausted', 'permanent_failure', 'lease_expired', 'erased'))
);
COMMENT ON TABLE sluice.dead_letters IS
    'Jobs that failed for good, kept with their payload and error history until an operator acts: '
    'sluice.retry_dead(id) puts one back under the same id, sluice.discard_dead(id) forgets it.';
COMMENT ON COLUMN sluice.dead_letters.id IS 'The job''s id, kept so a retried job is the same job.';
COMMENT ON COLUMN sluice.dead_letters.reason IS
    'attempts_exhausted: the last allowed attempt failed; permanent_failure: the handler said retrying cannot help '
    '(for example a payload it cannot read); lease_expired: the worker died or hung on the last allowed attempt; '
    'erased: a waiting job whose payload held personal data of a deleted user, discarded with its payload.';
COMMENT ON COLUMN sluice.dead_letters.errors IS 'Every failed attempt: {"attempt", "at", "error", "kind"}, oldest first.';
COMMENT ON COLUMN sluice.dead_letters.died_at IS 'When the job moved here.';
CREATE INDEX IF NOT EXISTS dead_letters_by_kind ON sluice.dead_letters (kind, died_at);
COMMENT ON INDEX sluice.dead_letters_by_kind IS 'Serves sluice.retry_dead_kind() and listing by kind.';
CREATE INDEX IF NOT EXISTS dead_letters_by_age ON sluice.dead_letters (died_at);
COMMENT ON INDEX sluice.dead_letters_by_age IS 'Serves pruning dead letters past their retention.';

CREATE TABLE IF NOT EXISTS sluice.paused_queues (
    queue     text        PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sluice.paused_queues IS
    'Queues that workers claim nothing from. Use sluice.pause_queue() and sluice.resume_queue(); jobs keep waiting.';

CREATE TABLE IF NOT EXISTS sluice.kinds (
    kind            text             PRIMARY KEY,
    max_attempts    integer          CHECK (max_attempts >= 1),
    timeout_seconds double precision CHECK (timeout_seconds > 0 AND timeout_seconds < 'Infinity')
);
COMMENT ON TABLE sluice.kinds IS
    'Per-kind settings that operators may set; a NULL or a kind not listed takes the default. Workers re-read '
    'it every minute.';
COMMENT ON COLUMN sluice.kinds.max_attempts IS 'Used when sluice.enqueue() is called without max_attempts (default 20).';
COMMENT ON COLUMN sluice.kinds.timeout_seconds IS
    'How long one attempt may run before it counts as failed and is retried elsewhere (default: the handler''s, 300).';

CREATE TABLE IF NOT EXISTS sluice.settings (
    key         text PRIMARY KEY,
    value       text NOT NULL,
    description text NOT NULL
);
COMMENT ON TABLE sluice.settings IS
    'Queue settings every Sluice process reads from here, so all agree; change value with UPDATE. Retentions are '
    'PostgreSQL intervals, or forever.';
INSERT INTO sluice.settings (key, value, description) VALUES
    ('dead_letter_retention', '30 days',
     'How long a dead letter is kept after it died, unless an operator retries or discards it first.'),
    ('job_result_retention', '7 days',
     'How long a job''s result (sluice.job_result) is kept after it was recorded.')
ON CONFLICT (key) DO NOTHING;

CREATE TABLE IF NOT EXISTS sluice.job_results (
    job_id      bigint      PRIMARY KEY,
    kind        text        NOT NULL,
    result      jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    enqueued_by text
);
COMMENT ON TABLE sluice.job_results IS
    'What a job that answers its caller produced (a portal URL, the updated subscription), keyed by the id '
    'sluice.enqueue returned. Written when the job succeeds, with NOTIFY sluice_job_results (payload: the job id), '
    'so a caller can LISTEN and then read it with sluice.job_result(id), which only the role that enqueued the '
    'job (enqueued_by) and the schema owner may do. Kept 7 days (sluice.settings job_result_retention).';
CREATE INDEX IF NOT EXISTS job_results_by_age ON sluice.job_results (created_at);
COMMENT ON INDEX sluice.job_results_by_age IS 'Serves pruning results past their 7 days.';

-- ---------------------------------------------------------------------------------------------------
-- Who may enqueue what. The enqueue functions run as the schema's owner (SECURITY DEFINER), so they are
-- where a caller's rights are checked: by the login role (session_user) and its memberships in the roles
-- of deploy/roles.sql. The owner (and a superuser) may enqueue anything.
-- ---------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS sluice.kind_rules (
    kind  text   PRIMARY KEY,
    roles text[] NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE sluice.kind_rules IS
    'Kinds that not every enqueuer may add, and the roles that may, named exactly as in pg_roles (empty: the '
    'schema owner only; a name that is no role admits nobody). A kind not '
    'listed is ordinary: members of sluice_enqueuer or sluice_billing may add it. sluice_receiver adds only '
    'stripe.event and clerk.event, in queue webhooks, under the key stripe:<event id> or clerk:<svix-id>.';
INSERT INTO sluice.kind_rules (kind, roles) VALUES
    ('stripe.event', '{sluice_receiver}'),
    ('clerk.event', '{sluice_receiver}'),
    ('stripe.fetched_event', '{}'),
    ('stripe.change_plan', '{sluice_billing,sluice_api}'),
    ('stripe.cancel_subscription', '{sluice_billing,sluice_api}'),
    ('stripe.resume_subscription', '{sluice_billing,sluice_api}'),
    ('stripe.create_portal_session', '{sluice_billing,sluice_api}'),
    ('stripe.create_checkout_session', '{sluice_billing,sluice_api}'),
    ('usage.record', '{sluice_billing}'),
    ('stripe.reconcile', '{}'),
    ('stripe.report_usage', '{}'),
    ('stripe.resync', '{}'),
    ('outbound.deliver', '{}'),
    ('outbound.sweep', '{}'),
    ('sluice.test.mark', '{}')
ON CONFLICT (kind) DO NOTHING;

-- PL/pgSQL, which keeps its statement planned for the session: a SQL function with a FROM is not inlined,
-- and PostgreSQL plans its body again in every statement that calls it.
CREATE OR REPLACE FUNCTION sluice.is_owner(role_name text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT pg_has_role(role_name::name, n.nspowner, 'MEMBER') FROM pg_namespace n WHERE n.nspname = 'sluice');
END
$$;
COMMENT ON FUNCTION sluice.is_owner(text) IS 'Whether a role is (or is a member of) the owner of schema sluice.';

CREATE OR REPLACE FUNCTION sluice.member_of(role_name text, group_name text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(pg_catalog.pg_has_role(role_name::name, pg_catalog.to_regrole(group_name), 'MEMBER'), false)
$$;
COMMENT ON FUNCTION sluice.member_of(text, text) IS 'Whether a role belongs to a group role (false if the group does not exist).';

-- No subquery and no FROM, so PostgreSQL inlines it into the statement that calls it.
CREATE OR REPLACE FUNCTION sluice.is_webhook_job(
    kind text, queue text, unique_key text, priority integer, run_at timestamptz, payload jsonb
) RETURNS boolean
LANGUAGE sql STABLE AS $$
    -- coalesce: a payload without an event_id makes the key comparison NULL, and the policy must answer
    -- true or false.
    SELECT coalesce(
        kind IN ('stripe.event', 'clerk.event') AND queue = 'webhooks'
        AND unique_key = (CASE kind WHEN 'stripe.event' THEN 'stripe:' ELSE 'clerk:' END) || (payload ->> 'event_id')
        AND priority = 0 AND (run_at IS NULL OR run_at <= pg_catalog.now() + interval '1 minute'),
        false)
$$;
COMMENT ON FUNCTION sluice.is_webhook_job(text, text, text, integer, timestamptz, jsonb) IS
    'The one shape of job the receiver may add: a verified webhook, under the key its event id gives, in queue '
    'webhooks, now.';

CREATE OR REPLACE FUNCTION sluice.member_of_any(role_name text, group_names text[], except_group text)
RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    excluded oid := (SELECT r.oid FROM pg_roles r WHERE r.rolname = except_group);
    group_oid oid;
BEGIN
    -- Names as stored, matched exactly (no case folding or quoting, as to_regrole would apply, and no error
    -- for a name that is not a valid identifier): a name that is no role admits nobody.
    FOR group_oid IN
        SELECT r.oid FROM pg_roles r WHERE r.rolname = ANY (group_names) AND r.oid IS DISTINCT FROM excluded
    LOOP
        IF pg_has_role(role_name::name, group_oid, 'MEMBER') THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;
COMMENT ON FUNCTION sluice.member_of_any(text, text[], text) IS
    'Whether a role belongs to any of the group roles named exactly in group_names, other than except_group '
    '(false for none).';

-- The policy, with the kind's row of sluice.kind_rules passed in: no subquery and no FROM, so PostgreSQL
-- inlines it into the statement that calls it. sluice.may_enqueue held the lookup as subqueries, which
-- kept it from being inlined, and PostgreSQL planned its body again in every statement: one job enqueued
-- by a service cost 1.7 million instructions of the server, six times the job itself.
CREATE OR REPLACE FUNCTION sluice.may_enqueue_under_rule(
    caller text, kind text, queue text, unique_key text, priority integer, run_at timestamptz, payload jsonb,
    kind_has_rule boolean, rule_roles text[]
) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT
        -- The receiver: a verified webhook (sluice.is_webhook_job).
        (sluice.member_of(caller, 'sluice_receiver')
         AND sluice.is_webhook_job(kind, queue, unique_key, priority, run_at, payload))
        OR
        -- Everyone else: no reserved queue or key, a bounded priority, and a kind their roles may add.
        (queue NOT IN ('webhooks', 'outbound')
         AND (unique_key IS NULL
              OR NOT (unique_key LIKE 'stripe:%' OR unique_key LIKE 'clerk:%' OR unique_key LIKE 'periodic:%'))
         AND priority BETWEEN -100 AND 100
         AND CASE
                 WHEN kind_has_rule THEN sluice.member_of_any(caller, rule_roles, 'sluice_receiver')
                 ELSE sluice.member_of(caller, 'sluice_enqueuer') OR sluice.member_of(caller, 'sluice_billing')
             END)
$$;
COMMENT ON FUNCTION sluice.may_enqueue_under_rule(text, text, text, text, integer, timestamptz, jsonb, boolean, text[]) IS
    'sluice.may_enqueue with the kind''s rule given: whether it has a row in sluice.kind_rules, and that row''s '
    'roles. sluice.authorize_enqueue joins the rules and calls this, which PostgreSQL inlines.';

CREATE OR REPLACE FUNCTION sluice.may_enqueue(
    caller text, kind text, queue text, unique_key text, priority integer, run_at timestamptz, payload jsonb
) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sluice.may_enqueue_under_rule(
        caller, kind, queue, unique_key, priority, run_at, payload,
        EXISTS (SELECT 1 FROM sluice.kind_rules r WHERE r.kind = may_enqueue.kind),
        (SELECT r.roles FROM sluice.kind_rules r WHERE r.kind = may_enqueue.kind)), false)
$$;
COMMENT ON FUNCTION sluice.may_enqueue(text, text, text, text, integer, timestamptz, jsonb) IS
    'Whether a (non-owner) role may add this job: the receiver''s one shape, or for everyone else a kind their '
    'roles may add (sluice.kind_rules), outside the reserved queues (webhooks, outbound) and keys (stripe:, '
    'clerk:, periodic:), with a priority from -100 to 100.';

CREATE OR REPLACE FUNCTION sluice.authorize_enqueue(
    kinds text[], queues text[], unique_keys text[], priorities integer[], run_ats timestamptz[], payloads jsonb[]
) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    caller  text := session_user;
    refused record;
BEGIN
    IF sluice.is_owner(caller) THEN
        RETURN;
    END IF;
    SELECT j.kind, coalesce(j.queue, 'default') AS queue, j.key, coalesce(j.priority, 0) AS priority INTO refused
    FROM unnest(kinds, queues, unique_keys, priorities, run_ats, payloads) WITH ORDINALITY
        AS j(kind, queue, key, priority, run_at, payload, position)
    LEFT JOIN sluice.kind_rules r ON r.kind = j.kind
    -- The policy inlined into this statement, which this function keeps planned (sluice.may_enqueue_under_rule).
    -- IS NOT TRUE: a policy that cannot decide (NULL) refuses.
    WHERE sluice.may_enqueue_under_rule(caller, j.kind, coalesce(j.queue, 'default'), j.key, coalesce(j.priority, 0),
                                        j.run_at, j.payload, r.kind IS NOT NULL, r.roles) IS NOT TRUE
    ORDER BY j.position
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'sluice: role % may not enqueue kind % in queue % (unique key %, priority %)',
                caller, refused.kind, refused.queue, coalesce(refused.key, 'none'), refused.priority
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Which roles may add which kinds is in sluice.kind_rules; queues webhooks and outbound and '
                         'keys stripe:, clerk: and periodic: are reserved; priorities run from -100 to 100.';
    END IF;
END
$$;
COMMENT ON FUNCTION sluice.authorize_enqueue(text[], text[], text[], integer[], timestamptz[], jsonb[]) IS
    'Raises insufficient_privilege (42501) naming the first job of a batch that the calling login role may not '
    'add (see sluice.may_enqueue); the schema owner may add anything. Every enqueue function calls it first.';

-- ---------------------------------------------------------------------------------------------------
-- Enqueueing
-- ---------------------------------------------------------------------------------------------------

-- The unique-key protocol, written once: sluice.enqueue runs it for a batch of one, sluice.enqueue_unique
-- for a whole batch. They check their arguments and the caller first and then call it as the schema's
-- owner, so it checks neither, and nobody else may call it (no grant).
CREATE OR REPLACE FUNCTION sluice.insert_unique_jobs(
    kinds        text[],
    payloads     jsonb[],
    unique_keys  text[],
    queues       text[],
    priorities   integer[],
    run_ats      timestamptz[],
    max_attempts integer[],
    OUT added_keys text[],
    OUT added_ids  bigint[],
    OUT held_keys  text[],
    OUT held_ids   bigint[],
    OUT contended  text[]
)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pending   text[];           -- distinct keys not settled yet, in lock order
    step_keys text[];
    step_ids  bigint[];
BEGIN
    added_keys := '{}';
    added_ids := '{}';
    held_keys := '{}';
    held_ids := '{}';
    SELECT array_agg(DISTINCT k ORDER BY k) INTO pending FROM unnest(unique_keys) AS k;

    -- The key row is the lock: the first transaction to insert it owns the key, a concurrent one waits
    -- for it to commit and then finds the holder. A key whose retention has passed is taken over.
    -- A whole batch per statement: keys are claimed in sorted order, so two batches that share keys wait
    -- for each other in one direction only and cannot deadlock.
    FOR round IN 1..3 LOOP
        WITH firsts AS (
            SELECT DISTINCT ON (j.key) j.key, j.kind, j.payload, coalesce(j.queue, 'default') AS queue,
                   coalesce(j.priority, 0) AS priority, coalesce(j.run_at, now()) AS run_at, j.max_attempts
            FROM unnest(unique_keys, kinds, payloads, queues, priorities, run_ats, insert_unique_jobs.max_attempts)
                WITH ORDINALITY AS j(key, kind, payload, queue, priority, run_at, max_attempts, position)
            WHERE j.key = ANY (pending)
            ORDER BY j.key, j.position
        ), claimed AS (
            INSERT INTO sluice.unique_keys AS u (key, job_id)
            SELECT f.key, nextval('sluice.jobs_id_seq') FROM firsts f ORDER BY f.key
            ON CONFLICT (key) DO NOTHING
            RETURNING u.key, u.job_id
        ), added AS (
            INSERT INTO sluice.jobs (id, queue, kind, payload, priority, run_at, max_attempts, unique_key)
            SELECT c.job_id, f.queue, f.kind, f.payload, f.priority, f.run_at, coalesce(f.max_attempts, k.max_attempts, 20),
                   c.key
            FROM claimed c
            JOIN firsts f ON f.key = c.key
            LEFT JOIN sluice.kinds k ON k.kind = f.kind
            RETURNING sluice.jobs.unique_key, sluice.jobs.id
        )
        SELECT coalesce(array_agg(a.unique_key), '{}'), coalesce(array_agg(a.id), '{}')
        INTO step_keys, step_ids FROM added a;
        added_keys := added_keys || step_keys;
        added_ids := added_ids || step_ids;
        pending := ARRAY(SELECT k FROM unnest(pending) AS k WHERE k <> ALL (step_keys) ORDER BY k);
        EXIT WHEN cardinality(pending) = 0;

        -- A new statement, so a new snapshot: it sees holders that committed while the insert waited on them.
        SELECT coalesce(array_agg(u.key), '{}'), coalesce(array_agg(u.job_id), '{}')
        INTO step_keys, step_ids
        FROM sluice.unique_keys u
        WHERE u.key = ANY (pending) AND (u.expires_at IS NULL OR u.expires_at > now());
        held_keys := held_keys || step_keys;
        held_ids := held_ids || step_ids;
        pending := ARRAY(SELECT k FROM unnest(pending) AS k WHERE k <> ALL (step_keys) ORDER BY k);
        EXIT WHEN cardinality(pending) = 0;

        -- What is left are keys past their retention: take them over.
        DELETE FROM sluice.unique_keys u WHERE u.key = ANY (pending) AND u.expires_at <= now();
    END LOOP;
    contended := pending;
END
$$;
COMMENT ON FUNCTION sluice.insert_unique_jobs(text[], jsonb[], text[], text[], integer[], timestamptz[], integer[]) IS
    'The unique-key protocol of sluice.enqueue and sluice.enqueue_unique, for their checked arguments (parallel '
    'arrays, one element per job; the first job of a repeated key supplies it): adds a job for each key that is '
    'free or past its retention, in up to three rounds. Returns the keys it added with their new job ids, the keys '
    'held by a live job or within their retention with the holder''s id, and the keys still contended after three '
    'rounds, each key once. Internal: it checks neither its arguments nor the caller, so only the owner runs it.';
REVOKE ALL ON FUNCTION sluice.insert_unique_jobs(text[], jsonb[], text[], text[], integer[], timestamptz[], integer[])
    FROM PUBLIC;

CREATE OR REPLACE FUNCTION sluice.enqueue(
    kind         text,
    payload      jsonb       DEFAULT '{}',
    queue        text        DEFAULT 'default',
    priority     integer     DEFAULT 0,
    run_at       timestamptz DEFAULT now(),
    max_attempts integer     DEFAULT NULL,
    unique_key   text        DEFAULT NULL,
    notify       boolean     DEFAULT true
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id     bigint;
    holder_id  bigint;
BEGIN
    IF enqueue.kind IS NULL OR enqueue.kind = '' THEN
        RAISE EXCEPTION 'sluice.enqueue: kind must be a non-empty text, such as ''sluice.noop'''
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue.payload IS NULL OR jsonb_typeof(enqueue.payload) <> 'object' THEN
        RAISE EXCEPTION 'sluice.enqueue: payload must be a JSON object, got %',
                coalesce(jsonb_typeof(enqueue.payload), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Wrap the value in an object, for example ''{"value": 42}''::jsonb.';
    END IF;
    IF enqueue.queue IS NULL OR enqueue.queue = '' THEN
        RAISE EXCEPTION 'sluice.enqueue: queue must be a non-empty text (the default is ''default'')'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue.max_attempts IS NOT NULL AND enqueue.max_attempts < 1 THEN
        RAISE EXCEPTION 'sluice.enqueue: max_attempts must be at least 1, got %', enqueue.max_attempts
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The schema owner itself (workers, periodic jobs) may add anything: skip the check on the hot path.
    IF session_user <> current_user THEN
        PERFORM sluice.authorize_enqueue(ARRAY[enqueue.kind], ARRAY[enqueue.queue], ARRAY[enqueue.unique_key],
                                         ARRAY[enqueue.priority], ARRAY[enqueue.run_at], ARRAY[enqueue.payload]);
    END IF;

    IF enqueue.unique_key IS NULL THEN
        -- One statement: each statement a PL/pgSQL function runs is set up again in every transaction.
        INSERT INTO sluice.jobs (queue, kind, payload, priority, run_at, max_attempts)
        VALUES (enqueue.queue, enqueue.kind, enqueue.payload, coalesce(enqueue.priority, 0),
                coalesce(enqueue.run_at, now()),
                coalesce(enqueue.max_attempts, (SELECT k.max_attempts FROM sluice.kinds k WHERE k.kind = enqueue.kind), 20))
        RETURNING id INTO new_id;
    ELSE
        -- A batch of one through the protocol sluice.enqueue_unique uses (sluice.insert_unique_jobs).
        SELECT u.added_ids[1], u.held_ids[1] INTO new_id, holder_id
        FROM sluice.insert_unique_jobs(ARRAY[enqueue.kind], ARRAY[enqueue.payload], ARRAY[enqueue.unique_key],
                                       ARRAY[enqueue.queue], ARRAY[enqueue.priority], ARRAY[enqueue.run_at],
                                       ARRAY[enqueue.max_attempts]) AS u;
        IF holder_id IS NOT NULL THEN
            RETURN holder_id;
        END IF;
        IF new_id IS NULL THEN
            RAISE EXCEPTION 'sluice.enqueue: unique key % is contended; retry the call', enqueue.unique_key
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;

    IF enqueue.notify THEN
        -- Notifications with the same payload collapse within a transaction: one per queue, never per row.
        PERFORM pg_notify('sluice_jobs', enqueue.queue);
    END IF;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION sluice.enqueue(text, jsonb, text, integer, timestamptz, integer, text, boolean) IS
    'Adds a job and returns its id; the one call other services make, inside their own transaction if they like '
    '(the job exists, and workers are woken, only when that transaction commits). max_attempts NULL takes the '
    'kind''s default from sluice.kinds (else 20). With a unique_key, while a job with that key waits or runs, '
    'or completed within the retention period, the existing job''s id is returned and nothing is added. '
    'notify => false skips the NOTIFY, for high-rate callers that let workers find the job by polling.';

CREATE OR REPLACE FUNCTION sluice.enqueue_many(
    kinds         text[],
    payloads      jsonb[],
    queues        text[]        DEFAULT NULL,
    priorities    integer[]     DEFAULT NULL,
    run_ats       timestamptz[] DEFAULT NULL,
    max_attempts  integer[]     DEFAULT NULL,
    unique_keys   text[]        DEFAULT NULL,
    notify        boolean       DEFAULT true
) RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer := coalesce(cardinality(kinds), 0);
    job record;
BEGIN
    IF cardinality(payloads) IS DISTINCT FROM n
        OR (queues IS NOT NULL AND cardinality(queues) <> n)
        OR (priorities IS NOT NULL AND cardinality(priorities) <> n)
        OR (run_ats IS NOT NULL AND cardinality(run_ats) <> n)
        OR (enqueue_many.max_attempts IS NOT NULL AND cardinality(enqueue_many.max_attempts) <> n)
        OR (unique_keys IS NOT NULL AND cardinality(unique_keys) <> n) THEN
        RAISE EXCEPTION 'sluice.enqueue_many: every array given must have one element per job (% kinds)', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(kinds, payloads, queues, enqueue_many.max_attempts)
                   AS j(kind, payload, queue, max_attempts)
               WHERE j.payload IS NULL OR jsonb_typeof(j.payload) <> 'object' OR j.kind IS NULL OR j.kind = ''
                  OR j.queue = '' OR j.max_attempts < 1) THEN
        RAISE EXCEPTION 'sluice.enqueue_many: every kind and queue must be a non-empty text, every payload a JSON '
                        'object, every max_attempts at least 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF session_user <> current_user THEN
        PERFORM sluice.authorize_enqueue(kinds, queues, unique_keys, priorities, run_ats, payloads);
    END IF;

    IF unique_keys IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(unique_keys) k WHERE k IS NOT NULL) THEN
        -- Keys need the per-job ownership protocol of sluice.enqueue.
        FOR job IN
            SELECT * FROM unnest(kinds, payloads, queues, priorities, run_ats, enqueue_many.max_attempts, unique_keys)
                AS u(kind, payload, queue, priority, run_at, max_attempts, unique_key)
        LOOP
            RETURN NEXT sluice.enqueue(job.kind, job.payload, coalesce(job.queue, 'default'),
                coalesce(job.priority, 0), coalesce(job.run_at, now()), job.max_attempts, job.unique_key, notify);
        END LOOP;
        RETURN;
    END IF;

    -- unnest() walks the arrays once (subscripting a jsonb[] by position would rescan it per element)
    -- and pads the arrays left NULL with NULLs.
    RETURN QUERY
    INSERT INTO sluice.jobs (queue, kind, payload, priority, run_at, max_attempts)
    SELECT coalesce(j.queue, 'default'), j.kind, j.payload, coalesce(j.priority, 0), coalesce(j.run_at, now()),
           coalesce(j.max_attempts, k.max_attempts, 20)
    FROM unnest(kinds, payloads, queues, priorities, run_ats, enqueue_many.max_attempts)
             WITH ORDINALITY AS j(kind, payload, queue, priority, run_at, max_attempts, position)
    LEFT JOIN sluice.kinds k ON k.kind = j.kind
    ORDER BY j.position
    RETURNING id;

    IF notify THEN
        PERFORM pg_notify('sluice_jobs', q)
        FROM (SELECT DISTINCT coalesce(q, 'default') AS q FROM unnest(coalesce(queues, ARRAY[NULL::text])) AS q) AS names;
    END IF;
END
$$;
COMMENT ON FUNCTION sluice.enqueue_many(text[], jsonb[], text[], integer[], timestamptz[], integer[], text[], boolean) IS
    'Adds many jobs in one statement and returns their ids in order. Arrays are parallel, one element per job; '
    'the optional ones may be NULL (defaults as in sluice.enqueue). One NOTIFY per queue, not per job.';

CREATE OR REPLACE FUNCTION sluice.enqueue_unique(
    kinds       text[],
    payloads    jsonb[],
    unique_keys  text[],
    queues       text[]        DEFAULT NULL,
    priorities   integer[]     DEFAULT NULL,
    run_ats      timestamptz[] DEFAULT NULL,
    max_attempts integer[]     DEFAULT NULL,
    notify       boolean       DEFAULT true
) RETURNS TABLE (ordinal integer, job_id bigint, enqueued boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n          integer := coalesce(cardinality(kinds), 0);
    pending    text[];           -- keys still contended after the protocol's three rounds
    new_keys   text[];
    new_ids    bigint[];
    held_keys  text[];
    held_ids   bigint[];
BEGIN
    IF cardinality(payloads) IS DISTINCT FROM n OR cardinality(unique_keys) IS DISTINCT FROM n
        OR (queues IS NOT NULL AND cardinality(queues) <> n)
        OR (priorities IS NOT NULL AND cardinality(priorities) <> n)
        OR (run_ats IS NOT NULL AND cardinality(run_ats) <> n)
        OR (enqueue_unique.max_attempts IS NOT NULL AND cardinality(enqueue_unique.max_attempts) <> n) THEN
        RAISE EXCEPTION 'sluice.enqueue_unique: every array given must have one element per job (% kinds)', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1
               FROM unnest(kinds, payloads, unique_keys, queues, enqueue_unique.max_attempts)
                   AS j(kind, payload, key, queue, max_attempts)
               WHERE j.kind IS NULL OR j.kind = '' OR j.key IS NULL OR j.key = '' OR j.queue = ''
                  OR j.payload IS NULL OR jsonb_typeof(j.payload) <> 'object' OR j.max_attempts < 1) THEN
        RAISE EXCEPTION 'sluice.enqueue_unique: every kind and unique key must be a non-empty text, every payload a '
                        'JSON object, every max_attempts at least 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF session_user <> current_user THEN
        PERFORM sluice.authorize_enqueue(kinds, queues, unique_keys, priorities, run_ats, payloads);
    END IF;

    -- The unique-key protocol of sluice.enqueue, for the whole batch at once (sluice.insert_unique_jobs).
    SELECT u.added_keys, u.added_ids, u.held_keys, u.held_ids, u.contended
    INTO new_keys, new_ids, held_keys, held_ids, pending
    FROM sluice.insert_unique_jobs(kinds, payloads, unique_keys, queues, priorities, run_ats,
                                   enqueue_unique.max_attempts) AS u;
    IF cardinality(pending) > 0 THEN
        RAISE EXCEPTION 'sluice.enqueue_unique: unique keys % are contended; retry the call', pending
            USING ERRCODE = 'serialization_failure';
    END IF;

    IF notify AND cardinality(new_keys) > 0 THEN
        PERFORM pg_notify('sluice_jobs', q)
        FROM (SELECT DISTINCT coalesce(j.queue, 'default') AS q
              FROM unnest(unique_keys, queues) AS j(key, queue)
              WHERE j.key = ANY (new_keys)) AS names;
    END IF;

    RETURN QUERY
    WITH settled AS (
        SELECT s.key, s.id, true AS is_new FROM unnest(new_keys, new_ids) AS s(key, id)
        UNION ALL
        SELECT s.key, s.id, false FROM unnest(held_keys, held_ids) AS s(key, id)
    ), positions AS (
        SELECT j.key, j.position::integer AS position, min(j.position) OVER (PARTITION BY j.key) AS first_position
        FROM unnest(unique_keys) WITH ORDINALITY AS j(key, position)
    )
    SELECT p.position, s.id, s.is_new AND p.position = p.first_position
    FROM positions p
    JOIN settled s ON s.key = p.key
    ORDER BY p.position;
END
$$;
COMMENT ON FUNCTION sluice.enqueue_unique(text[], jsonb[], text[], text[], integer[], timestamptz[], integer[], boolean) IS
    'Adds a batch of jobs that each carry a unique key, in one statement, with the rules of sluice.enqueue: a key '
    'held by a live job, or by one that completed within the retention period, adds nothing. Returns one row per '
    'input position (1-based): the job id, and whether this call added it (false for a key already held, and for '
    'a repeat of a key earlier in the same batch). The webhook receiver commits each group of requests this way.';

-- Enqueueing runs as the schema's owner (SECURITY DEFINER), so a role may be allowed to add jobs and nothing
-- else: see deploy/roles.sql. Nobody else may call these until granted.
REVOKE ALL ON FUNCTION sluice.enqueue(text, jsonb, text, integer, timestamptz, integer, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.enqueue_many(text[], jsonb[], text[], integer[], timestamptz[], integer[], text[], boolean)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.enqueue_unique(text[], jsonb[], text[], text[], integer[], timestamptz[], integer[], boolean) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------
-- Job results
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION sluice.job_result(job_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found_result jsonb;
    owner_role   text;
BEGIN
    SELECT r.result, r.enqueued_by INTO found_result, owner_role FROM sluice.job_results r WHERE r.job_id = job_result.job_id;
    IF NOT FOUND THEN
        -- No result yet, or a job that is not the caller's: both look the same to a stranger, and ids are
        -- sequential, so an enqueuer cannot learn what other services' jobs return.
        RETURN NULL;
    END IF;
    IF owner_role IS DISTINCT FROM session_user AND NOT sluice.is_owner(session_user) THEN
        RAISE EXCEPTION 'sluice.job_result: job % was not enqueued by role %', job_result.job_id, session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Replaced by a later change before it ran: it has no result (version 19).
    IF found_result ? 'sluice_superseded_by' THEN
        RETURN NULL;
    END IF;
    RETURN found_result;
END
$$;
COMMENT ON FUNCTION sluice.job_result(bigint) IS
    'The result of a finished job, or NULL while it has none (still waiting or running, or it failed: see '
    'sluice.dead_letters). Only the role that enqueued the job and the schema owner may read it (SQLSTATE 42501 '
    'otherwise). Wait with LISTEN sluice_job_results, whose payload is the job id.';
REVOKE ALL ON FUNCTION sluice.job_result(bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION sluice.record_job_result(job_id bigint, kind text, result jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO sluice.job_results AS r (job_id, kind, result, enqueued_by)
    VALUES (job_id, kind, result, (SELECT j.enqueued_by FROM sluice.jobs j WHERE j.id = record_job_result.job_id))
    ON CONFLICT (job_id) DO UPDATE SET result = excluded.result, created_at = now(), enqueued_by = excluded.enqueued_by
    -- A job replaced by a later change stays replaced, whatever an attempt still running returns (version 19).
    WHERE NOT (r.result ? 'sluice_superseded_by');
    SELECT pg_notify('sluice_job_results', job_id::text);
$$;
COMMENT ON FUNCTION sluice.record_job_result(bigint, text, jsonb) IS
    'Stores a job''s result (again, for a retried job), with the role that enqueued it, and wakes callers '
    'listening on sluice_job_results.';

CREATE OR REPLACE FUNCTION sluice.prune_job_results(older_than interval DEFAULT '7 days', batch_size integer DEFAULT 1000)
RETURNS integer
LANGUAGE sql AS $$
    WITH old AS (
        SELECT r.job_id FROM sluice.job_results r WHERE r.created_at < now() - older_than
        ORDER BY r.created_at LIMIT batch_size
    ), gone AS (
        DELETE FROM sluice.job_results r USING old WHERE r.job_id = old.job_id RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;
COMMENT ON FUNCTION sluice.prune_job_results(interval, integer) IS
    'Deletes up to batch_size job results older than older_than; returns how many. Workers call it periodically.';

-- ---------------------------------------------------------------------------------------------------
-- Housekeeping
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION sluice.prune_unique_keys(batch_size integer DEFAULT 1000) RETURNS integer
LANGUAGE sql AS $$
    WITH expired AS (
        SELECT u.key FROM sluice.unique_keys u
        WHERE u.expires_at IS NOT NULL AND u.expires_at <= now()
        ORDER BY u.expires_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM sluice.unique_keys u USING expired e WHERE u.key = e.key RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
$$;
COMMENT ON FUNCTION sluice.prune_unique_keys(integer) IS
    'Deletes up to batch_size unique keys whose retention has passed and returns how many; workers call it '
    'periodically, in small batches so it never holds many locks.';

CREATE OR REPLACE FUNCTION sluice.prune_dead_letters(older_than interval, batch_size integer DEFAULT 1000)
RETURNS integer
LANGUAGE sql AS $$
    WITH old AS (
        SELECT d.id FROM sluice.dead_letters d
        WHERE d.died_at < now() - older_than
        ORDER BY d.died_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM sluice.dead_letters d USING old o WHERE d.id = o.id RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
$$;
COMMENT ON FUNCTION sluice.prune_dead_letters(interval, integer) IS
    'Deletes up to batch_size dead letters that died more than older_than ago; returns how many.';

CREATE OR REPLACE FUNCTION sluice.trim_error_history(keep integer DEFAULT 20, batch_size integer DEFAULT 1000)
RETURNS integer
LANGUAGE sql AS $$
    WITH long AS (
        SELECT j.id FROM sluice.jobs j
        WHERE jsonb_array_length(j.errors) > keep
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), trimmed AS (
        UPDATE sluice.jobs j
        SET errors = (SELECT jsonb_agg(e ORDER BY n)
                      FROM jsonb_array_elements(j.errors) WITH ORDINALITY AS x(e, n)
                      WHERE n > jsonb_array_length(j.errors) - keep)
        FROM long WHERE j.id = long.id
        RETURNING 1
    )
    SELECT count(*)::integer FROM trimmed;
$$;
COMMENT ON FUNCTION sluice.trim_error_history(integer, integer) IS
    'Keeps only the last keep entries of the error history of up to batch_size long-retrying jobs; returns how '
    'many jobs it trimmed. Workers call it periodically (SLUICE_ERROR_HISTORY).';

CREATE OR REPLACE FUNCTION sluice.retention(value text) RETURNS interval
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value IS NULL OR lower(value) = 'forever' THEN
        RETURN NULL;
    END IF;
    RETURN value::interval;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
    RAISE EXCEPTION 'retention setting %: not an interval (such as ''30 days'') or forever', quote_literal(value)
        USING ERRCODE = 'invalid_parameter_value';
END
$$;
COMMENT ON FUNCTION sluice.retention(text) IS
    'A retention setting as an interval: NULL for forever; a value that is neither raises invalid_parameter_value.';

CREATE OR REPLACE FUNCTION sluice.prune(batch_size integer DEFAULT 1000)
RETURNS TABLE (table_name text, pruned integer)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dead    interval := sluice.retention((SELECT value FROM sluice.settings WHERE key = 'dead_letter_retention'));
    results interval := sluice.retention((SELECT value FROM sluice.settings WHERE key = 'job_result_retention'));
    outbound interval := sluice.retention((SELECT value FROM sluice.settings WHERE key = 'outbound_event_retention'));
BEGIN
    table_name := 'sluice.unique_keys';
    pruned := sluice.prune_unique_keys(batch_size);
    RETURN NEXT;
    table_name := 'sluice.dead_letters';
    pruned := CASE WHEN dead IS NULL THEN 0 ELSE sluice.prune_dead_letters(dead, batch_size) END;
    RETURN NEXT;
    table_name := 'sluice.job_results';
    pruned := CASE WHEN results IS NULL THEN 0 ELSE sluice.prune_job_results(results, batch_size) END;
    RETURN NEXT;
    table_name := 'sluice.job_callers';
    pruned := sluice.prune_job_callers(batch_size);
    RETURN NEXT;
    table_name := 'sluice.outbound_events';
    pruned := 0;
    IF outbound IS NOT NULL THEN
        WITH old AS (
            SELECT e.id FROM sluice.outbound_events e WHERE e.created_at < now() - outbound
            ORDER BY e.created_at LIMIT batch_size FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM sluice.outbound_events e USING old WHERE e.id = old.id RETURNING 1
        )
        SELECT count(*)::integer INTO pruned FROM gone;
    END IF;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION sluice.prune(integer) IS
    'One batch of housekeeping over the queue''s tables that grow with traffic: expired unique keys, and dead '
    'letters and job results past their retention in sluice.settings, and the callers of jobs gone from all three. Returns how many rows left each table; '
    'workers call it every minute, and again while a table returns a full batch, so no call holds many locks.';

CREATE OR REPLACE FUNCTION sluice.mentions(document jsonb, ids text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    -- An id as a whole JSON string, at the top level or inside a raw body kept as a string (escaped quotes).
    SELECT EXISTS (SELECT 1 FROM pg_catalog.unnest(ids) AS i(id)
                   WHERE pg_catalog.strpos(document::text, '"' || i.id || '"') > 0
                      OR pg_catalog.strpos(document::text, '\"' || i.id || '\"') > 0)
$$;
COMMENT ON FUNCTION sluice.mentions(jsonb, text[]) IS
    'Whether a JSON document (a payload, a raw webhook body in it, a result) holds any of the ids as a whole string.';

CREATE OR REPLACE FUNCTION sluice.erase_mentions(ids text[]) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    touched integer := 0;
    n       integer;
BEGIN
    -- Waiting jobs go to the dead letters without their payload; a running one is leased to a worker and
    -- finishes (what it writes is erased again by the list in billing.erasures).
    WITH gone AS (
        DELETE FROM sluice.jobs j
        WHERE j.state = 'available' AND sluice.mentions(j.payload, ids)
        RETURNING j.id, j.queue, j.kind, j.priority, j.attempt, j.max_attempts, j.errors, j.unique_key,
                  j.created_at, j.enqueued_by
    ), buried AS (
        INSERT INTO sluice.dead_letters (id, queue, kind, payload, priority, attempt, max_attempts, errors, reason,
                                         unique_key, created_at, enqueued_by)
        SELECT g.id, g.queue, g.kind, '{"erased": true}', g.priority, g.attempt, g.max_attempts, g.errors, 'erased',
               g.unique_key, g.created_at, g.enqueued_by
        FROM gone g
        RETURNING 1
    ), freed AS (
        DELETE FROM sluice.unique_keys u USING gone g WHERE u.key = g.unique_key AND u.job_id = g.id
    )
    SELECT count(*) INTO n FROM buried;
    touched := touched + n;
    UPDATE sluice.dead_letters d
    SET payload = '{"erased": true}',
        -- An error message names an id inside its text (version 16).
        errors = CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.unnest(ids) AS i(id)
                                   WHERE pg_catalog.strpos(d.errors::text, i.id) > 0) THEN '[]' ELSE d.errors END
    WHERE (d.payload <> '{"erased": true}' AND sluice.mentions(d.payload, ids))
       OR EXISTS (SELECT 1 FROM pg_catalog.unnest(ids) AS i(id) WHERE pg_catalog.strpos(d.errors::text, i.id) > 0);
    GET DIAGNOSTICS n = ROW_COUNT;
    touched := touched + n;
    DELETE FROM sluice.job_results r WHERE sluice.mentions(r.result, ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    touched := touched + n;
    -- The API's record of which jobs a user started names the user.
    DELETE FROM sluice.job_callers c WHERE c.caller IN (SELECT 'user:' || i FROM pg_catalog.unnest(ids) AS i);
    GET DIAGNOSTICS n = ROW_COUNT;
    touched := touched + n;
    -- Outbound events about them; a delivery still queued finds its event gone and sends nothing.
    DELETE FROM sluice.outbound_events e
    WHERE e.user_id = ANY (ids)
       OR EXISTS (SELECT 1 FROM pg_catalog.unnest(ids) AS i(id) WHERE pg_catalog.strpos(e.body, '"' || i.id || '"') > 0);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN touched + n;
END
$$;
COMMENT ON FUNCTION sluice.erase_mentions(text[]) IS
    'Removes every queued copy of data about the given ids (a deleted user''s id, their Stripe customers): waiting '
    'jobs whose payload holds one move to sluice.dead_letters with reason erased and no payload, dead letters lose '
    'their payload, job results, the API''s callers of their jobs and outbound events naming them are deleted. Returns how many rows it touched.';

-- ---------------------------------------------------------------------------------------------------
-- Operators: queues, cancelling, dead letters
-- ---------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS sluice.operator_actions (
    id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    role   text        NOT NULL DEFAULT SESSION_USER,
    action text        NOT NULL,
    target text        NOT NULL,
    result text
);
COMMENT ON TABLE sluice.operator_actions IS
    'Every operator action through the functions below (pause, resume, cancel, retry, discard): when, which login '
    'role, on what, and what came of it. Read it with SELECT * FROM sluice.operator_actions ORDER BY id DESC.';

CREATE OR REPLACE FUNCTION sluice.record_operator_action(action text, target text, result text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO sluice.operator_actions (action, target, result)
    VALUES (record_operator_action.action, record_operator_action.target, record_operator_action.result);
$$;
COMMENT ON FUNCTION sluice.record_operator_action(text, text, text) IS
    'Records an operator action with the calling login role and the time (see sluice.operator_actions).';
REVOKE ALL ON FUNCTION sluice.record_operator_action(text, text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION sluice.pause_queue(queue text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO sluice.paused_queues (queue) VALUES (pause_queue.queue) ON CONFLICT DO NOTHING;
    PERFORM sluice.record_operator_action('pause_queue', pause_queue.queue, NULL);
END
$$;
COMMENT ON FUNCTION sluice.pause_queue(text) IS
    'Stops workers claiming from a queue; its jobs keep waiting and running ones finish. Undo with sluice.resume_queue().';

CREATE OR REPLACE FUNCTION sluice.resume_queue(queue text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM sluice.paused_queues p WHERE p.queue = resume_queue.queue;
    PERFORM sluice.record_operator_action('resume_queue', resume_queue.queue, NULL);
    PERFORM pg_notify('sluice_jobs', resume_queue.queue);
END
$$;
COMMENT ON FUNCTION sluice.resume_queue(text) IS 'Lets workers claim from a paused queue again, and wakes them.';

CREATE OR REPLACE FUNCTION sluice.cancel(id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    freed_key text;
    cancelled boolean;
BEGIN
    DELETE FROM sluice.jobs j WHERE j.id = cancel.id AND j.state = 'available' RETURNING j.unique_key INTO freed_key;
    cancelled := FOUND;
    IF cancelled THEN
        DELETE FROM sluice.unique_keys u WHERE u.key = freed_key AND u.job_id = cancel.id;
    END IF;
    PERFORM sluice.record_operator_action('cancel', cancel.id::text, CASE WHEN cancelled THEN 'cancelled' ELSE 'not waiting' END);
    RETURN cancelled;
END
$$;
COMMENT ON FUNCTION sluice.cancel(bigint) IS
    'Removes a waiting job (and frees its unique key). Returns false when there is no such waiting job: '
    'it never existed, already finished, or is running now (a running job cannot be cancelled).';

CREATE OR REPLACE FUNCTION sluice.retry_dead(id bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dead      sluice.dead_letters;
    holder_id bigint;
BEGIN
    SELECT * INTO dead FROM sluice.dead_letters d WHERE d.id = retry_dead.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sluice.retry_dead: there is no dead letter with id %', retry_dead.id
            USING ERRCODE = 'no_data_found',
                  HINT = 'SELECT id, kind, reason, died_at FROM sluice.dead_letters ORDER BY died_at DESC lists them.';
    END IF;
    IF dead.unique_key IS NOT NULL THEN
        INSERT INTO sluice.unique_keys AS u (key, job_id) VALUES (dead.unique_key, dead.id)
        ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id, expires_at = NULL
            WHERE u.expires_at IS NOT NULL AND u.expires_at <= now();
        IF NOT FOUND THEN
            SELECT u.job_id INTO holder_id FROM sluice.unique_keys u WHERE u.key = dead.unique_key;
            RAISE EXCEPTION 'sluice.retry_dead: job % holds unique key %, so dead letter % was left where it is',
                    holder_id, dead.unique_key, dead.id
                USING ERRCODE = 'unique_violation',
                      HINT = 'That job already does this work (or completed it recently). Discard this dead letter '
                             'with sluice.discard_dead(), or wait until that job is gone.';
        END IF;
    END IF;
    INSERT INTO sluice.jobs (id, queue, kind, payload, priority, run_at, attempt, max_attempts, unique_key, errors,
                             created_at, enqueued_by)
    VALUES (dead.id, dead.queue, dead.kind, dead.payload, dead.priority, now(), 0, dead.max_attempts,
            dead.unique_key, dead.errors, dead.created_at, dead.enqueued_by);
    DELETE FROM sluice.dead_letters d WHERE d.id = dead.id;
    PERFORM pg_notify('sluice_jobs', dead.queue);
    PERFORM sluice.record_operator_action('retry_dead', dead.id::text, 'back in queue ' || dead.queue);
    RETURN dead.id;
END
$$;
COMMENT ON FUNCTION sluice.retry_dead(bigint) IS
    'Moves a dead letter back to its queue under the same id, with its attempts reset and its error history kept. '
    'Refused (SQLSTATE 23505) if another job now holds its unique key.';

CREATE OR REPLACE FUNCTION sluice.retry_dead_kind(kind text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dead_id bigint;
    moved   integer := 0;
BEGIN
    FOR dead_id IN SELECT d.id FROM sluice.dead_letters d WHERE d.kind = retry_dead_kind.kind ORDER BY d.died_at LOOP
        BEGIN
            PERFORM sluice.retry_dead(dead_id);
            moved := moved + 1;
        EXCEPTION WHEN unique_violation THEN
            RAISE NOTICE 'sluice.retry_dead_kind: dead letter % left in place: its unique key is held by another job', dead_id;
        END;
    END LOOP;
    PERFORM sluice.record_operator_action('retry_dead_kind', retry_dead_kind.kind, moved || ' back in their queues');
    RETURN moved;
END
$$;
COMMENT ON FUNCTION sluice.retry_dead_kind(text) IS
    'Retries every dead letter of a kind (oldest first) and returns how many went back; those whose unique key '
    'another job holds stay, with a NOTICE each.';

CREATE OR REPLACE FUNCTION sluice.discard_dead(id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    discarded boolean;
BEGIN
    DELETE FROM sluice.dead_letters d WHERE d.id = discard_dead.id;
    discarded := FOUND;
    PERFORM sluice.record_operator_action('discard_dead', discard_dead.id::text,
                                          CASE WHEN discarded THEN 'discarded' ELSE 'no such dead letter' END);
    RETURN discarded;
END
$$;
COMMENT ON FUNCTION sluice.discard_dead(bigint) IS 'Deletes one dead letter; false if there was none with that id.';

-- The operator functions run as the schema's owner and record who called them; nobody else may call them
-- until granted (sluice_operator is, by sluice.grant_roles()).
REVOKE ALL ON FUNCTION sluice.pause_queue(text), sluice.resume_queue(text), sluice.cancel(bigint),
    sluice.retry_dead(bigint), sluice.retry_dead_kind(text), sluice.discard_dead(bigint) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------
-- Views for operators
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE VIEW sluice.queue_stats AS
WITH names AS (
    SELECT DISTINCT queue FROM sluice.jobs
    UNION SELECT queue FROM sluice.dead_letters
    UNION SELECT queue FROM sluice.paused_queues
), live AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'available' AND run_at <= now()) AS available,
           count(*) FILTER (WHERE state = 'available' AND run_at > now())  AS scheduled,
           count(*) FILTER (WHERE state = 'running')                       AS running,
           min(run_at) FILTER (WHERE state = 'available' AND run_at <= now()) AS oldest_run_at
    FROM sluice.jobs
    GROUP BY queue
), dead AS (
    SELECT queue, count(*) AS dead FROM sluice.dead_letters GROUP BY queue
)
SELECT n.queue,
       EXISTS (SELECT 1 FROM sluice.paused_queues p WHERE p.queue = n.queue) AS paused,
       coalesce(l.available, 0) AS available,
       coalesce(l.scheduled, 0) AS scheduled,
       coalesce(l.running, 0)   AS running,
       coalesce(d.dead, 0)      AS dead,
       now() - l.oldest_run_at  AS oldest_available_age
FROM names n
LEFT JOIN live l ON l.queue = n.queue
LEFT JOIN dead d ON d.queue = n.queue
ORDER BY n.queue;
COMMENT ON VIEW sluice.queue_stats IS
    'One row per queue: paused, available (due now), scheduled (future run_at, including retries waiting out '
    'their backoff), running, dead (in sluice.dead_letters), and how long the oldest available job has waited.';

CREATE OR REPLACE VIEW sluice.dead_letter_summary AS
SELECT kind,
       count(*) AS dead,
       (array_agg(errors -> -1 ->> 'error' ORDER BY died_at DESC))[1] AS latest_error,
       (array_agg(reason ORDER BY died_at DESC))[1]                  AS latest_reason,
       max(died_at) AS latest_died_at
FROM sluice.dead_letters
GROUP BY kind
ORDER BY max(died_at) DESC;
COMMENT ON VIEW sluice.dead_letter_summary IS
    'One row per job kind with dead letters: how many, the latest error and reason, and when the latest died.';

-- ---------------------------------------------------------------------------------------------------
-- Service keys: how other services call the app's API (`sluice keys create|list|revoke`)
-- ---------------------------------------------------------------------------------------------------

-- A key is `sk_sluice_` and 32 random bytes; only its SHA-256 is kept (a key that random needs no slow
-- hash), so a copy of this table lets nobody call the API. The prefix identifies a key in lists and logs.
CREATE TABLE IF NOT EXISTS sluice.api_keys (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix       text        NOT NULL UNIQUE CHECK (prefix LIKE 'sk\_sluice\_%'),
    secret_hash  bytea       NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    scopes       text[]      NOT NULL CHECK (cardinality(scopes) > 0
                                 AND scopes <@ ARRAY['access:read', 'usage:write', 'billing:write']),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL DEFAULT SESSION_USER,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
COMMENT ON TABLE sluice.api_keys IS
    'Keys of the services that call the app''s API, by name and scopes (access:read, usage:write, billing:write). '
    'Only the SHA-256 of each key is kept; sluice keys create prints the key once. Revoke with sluice keys revoke '
    'or UPDATE sluice.api_keys SET revoked_at = now() WHERE id = ...; last_used_at is written at most once a minute.';

CREATE OR REPLACE FUNCTION sluice.authenticate_api_key(secret_hash bytea)
RETURNS TABLE (id bigint, name text, scopes text[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    UPDATE sluice.api_keys k SET last_used_at = now()
    WHERE k.secret_hash = authenticate_api_key.secret_hash AND k.revoked_at IS NULL
      AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
    RETURNING k.id, k.name, k.scopes;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT k.id, k.name, k.scopes FROM sluice.api_keys k
        WHERE k.secret_hash = authenticate_api_key.secret_hash AND k.revoked_at IS NULL;
    END IF;
END
$$;
COMMENT ON INDEX sluice.api_keys_prefix_key IS 'A prefix names one key in lists and logs.';
COMMENT ON INDEX sluice.api_keys_secret_hash_key IS 'Finds the key a caller presents, by its SHA-256.';

COMMENT ON FUNCTION sluice.authenticate_api_key(bytea) IS
    'The live key whose SHA-256 this is, with its scopes; no row for an unknown or revoked key. Marks it used '
    '(at most once a minute). The API''s role calls this and cannot read sluice.api_keys itself.';
REVOKE ALL ON FUNCTION sluice.authenticate_api_key(bytea) FROM PUBLIC;

-- The API keeps the keys it checked for a minute; a change to any key (a revocation in psql included)
-- tells every API process to forget them at once (version 14).
CREATE OR REPLACE FUNCTION sluice.notify_api_keys_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify('sluice_api_keys', '');
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION sluice.notify_api_keys_changed() IS
    'Trigger: NOTIFY sluice_api_keys when keys are revoked, deleted or changed, so API processes drop their cache.';
DROP TRIGGER IF EXISTS api_keys_changed ON sluice.api_keys;
CREATE TRIGGER api_keys_changed AFTER UPDATE OF revoked_at, scopes, secret_hash OR DELETE OR TRUNCATE ON sluice.api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.notify_api_keys_changed();
COMMENT ON TRIGGER api_keys_changed ON sluice.api_keys IS
    'Tells the API processes to forget the keys they checked (sluice.notify_api_keys_changed).';

-- ---------------------------------------------------------------------------------------------------
-- Jobs the app's API starts for its callers (version 14)
-- ---------------------------------------------------------------------------------------------------

-- Beside the job rather than in sluice.jobs, so the queue's hot statements and every older worker of a
-- rolling deploy stay as they are; a row outlives its job's stay in sluice.jobs and follows it to
-- sluice.job_results or sluice.dead_letters by id.
CREATE TABLE IF NOT EXISTS sluice.job_callers (
    job_id     bigint      PRIMARY KEY,
    role       text        NOT NULL DEFAULT SESSION_USER,
    caller     text        NOT NULL CHECK (caller ~ '^(user|service):.' AND length(caller) <= 300),
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sluice.job_callers IS
    'Who asked the app''s API for a job: the login role that enqueued it (role, as sluice.jobs.enqueued_by) and '
    'the API''s caller (user:<Clerk user id> or service:<key id>). GET /v1/jobs/{id} answers only that caller '
    'through that role; a row goes when its job''s result or dead letter has been pruned, or the user is erased.';
CREATE INDEX IF NOT EXISTS job_callers_by_age ON sluice.job_callers (created_at);
COMMENT ON INDEX sluice.job_callers_by_age IS 'Serves pruning the rows whose job is gone.';
CREATE INDEX IF NOT EXISTS job_callers_by_caller ON sluice.job_callers (caller);
COMMENT ON INDEX sluice.job_callers_by_caller IS 'Serves erasing a deleted user''s rows.';

CREATE OR REPLACE FUNCTION sluice.start_job_for(caller text, kind text, payload jsonb) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    IF start_job_for.caller IS NULL OR start_job_for.caller !~ '^(user|service):.' OR length(start_job_for.caller) > 300
    THEN
        RAISE EXCEPTION 'sluice.start_job_for: caller must be user:<id> or service:<id>, got %',
                coalesce(left(start_job_for.caller, 40), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- sluice.enqueue checks the kind against sluice.kind_rules for the login role (session_user).
    new_id := sluice.enqueue(start_job_for.kind, start_job_for.payload);
    INSERT INTO sluice.job_callers (job_id, role, caller) VALUES (new_id, session_user, start_job_for.caller);
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION sluice.start_job_for(text, text, jsonb) IS
    'The app''s API starts a job for a caller (user:<id> or service:<id>): sluice.enqueue with the login role''s '
    'rights, and the caller recorded in sluice.job_callers. Returns the job id.';
REVOKE ALL ON FUNCTION sluice.start_job_for(text, text, jsonb) FROM PUBLIC;

-- Version 17: changes to one subscription take turns. Two of a user's changes running at once (a double
-- click, two tabs) reach Stripe in either order, and the one the user made last may not be the one that
-- stays. Version 18: a later change replaces one still waiting (queued, or retrying after a failure), so
-- only a change at Stripe right now holds the next one back, and never for longer than its attempt.
-- Version 19: an attempt that timed out or lost its lease may still be at Stripe (its handler runs on
-- until it returns), so for ten minutes after it the job counts as running; and the caller's rights
-- cover every exclusive kind, since a start can replace jobs of each.
CREATE OR REPLACE FUNCTION sluice.start_exclusive_job_for(caller text, kind text, payload jsonb, exclusive_kinds text[])
RETURNS TABLE (job_id bigint, started boolean, pending_kind text, same_request boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pending      record;
    same_id      bigint;
    running_id   bigint;
    running_kind text;
    waiting      bigint[] := '{}';
    waiting_kind text[]   := '{}';
    new_id       bigint;
BEGIN
    IF start_exclusive_job_for.kind IS NULL
       OR NOT start_exclusive_job_for.kind = ANY (coalesce(start_exclusive_job_for.exclusive_kinds, '{}')) THEN
        RAISE EXCEPTION 'sluice.start_exclusive_job_for: kind % is not among the exclusive kinds %',
                coalesce(start_exclusive_job_for.kind, 'NULL'), start_exclusive_job_for.exclusive_kinds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF start_exclusive_job_for.caller IS NULL OR start_exclusive_job_for.caller !~ '^(user|service):.'
       OR length(start_exclusive_job_for.caller) > 300 THEN
        RAISE EXCEPTION 'sluice.start_exclusive_job_for: caller must be user:<id> or service:<id>, got %',
                coalesce(left(start_exclusive_job_for.caller, 40), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The login role's rights first, whatever is pending, over every kind this call may start or replace
    -- (sluice.enqueue checks the one it starts again).
    IF session_user <> current_user THEN
        PERFORM sluice.authorize_enqueue(
            start_exclusive_job_for.exclusive_kinds,
            array_fill('default'::text, ARRAY[cardinality(start_exclusive_job_for.exclusive_kinds)]),
            array_fill(NULL::text, ARRAY[cardinality(start_exclusive_job_for.exclusive_kinds)]),
            array_fill(0, ARRAY[cardinality(start_exclusive_job_for.exclusive_kinds)]),
            array_fill(now(), ARRAY[cardinality(start_exclusive_job_for.exclusive_kinds)]),
            array_fill(start_exclusive_job_for.payload, ARRAY[cardinality(start_exclusive_job_for.exclusive_kinds)]));
    END IF;
    -- Two requests of one caller look and start one after the other: neither starts beside one it missed.
    PERFORM pg_advisory_xact_lock(
        hashtextextended('sluice.exclusive_job ' || session_user || ' ' || start_exclusive_job_for.caller, 0));
    -- Pending: waiting, running or retrying, and not finished (a result is stored before the job leaves
    -- sluice.jobs). Locked, so a worker's claim neither takes a job this call replaces nor starts one while
    -- it is looked at; a claim in progress is waited for.
    FOR pending IN
        SELECT j.id, j.kind, j.payload,
               CASE WHEN j.state = 'running'
                         OR (j.errors -> -1 ->> 'kind' IN ('timeout', 'lease_expired')
                             AND (j.errors -> -1 ->> 'at')::timestamptz > now() - interval '10 minutes')
                    THEN 'running' ELSE j.state END AS state
        FROM sluice.job_callers c
        JOIN sluice.jobs j ON j.id = c.job_id
        WHERE c.caller = start_exclusive_job_for.caller AND c.role = session_user
          AND j.kind = ANY (start_exclusive_job_for.exclusive_kinds)
          AND NOT EXISTS (SELECT 1 FROM sluice.job_results r WHERE r.job_id = j.id)
        ORDER BY j.id
        FOR UPDATE OF j
    LOOP
        IF same_id IS NULL AND pending.kind = start_exclusive_job_for.kind
           AND pending.payload = start_exclusive_job_for.payload THEN
            same_id := pending.id;
        END IF;
        IF pending.state = 'running' THEN
            running_id := coalesce(running_id, pending.id);
            running_kind := coalesce(running_kind, pending.kind);
        ELSE
            waiting := waiting || pending.id;
            waiting_kind := waiting_kind || pending.kind;
        END IF;
    END LOOP;
    -- The same request again: follow the pending job.
    IF same_id IS NOT NULL THEN
        RETURN QUERY SELECT same_id, false, start_exclusive_job_for.kind, true;
        RETURN;
    END IF;
    -- Another change at Stripe now: wait for it (its attempt ends within its kind's timeout).
    IF running_id IS NOT NULL THEN
        RETURN QUERY SELECT running_id, false, running_kind, false;
        RETURN;
    END IF;
    -- Changes still waiting are replaced: each ends as failed, naming the job that replaced it, and whoever
    -- follows it is woken.
    new_id := sluice.start_job_for(start_exclusive_job_for.caller, start_exclusive_job_for.kind,
                                   start_exclusive_job_for.payload);
    FOR i IN 1 .. cardinality(waiting) LOOP
        PERFORM sluice.record_job_result(waiting[i], waiting_kind[i], jsonb_build_object('sluice_superseded_by', new_id));
        DELETE FROM sluice.unique_keys u
        USING sluice.jobs j WHERE j.id = waiting[i] AND u.key = j.unique_key AND u.job_id = j.id;
        DELETE FROM sluice.jobs j WHERE j.id = waiting[i] AND j.state = 'available';
    END LOOP;
    RETURN QUERY SELECT new_id, true, NULL::text, true;
END
$$;
COMMENT ON FUNCTION sluice.start_exclusive_job_for(text, text, jsonb, text[]) IS
    'sluice.start_job_for, one job at a time per caller among exclusive_kinds (which must include kind). The same '
    'request (kind and payload) while one is pending returns that job (started false, same_request true); while '
    'another is running, nothing starts and that job is returned (started false, pending_kind); otherwise the new '
    'job starts and replaces those still waiting or retrying, which end as failed, superseded by it. The app''s API '
    'starts a user''s subscription changes this way.';
REVOKE ALL ON FUNCTION sluice.start_exclusive_job_for(text, text, jsonb, text[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION sluice.job_for(job_id bigint, caller text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    -- A job stores its result in its own transaction, and leaves sluice.jobs when the worker's next batch
    -- of completions commits: a result says it succeeded, whatever sluice.jobs still shows.
    SELECT CASE
        -- Replaced by a later change of the same caller before it ran (version 18).
        WHEN r.job_id IS NOT NULL AND r.result ? 'sluice_superseded_by' THEN jsonb_build_object(
            'id', c.job_id, 'kind', r.kind, 'state', 'failed',
            'error', format('superseded by job %s, a later change by the same user, before it ran',
                            r.result ->> 'sluice_superseded_by'))
        WHEN r.job_id IS NOT NULL THEN jsonb_build_object(
            'id', c.job_id, 'kind', r.kind, 'state', 'succeeded', 'result', r.result)
        WHEN d.id IS NOT NULL THEN jsonb_build_object(
            'id', c.job_id, 'kind', d.kind, 'state', 'failed', 'attempt', d.attempt,
            'error', left(coalesce(d.errors -> -1 ->> 'error', d.reason), 1000))
        WHEN j.id IS NOT NULL THEN jsonb_build_object(
            'id', c.job_id, 'kind', j.kind, 'attempt', j.attempt,
            'state', CASE WHEN j.state = 'running' THEN 'running' WHEN j.attempt > 0 THEN 'retrying' ELSE 'queued' END)
        END
    FROM sluice.job_callers c
    LEFT JOIN sluice.jobs j ON j.id = c.job_id
    LEFT JOIN sluice.job_results r ON r.job_id = c.job_id
    LEFT JOIN sluice.dead_letters d ON d.id = c.job_id
    WHERE c.job_id = job_for.job_id AND c.role = session_user AND c.caller = job_for.caller
$$;
COMMENT ON FUNCTION sluice.job_for(bigint, text) IS
    'GET /v1/jobs/{id}: {id, kind, state (queued, retrying, running, succeeded, failed), attempt?, result?, error?} '
    'of a job that this login role started for this caller with sluice.start_job_for; NULL for any other job, '
    'and once its result or dead letter is pruned.';
REVOKE ALL ON FUNCTION sluice.job_for(bigint, text) FROM PUBLIC;

-- A job an API caller waits for may die instead of leaving a result: wake the waiter the same way.
CREATE OR REPLACE FUNCTION sluice.notify_job_caller() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM sluice.job_callers c WHERE c.job_id = NEW.id) THEN
        PERFORM pg_notify('sluice_job_results', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION sluice.notify_job_caller() IS
    'Trigger: NOTIFY sluice_job_results when a job an API caller started moves to the dead letters.';
DROP TRIGGER IF EXISTS dead_letters_notify_job_caller ON sluice.dead_letters;
CREATE TRIGGER dead_letters_notify_job_caller AFTER INSERT ON sluice.dead_letters
    FOR EACH ROW EXECUTE FUNCTION sluice.notify_job_caller();
COMMENT ON TRIGGER dead_letters_notify_job_caller ON sluice.dead_letters IS
    'Wakes an API request waiting for the job (sluice.notify_job_caller).';

CREATE OR REPLACE FUNCTION sluice.prune_job_callers(batch_size integer DEFAULT 1000) RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        SELECT c.job_id FROM sluice.job_callers c
        WHERE c.created_at < now() - interval '1 hour'
          AND NOT EXISTS (SELECT 1 FROM sluice.jobs j WHERE j.id = c.job_id)
          AND NOT EXISTS (SELECT 1 FROM sluice.job_results r WHERE r.job_id = c.job_id)
          AND NOT EXISTS (SELECT 1 FROM sluice.dead_letters d WHERE d.id = c.job_id)
        ORDER BY c.created_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), deleted AS (
        DELETE FROM sluice.job_callers c USING gone g WHERE c.job_id = g.job_id RETURNING 1
    )
    SELECT count(*)::integer FROM deleted
$$;
COMMENT ON FUNCTION sluice.prune_job_callers(integer) IS
    'Deletes up to batch_size callers of jobs that left every queue table (their result or dead letter was '
    'pruned) at least an hour ago; returns how many.';

-- ===================================================================================================
-- Outbound events: what the product must hear, written with the change that causes it (version 15)
--
-- billing's functions call billing.emit() in the transaction that changes the model, so an event exists
-- exactly when its change committed; a unique dedup key per cause keeps a re-applied cause from emitting
-- twice. Each event fans out to one outbound.deliver job per enabled endpoint whose filter matches, in
-- queue outbound; the worker signs and POSTs it (Standard Webhooks) and retries for about three days.
-- ===================================================================================================

CREATE TABLE IF NOT EXISTS sluice.outbound_endpoints (
    id                    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url                   text        NOT NULL CHECK (url ~ '^https?://[^/?#@\s]+' AND length(url) <= 2048),
    secret                text        NOT NULL CHECK (secret ~ '^whsec_[A-Za-z0-9+/]+=*$'),
    previous_secret       text        CHECK (previous_secret ~ '^whsec_[A-Za-z0-9+/]+=*$'),
    previous_secret_until timestamptz,
    event_types           text[],
    enabled               boolean     NOT NULL DEFAULT true,
    disabled_at           timestamptz,
    disabled_reason       text,
    from_environment      boolean     NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    last_success_at       timestamptz,
    last_failure_at       timestamptz,
    failing_since         timestamptz,
    last_error            text
);
COMMENT ON TABLE sluice.outbound_endpoints IS
    'Where business events go: an https URL (http only on loopback, checked by sluice endpoints add), its signing '
    'secret (whsec_ and base64; the previous one keeps signing beside it until previous_secret_until after a '
    'rotation), the event types it takes (NULL: all), and its health. Manage with sluice endpoints add|list|'
    'disable|rotate-secret; SLUICE_NOTIFY_URL and SLUICE_NOTIFY_SECRET keep one row (from_environment). An '
    'endpoint answering 410, or failing without a success for outbound_disable_after, is disabled.';
CREATE UNIQUE INDEX IF NOT EXISTS outbound_endpoints_from_environment ON sluice.outbound_endpoints (from_environment)
    WHERE from_environment;
COMMENT ON INDEX sluice.outbound_endpoints_from_environment IS 'At most one endpoint comes from SLUICE_NOTIFY_URL.';

CREATE TABLE IF NOT EXISTS sluice.outbound_events (
    id          text        PRIMARY KEY,
    type        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    body        text        NOT NULL,
    user_id     text,
    dedup_key   text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sluice.outbound_events IS
    'Business events for the app (the outbox): body is the exact JSON every delivery sends, {id, type, '
    'occurred_at, data}, whose data carries the version of the object it describes. dedup_key names the cause '
    '(an event id, a usage threshold of a period), so a cause applied again emits nothing. user_id is the Clerk '
    'user it concerns: erased with the user. Kept outbound_event_retention (30 days).';
COMMENT ON INDEX sluice.outbound_events_dedup_key_key IS 'One event per cause: a cause applied again emits nothing.';
CREATE INDEX IF NOT EXISTS outbound_events_by_time ON sluice.outbound_events (created_at);
COMMENT ON INDEX sluice.outbound_events_by_time IS 'Serves sluice events list --since, replay --since and pruning.';
CREATE INDEX IF NOT EXISTS outbound_events_by_user ON sluice.outbound_events (user_id) WHERE user_id IS NOT NULL;
COMMENT ON INDEX sluice.outbound_events_by_user IS 'Serves erasing a deleted user''s events.';

INSERT INTO sluice.settings (key, value, description) VALUES
    ('outbound_event_retention', '30 days', 'How long an outbound event is kept for replay (sluice events replay).'),
    ('outbound_disable_after', '5 days',
     'An endpoint that has failed without a success for this long is disabled (and the alert fires).'),
    ('outbound_retry_schedule',
     '5 seconds,1 minute,5 minutes,30 minutes,1 hour,2 hours,4 hours,6 hours,8 hours,10 hours,12 hours,12 hours,12 hours',
     'The waits between attempts of an outbound delivery, comma-separated intervals (about 2.8 days in all); the '
     'last repeats if outbound.deliver has more attempts (sluice.kinds), and a longer Retry-After wins.')
ON CONFLICT (key) DO NOTHING;

INSERT INTO sluice.kinds (kind, max_attempts) VALUES ('outbound.deliver', 14) ON CONFLICT (kind) DO NOTHING;

CREATE OR REPLACE FUNCTION sluice.deliver_outbound(event_id text, endpoint_ids bigint[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    event_type text;
    n          integer;
BEGIN
    SELECT e.type INTO event_type FROM sluice.outbound_events e WHERE e.id = deliver_outbound.event_id;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    INSERT INTO sluice.jobs (queue, kind, payload, max_attempts)
    SELECT 'outbound', 'outbound.deliver', jsonb_build_object('event_id', deliver_outbound.event_id, 'endpoint_id', p.id),
           coalesce((SELECT k.max_attempts FROM sluice.kinds k WHERE k.kind = 'outbound.deliver'), 14)
    FROM sluice.outbound_endpoints p
    WHERE p.enabled AND (p.event_types IS NULL OR event_type = ANY (p.event_types))
      AND (endpoint_ids IS NULL OR p.id = ANY (endpoint_ids));
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('sluice_jobs', 'outbound');
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION sluice.deliver_outbound(text, bigint[]) IS
    'Adds an outbound.deliver job (queue outbound) for the event to each enabled endpoint whose filter takes its '
    'type (only those of endpoint_ids when given); returns how many. billing.emit calls it; sluice events replay too.';
REVOKE ALL ON FUNCTION sluice.deliver_outbound(text, bigint[]) FROM PUBLIC;


-- ===================================================================================================
-- Billing: the local subscription model (schema billing)
--
-- Written only by the stripe.event and clerk.event jobs, through billing.apply_stripe_event() and
-- billing.apply_clerk_event(), each in its job's transaction. Events arrive duplicated and out of order:
-- billing.processed_events applies each once, and every row keeps the version it was written from
-- (Stripe: the event's created; Clerk: the user's updated_at, or the deletion's timestamp) and a rank in
-- its object's lifecycle, so an older event never overwrites a newer state and every order of the same
-- events ends in the same state. Read it with:
--   SELECT * FROM billing.user_access WHERE user_id = 'user_...';   -- access, plan, and why
--   SELECT * FROM billing.audit_log WHERE entity_id = 'sub_...' ORDER BY id;
-- ===================================================================================================

CREATE SCHEMA IF NOT EXISTS billing;
COMMENT ON SCHEMA billing IS
    'Sluice''s local model of users (Clerk) and their subscriptions (Stripe), kept by the stripe.event and '
    'clerk.event jobs. billing.user_access says who has access and why; billing.audit_log says what changed.';

CREATE TABLE IF NOT EXISTS billing.settings (
    key         text PRIMARY KEY,
    value       text NOT NULL,
    description text NOT NULL
);
COMMENT ON TABLE billing.settings IS 'Operator settings of the billing model; change value with UPDATE.';
INSERT INTO billing.settings (key, value, description) VALUES
    ('past_due_grace_period', '3 days',
     'How long a past_due subscription keeps access, counted from when it became past_due (a PostgreSQL interval).'),
    ('processed_event_retention', '60 days',
     'How long an applied event''s id is remembered, so a redelivery changes nothing. Never less than 35 days: '
     'Stripe redelivers for 3 days and reconciliation looks 30 days back.'),
    ('usage_event_retention', '90 days',
     'How long usage events and counters are kept after their billing period ended (a use not yet reported to '
     'Stripe is kept until it is).'),
    ('audit_log_retention', 'forever',
     'How long audit log entries are kept (an interval, or forever).'),
    ('status_history_retention', 'forever',
     'How long subscription status reports are kept (an interval, or forever; a past_due subscription keeps its own).')
ON CONFLICT (key) DO NOTHING;

CREATE TABLE IF NOT EXISTS billing.processed_events (
    source        text        NOT NULL CHECK (source IN ('stripe', 'clerk')),
    event_id      text        NOT NULL,
    type          text        NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('applied', 'ignored', 'other_mode')),
    event_created timestamptz,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);
COMMENT ON TABLE billing.processed_events IS
    'Every event applied, once: a redelivery finds its row and changes nothing. outcome: applied; ignored (a type '
    'the model does not use); other_mode (a live event to a test deployment, or the reverse, with STRIPE_MODE set).';

CREATE TABLE IF NOT EXISTS billing.audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    source      text        NOT NULL,
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    entity      text        NOT NULL,
    entity_id   text        NOT NULL,
    action      text        NOT NULL,
    before      jsonb,
    after       jsonb
);
COMMENT ON TABLE billing.audit_log IS
    'Every change to the model: when, from which event, which row, and the row before and after. action: created, '
    'updated, deleted, linked, upgraded or downgraded (a subscription''s price changed to a dearer or cheaper one, '
    'before and after holding the prices), price_changed (same amount), erased (user.deleted: personal data removed '
    'from the user and from these entries).';
CREATE INDEX IF NOT EXISTS audit_log_entity ON billing.audit_log (entity, entity_id, id);
COMMENT ON INDEX billing.audit_log_entity IS 'History of one row, and the erasure of a deleted user''s entries.';

CREATE TABLE IF NOT EXISTS billing.users (
    id         text PRIMARY KEY,
    email      text,
    first_name text,
    last_name  text,
    created_at timestamptz,
    deleted_at timestamptz,
    version    bigint,
    rank       smallint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.users IS
    'Clerk users: primary email and names. A deleted user keeps its id and deleted_at; its email and names are erased.';
COMMENT ON COLUMN billing.users.version IS 'Clerk''s updated_at (ms) of the state written, or the deletion''s timestamp.';
COMMENT ON COLUMN billing.users.rank IS 'Lifecycle rank that wins a tie of versions: 2 deleted, 1 otherwise.';

CREATE TABLE IF NOT EXISTS billing.customers (
    id         text PRIMARY KEY,
    email      text,
    name       text,
    livemode   boolean,
    created_at timestamptz,
    deleted_at timestamptz,
    version    bigint,
    rank       smallint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.customers IS 'Stripe customers. version: the created time (Unix s) of the event written.';

CREATE TABLE IF NOT EXISTS billing.customer_links (
    customer_id text PRIMARY KEY,
    user_id     text NOT NULL,
    linked_by   text NOT NULL,
    event_id    text NOT NULL,
    linked_at   timestamptz NOT NULL DEFAULT now(),
    unlinked_at timestamptz
);
COMMENT ON TABLE billing.customer_links IS
    'Which Clerk user a Stripe customer belongs to, from whichever says so first: the customer''s metadata '
    '(clerk_user_id or user_id), a checkout session''s client_reference_id, or the user''s private_metadata.stripe_customer_id. '
    'A user has one current customer (unlinked_at NULL); a deleted one is kept, unlinked, when a later one is linked.';
CREATE UNIQUE INDEX IF NOT EXISTS customer_links_current_user ON billing.customer_links (user_id) WHERE unlinked_at IS NULL;
COMMENT ON INDEX billing.customer_links_current_user IS 'One current customer per user: the first link wins while it lives.';
CREATE INDEX IF NOT EXISTS customer_links_by_user ON billing.customer_links (user_id);
COMMENT ON INDEX billing.customer_links_by_user IS
    'Finds every customer a user was ever linked to (access, invoices) without scanning the links (version 14).';

CREATE TABLE IF NOT EXISTS billing.products (
    id         text PRIMARY KEY,
    name       text,
    active     boolean,
    livemode   boolean,
    deleted_at timestamptz,
    version    bigint,
    rank       smallint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.products IS 'Stripe products.';

CREATE TABLE IF NOT EXISTS billing.prices (
    id                 text PRIMARY KEY,
    product_id         text,
    currency           text,
    unit_amount        bigint,
    recurring_interval text,
    lookup_key         text,
    active             boolean,
    livemode           boolean,
    deleted_at         timestamptz,
    version            bigint,
    rank               smallint NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.prices IS 'Stripe prices; unit_amount in the currency''s minor unit (cents).';

CREATE TABLE IF NOT EXISTS billing.subscriptions (
    id                   text PRIMARY KEY,
    customer_id          text,
    status               text,
    plan                 text,
    price_id             text,
    product_id           text,
    quantity             bigint,
    amount               bigint,
    currency             text,
    billing_interval     text,
    interval_count       integer,
    items                jsonb NOT NULL DEFAULT '[]',
    created_at           timestamptz,
    current_period_start timestamptz,
    current_period_end   timestamptz,
    trial_start          timestamptz,
    trial_end            timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    cancel_at            timestamptz,
    canceled_at          timestamptz,
    ended_at             timestamptz,
    paused               boolean NOT NULL DEFAULT false,
    livemode             boolean,
    previous_status      text,
    version              bigint,
    rank                 smallint NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.subscriptions IS
    'Stripe subscriptions, with the status Stripe gives them (trialing, active, past_due, unpaid, canceled, paused, '
    'incomplete, incomplete_expired). plan: the first item''s price lookup_key, else its metadata.plan, else its product '
    'id. amount: the sum '
    'of unit_amount x quantity over the items, per interval, in minor units. Periods come from the subscription '
    '(API versions before 2025-03-31) or from its items (later versions).';
COMMENT ON COLUMN billing.subscriptions.items IS
    '[{id, price_id, product_id, lookup_key, plan, unit_amount, quantity, interval, interval_count}] as of version.';
COMMENT ON COLUMN billing.subscriptions.billing_interval IS 'day, week, month or year: what amount is charged per (times interval_count).';
COMMENT ON COLUMN billing.subscriptions.previous_status IS
    'The status the event that wrote this row says the subscription left (its previous_attributes.status): an '
    'event of the same second in that status is older, and loses.';
COMMENT ON COLUMN billing.subscriptions.paused IS 'Payment collection is paused (pause_collection set), or status is paused.';
CREATE INDEX IF NOT EXISTS subscriptions_by_customer ON billing.subscriptions (customer_id);
COMMENT ON INDEX billing.subscriptions_by_customer IS 'Serves billing.user_access.';

CREATE TABLE IF NOT EXISTS billing.subscription_status_history (
    subscription_id text        NOT NULL,
    event_id        text        NOT NULL,
    at              timestamptz NOT NULL,
    status          text        NOT NULL,
    PRIMARY KEY (subscription_id, event_id)
);
COMMENT ON TABLE billing.subscription_status_history IS
    'The status every subscription event reported, applied or not (an older event still tells when a status began): '
    'billing.user_access counts the past_due grace period from it, the same in every order of arrival.';

CREATE TABLE IF NOT EXISTS billing.invoices (
    id                   text PRIMARY KEY,
    customer_id          text,
    subscription_id      text,
    status               text,
    currency             text,
    amount_due           bigint,
    amount_paid          bigint,
    amount_remaining     bigint,
    attempt_count        integer,
    next_payment_attempt timestamptz,
    billing_reason       text,
    period_start         timestamptz,
    period_end           timestamptz,
    last_event_type      text,
    first_failed_at      timestamptz,
    livemode             boolean,
    version              bigint,
    rank                 smallint NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    hosted_invoice_url   text,
    created_at           timestamptz
);
COMMENT ON TABLE billing.invoices IS
    'Stripe invoices: status (draft, open, paid, void, uncollectible), amounts in minor units, and after a failed '
    'payment the attempt count and the next retry. last_event_type shows payment_failed or payment_action_required; '
    'first_failed_at is the earliest invoice.payment_failed seen, whatever the order of arrival.';
CREATE INDEX IF NOT EXISTS invoices_by_subscription ON billing.invoices (subscription_id);
COMMENT ON INDEX billing.invoices_by_subscription IS 'A subscription''s invoices.';

CREATE TABLE IF NOT EXISTS billing.charges (
    id              text PRIMARY KEY,
    customer_id     text,
    invoice_id      text,
    currency        text,
    amount          bigint,
    amount_refunded bigint,
    refunded        boolean,
    livemode        boolean,
    version         bigint,
    rank            smallint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.charges IS 'Stripe charges seen through charge.refunded: amounts and refunds, in minor units.';

CREATE TABLE IF NOT EXISTS billing.disputes (
    id         text PRIMARY KEY,
    charge_id  text,
    currency   text,
    amount     bigint,
    reason     text,
    status     text,
    livemode   boolean,
    version    bigint,
    rank       smallint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.disputes IS 'Stripe disputes (charge.dispute.created) of a charge.';

CREATE TABLE IF NOT EXISTS billing.erasures (
    user_id   text        PRIMARY KEY,
    version   bigint      NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.erasures IS
    'Every user whose personal data was erased (Clerk user.deleted), with the deletion''s version (ms) and no '
    'personal data: what an operator applies again after restoring a backup older than the erasure '
    '(sluice erasures export, then sluice erasures apply; see Backups in the README).';

-- Users deleted before this table existed (version 3 and older) are on the list too.
DO $$
BEGIN
    INSERT INTO billing.erasures (user_id, version, erased_at)
    SELECT u.id, u.version, u.deleted_at FROM billing.users u
    WHERE u.deleted_at IS NOT NULL AND u.version IS NOT NULL
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM sluice.note_upgrade('billing.erasures: users deleted before version 4 listed');
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS billing.plan_limits (
    plan             text NOT NULL,
    feature          text NOT NULL,
    limit_per_period bigint CHECK (limit_per_period >= 0),
    PRIMARY KEY (plan, feature)
);
COMMENT ON TABLE billing.plan_limits IS
    'Operator-set: how much of a feature a plan includes per billing period. NULL limit: unlimited; no row: the plan '
    'does not include the feature. Plan free is what users without a granting subscription get.';

CREATE TABLE IF NOT EXISTS billing.usage_counters (
    user_id      text        NOT NULL,
    feature      text        NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    used         bigint      NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (user_id, feature, period_start)
);
COMMENT ON TABLE billing.usage_counters IS
    'How much of a feature a user used in one billing period, counting allowed uses only. The row is also the lock '
    'that serialises concurrent billing.record_usage calls for one user and feature.';

CREATE TABLE IF NOT EXISTS billing.usage_events (
    idempotency_key text        PRIMARY KEY,
    user_id         text        NOT NULL,
    feature         text        NOT NULL,
    quantity        bigint      NOT NULL CHECK (quantity > 0),
    allowed         boolean     NOT NULL,
    plan            text        NOT NULL,
    limit_value     bigint,
    used            bigint      NOT NULL,
    remaining       bigint,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    reported_at     timestamptz,
    report_error    text
);
COMMENT ON TABLE billing.usage_events IS
    'Every billing.record_usage call, allowed or denied, with the answer it got: a repeated idempotency_key is '
    'answered from here and counts nothing. reported_at: when the use was reported to Stripe (metered prices); '
    'report_error: why Stripe refused it (the use is skipped until an operator sets it back to NULL).';
CREATE INDEX IF NOT EXISTS usage_events_by_user ON billing.usage_events (user_id, feature, recorded_at);
COMMENT ON INDEX billing.usage_events_by_user IS 'A user''s usage history.';

CREATE INDEX IF NOT EXISTS usage_events_unreported ON billing.usage_events (recorded_at)
    WHERE reported_at IS NULL AND allowed AND report_error IS NULL;
COMMENT ON INDEX billing.usage_events_unreported IS 'Serves the stripe.report_usage job: allowed uses not yet reported.';

CREATE TABLE IF NOT EXISTS billing.meters (
    feature    text PRIMARY KEY,
    event_name text NOT NULL
);
COMMENT ON TABLE billing.meters IS
    'Operator-set: features billed by metered prices, and the Stripe billing meter event_name each is reported as. '
    'The stripe.report_usage job sends every allowed use of these features to Stripe once, as a meter event whose '
    'identifier is the use''s idempotency key, and sets billing.usage_events.reported_at.';

-- ---------------------------------------------------------------------------------------------------
-- Reading events: a missing or wrong-typed field is a data_exception (SQLSTATE 22000) naming the field,
-- which the job turns into a permanent failure.
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION billing.field(obj jsonb, path text[], expected text, required boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    value jsonb := obj #> path;
BEGIN
    IF value IS NULL OR jsonb_typeof(value) = 'null' THEN
        IF required THEN
            RAISE EXCEPTION 'event field % is missing (expected %)', array_to_string(path, '.'), expected
                USING ERRCODE = 'data_exception';
        END IF;
        RETURN NULL;
    END IF;
    IF jsonb_typeof(value) <> expected THEN
        RAISE EXCEPTION 'event field % must be a %, got %', array_to_string(path, '.'), expected, jsonb_typeof(value)
            USING ERRCODE = 'data_exception';
    END IF;
    RETURN value;
END
$$;
COMMENT ON FUNCTION billing.field(jsonb, text[], text, boolean) IS
    'The value at path if it has the expected JSON type (string, number, boolean, object, array); NULL if absent and '
    'not required; otherwise raises data_exception (22000) naming the field.';

CREATE OR REPLACE FUNCTION billing.text_at(obj jsonb, path text[], required boolean DEFAULT false) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT billing.field(obj, path, 'string', required) #>> '{}' $$;
COMMENT ON FUNCTION billing.text_at(jsonb, text[], boolean) IS 'A string field, checked (see billing.field).';

CREATE OR REPLACE FUNCTION billing.bigint_at(obj jsonb, path text[], required boolean DEFAULT false) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT (billing.field(obj, path, 'number', required) #>> '{}')::numeric::bigint $$;
COMMENT ON FUNCTION billing.bigint_at(jsonb, text[], boolean) IS 'A whole-number field, checked (see billing.field).';

CREATE OR REPLACE FUNCTION billing.bool_at(obj jsonb, path text[], required boolean DEFAULT false) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$ SELECT (billing.field(obj, path, 'boolean', required) #>> '{}')::boolean $$;
COMMENT ON FUNCTION billing.bool_at(jsonb, text[], boolean) IS 'A boolean field, checked (see billing.field).';

CREATE OR REPLACE FUNCTION billing.time_at(obj jsonb, path text[]) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$ SELECT to_timestamp(billing.bigint_at(obj, path)) $$;
COMMENT ON FUNCTION billing.time_at(jsonb, text[]) IS 'A Unix-seconds field as a timestamp, checked; NULL if absent.';

CREATE OR REPLACE FUNCTION billing.id_at(obj jsonb, path text[], required boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Stripe sends a related object as its id, or expanded as an object with an id.
    IF jsonb_typeof(obj #> path) = 'object' THEN
        RETURN billing.text_at(obj, path || '{id}'::text[], true);
    END IF;
    RETURN billing.text_at(obj, path, required);
END
$$;
COMMENT ON FUNCTION billing.id_at(jsonb, text[], boolean) IS 'A reference to another Stripe object: its id, or the id of the expanded object.';

-- ---------------------------------------------------------------------------------------------------

-- Writing rows: one versioned write for every table, with its audit entry.
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION billing.write(
    entity     text,
    row_id     text,
    fields     jsonb,
    version    bigint,
    rank       smallint,
    source     text,
    event_id   text,
    event_type text
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    before_row jsonb;
    after_row  jsonb;
    new_row    jsonb := fields || jsonb_build_object('id', row_id, 'version', version, 'rank', rank, 'updated_at', now());
    columns    text;
    target     regclass := to_regclass(format('billing.%I', entity));
    unknown    text;
BEGIN
    -- jsonb_populate_record skips a key that names no column, so a misspelt one would be dropped without a
    -- word. (A table that does not exist fails at the first read below.)
    SELECT string_agg(format('"%s"', key), ' or ' ORDER BY key) INTO unknown
    FROM jsonb_object_keys(fields) AS key
    WHERE target IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                      WHERE a.attrelid = target AND a.attname = key AND a.attnum > 0 AND NOT a.attisdropped);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'billing.write: billing.% has no column %', entity, unknown
            USING ERRCODE = 'SL400',
                  HINT = format('Every key of fields must name a column of billing.%s: check the spelling, or add the '
                                'column (and its upgrade step) in schema.sql.', entity);
    END IF;
    EXECUTE format('SELECT to_jsonb(t) FROM billing.%I t WHERE t.id = $1 FOR UPDATE', entity) INTO before_row USING row_id;
    IF before_row IS NULL THEN
        EXECUTE format('INSERT INTO billing.%1$I SELECT * FROM jsonb_populate_record(NULL::billing.%1$I, $1) '
                       'ON CONFLICT (id) DO NOTHING RETURNING to_jsonb(%1$I)', entity)
            INTO after_row USING new_row;
        IF after_row IS NOT NULL THEN
            INSERT INTO billing.audit_log (source, event_id, event_type, entity, entity_id, action, before, after)
            VALUES (source, event_id, event_type, entity, row_id, 'created', NULL, after_row - 'updated_at');
            RETURN after_row;
        END IF;
        -- A concurrent job inserted it first: update it like any other row.
        EXECUTE format('SELECT to_jsonb(t) FROM billing.%I t WHERE t.id = $1 FOR UPDATE', entity) INTO before_row USING row_id;
    END IF;

    -- An older event never overwrites a newer state; on a tie the later lifecycle state wins, and equals go through.
    IF (before_row ->> 'version') IS NOT NULL AND (
           version < (before_row ->> 'version')::bigint
        OR (version = (before_row ->> 'version')::bigint AND rank < (before_row ->> 'rank')::smallint)) THEN
        RETURN NULL;
    END IF;

    SELECT string_agg(format('%I = r.%I', key, key), ', ') INTO columns FROM jsonb_object_keys(new_row) AS key;
    EXECUTE format('UPDATE billing.%1$I AS t SET %2$s FROM jsonb_populate_record(NULL::billing.%1$I, $1) AS r '
                   'WHERE t.id = $2 RETURNING to_jsonb(t)', entity, columns)
        INTO after_row USING new_row, row_id;
    IF (after_row - 'updated_at' - 'version' - 'rank') IS DISTINCT FROM (before_row - 'updated_at' - 'version' - 'rank') THEN
        INSERT INTO billing.audit_log (source, event_id, event_type, entity, entity_id, action, before, after)
        VALUES (source, event_id, event_type, entity, row_id,
                CASE WHEN after_row ->> 'deleted_at' IS NOT NULL AND before_row ->> 'deleted_at' IS NULL
                     THEN 'deleted' ELSE 'updated' END,
                before_row - 'updated_at', after_row - 'updated_at');
    END IF;
    RETURN after_row || jsonb_build_object('_before', before_row);
END
$$;
COMMENT ON FUNCTION billing.write(text, text, jsonb, bigint, smallint, text, text, text) IS
    'Writes the given columns of one row of billing.<entity> from an event of the given version and lifecycle rank, '
    'unless the row holds a newer version (or the same version at a later rank); logs the change in audit_log. '
    'Returns the new row (with _before, the old one), or NULL when the event was older. A key of fields that names '
    'no column of the table raises SL400 naming it.';

CREATE OR REPLACE FUNCTION billing.lock_customer(customer_id text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('billing.customer:' || customer_id, 0))
    WHERE customer_id IS NOT NULL
$$;
COMMENT ON FUNCTION billing.lock_customer(text) IS
    'Makes the transactions that apply one Stripe customer''s events, or link it to a user, take turns until '
    'commit (version 16), so the outbound access.changed each computes sees what the other committed: two '
    'related events applied at once (a checkout''s link and its subscription) would otherwise each miss the other.';

CREATE OR REPLACE FUNCTION billing.link(customer_id text, user_id text, linked_by text, event_id text, event_type text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    replaced text;
BEGIN
    IF customer_id IS NULL OR user_id IS NULL THEN
        RETURN;
    END IF;
    -- The customer's events take turns (version 16): see billing.lock_customer.
    PERFORM billing.lock_customer(customer_id);
    IF EXISTS (SELECT 1 FROM billing.customer_links l WHERE l.customer_id = link.customer_id) THEN
        RETURN;
    END IF;
    -- A user's customer that Stripe deleted no longer stands in the way of the next one; it stays as history.
    UPDATE billing.customer_links l SET unlinked_at = now()
    WHERE l.user_id = link.user_id AND l.unlinked_at IS NULL
      AND EXISTS (SELECT 1 FROM billing.customers c WHERE c.id = l.customer_id AND c.deleted_at IS NOT NULL)
    RETURNING l.customer_id INTO replaced;
    IF replaced IS NOT NULL THEN
        INSERT INTO billing.audit_log (source, event_id, event_type, entity, entity_id, action, before)
        VALUES (CASE WHEN linked_by = 'clerk' THEN 'clerk' ELSE 'stripe' END, link.event_id, event_type,
                'customer_links', replaced, 'unlinked',
                jsonb_build_object('customer_id', replaced, 'user_id', link.user_id));
    END IF;
    INSERT INTO billing.customer_links (customer_id, user_id, linked_by, event_id)
    VALUES (link.customer_id, link.user_id, link.linked_by, link.event_id)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        INSERT INTO billing.audit_log (source, event_id, event_type, entity, entity_id, action, after)
        VALUES (CASE WHEN linked_by = 'clerk' THEN 'clerk' ELSE 'stripe' END, link.event_id, event_type,
                'customer_links', link.customer_id, 'linked',
                jsonb_build_object('customer_id', link.customer_id, 'user_id', link.user_id, 'linked_by', linked_by));
    END IF;
END
$$;
COMMENT ON FUNCTION billing.link(text, text, text, text, text) IS
    'Links a Stripe customer and a Clerk user if the customer is not linked yet and the user has no current live '
    'customer: the first source to say so wins. A user''s deleted customer is unlinked (kept, with unlinked_at) '
    'when a later one is linked.';

-- ---------------------------------------------------------------------------------------------------
-- Applying events: one function per family of Stripe event types, behind one dispatcher. A family
-- function gets the event's type, its data.object, its id and its created time (Unix s), and writes
-- through billing.write, so every family keeps the same version and audit rules.
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION billing.set_outcome(source text, event_id text, outcome text) RETURNS text
LANGUAGE sql AS $$
    UPDATE billing.processed_events p SET outcome = set_outcome.outcome
    WHERE p.source = set_outcome.source AND p.event_id = set_outcome.event_id;
    SELECT outcome;
$$;
COMMENT ON FUNCTION billing.set_outcome(text, text, text) IS
    'Records that an event was not applied (ignored, other_mode) and returns the outcome.';

CREATE OR REPLACE FUNCTION billing.future_outcome(version_seconds double precision) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT 'future:' || pg_catalog.ceil(version_seconds - extract(epoch FROM pg_catalog.now()))::bigint
    WHERE version_seconds - extract(epoch FROM pg_catalog.now()) > 300
$$;
COMMENT ON FUNCTION billing.future_outcome(double precision) IS
    'future:<seconds ahead> when an event''s version (in seconds) is more than 5 minutes ahead of the database '
    'clock, else NULL. Such an event is not applied: its version would win every later comparison and freeze the '
    'row. The stripe.event and clerk.event jobs snooze on it, and give up after an hour.';

CREATE OR REPLACE FUNCTION billing.apply_stripe_customer_event(event_type text, obj jsonb, event_id text, created bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    object_id text;
BEGIN
    object_id := billing.text_at(obj, '{id}', true);
    PERFORM billing.write('customers', object_id,
        CASE WHEN event_type = 'customer.deleted'
             THEN jsonb_build_object('deleted_at', to_timestamp(created))
             ELSE jsonb_build_object(
                'email', billing.text_at(obj, '{email}'), 'name', billing.text_at(obj, '{name}'),
                'livemode', billing.bool_at(obj, '{livemode}'), 'created_at', billing.time_at(obj, '{created}'))
        END,
        created, (CASE WHEN event_type = 'customer.deleted' THEN 2 ELSE 1 END)::smallint,
        'stripe', event_id, event_type);
    PERFORM billing.link(object_id,
        coalesce(billing.text_at(obj, '{metadata,clerk_user_id}'), billing.text_at(obj, '{metadata,user_id}')),
        'stripe_customer_metadata', event_id, event_type);
    -- A deleted customer, or one of an erased user, keeps no email or name, whatever arrives later.
    IF billing.is_erased_customer(object_id) THEN
        PERFORM billing.erase_customer(object_id);
    END IF;
END
$$;
COMMENT ON FUNCTION billing.apply_stripe_customer_event(text, jsonb, text, bigint) IS
    'customer.created, .updated, .deleted: the customer row, and its link to a Clerk user from metadata.clerk_user_id '
    '(or metadata.user_id). A deletion outranks any other state of the same second, and erases the customer''s email '
    'and name (billing.erase_customer), as does any event of a customer of an erased user.';

CREATE OR REPLACE FUNCTION billing.subscription_rank(status text) RETURNS smallint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (CASE WHEN status IN ('canceled', 'incomplete_expired') THEN 3
                 WHEN status = 'incomplete' THEN 1
                 ELSE 2 END)::smallint
$$;
COMMENT ON FUNCTION billing.subscription_rank(text) IS
    'A subscription status''s place in its lifecycle, which wins a tie of versions when previous_attributes does '
    'not decide it: 3 terminal (canceled, incomplete_expired), 2 live (trialing, active, past_due, unpaid, paused), '
    '1 incomplete.';

CREATE OR REPLACE FUNCTION billing.apply_stripe_subscription_event(
    event_type text, obj jsonb, previous jsonb, event_id text, created bigint
) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    object_id   text;
    items       jsonb;
    first_item  jsonb;
    status      text;
    left_status text;
    stored      record;
    rank        smallint;
    written     jsonb;
    old_amount  bigint;
    new_amount  bigint;
BEGIN
    object_id := billing.text_at(obj, '{id}', true);
    status := billing.text_at(obj, '{status}', true);
    left_status := billing.text_at(previous, '{status}');
    rank := billing.subscription_rank(status);
    -- A tie of versions (Stripe's created is whole seconds): an event that says it left the stored status is
    -- the later one and wins; the stored row, if it says it left this event's status, is the later one and
    -- this event loses; otherwise the lifecycle rank decides, and equal ranks go to the later arrival.
    SELECT s.status, s.previous_status, s.version, s.rank INTO stored FROM billing.subscriptions s WHERE s.id = object_id;
    IF stored.version = created AND stored.status IS DISTINCT FROM status THEN
        IF left_status = stored.status THEN
            rank := greatest(rank, stored.rank);
        ELSIF stored.previous_status = status THEN
            rank := -1;
        END IF;
    END IF;
    items := coalesce(billing.field(obj, '{items,data}', 'array', false), '[]');
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', billing.text_at(i, '{id}'),
               'price_id', billing.id_at(i, '{price}'),
               'product_id', billing.id_at(i, '{price,product}'),
               'lookup_key', billing.text_at(i, '{price,lookup_key}'),
               'plan', billing.text_at(i, '{price,metadata,plan}'),
               'unit_amount', billing.bigint_at(i, '{price,unit_amount}'),
               'interval', billing.text_at(i, '{price,recurring,interval}'),
               'interval_count', billing.bigint_at(i, '{price,recurring,interval_count}'),
               'quantity', coalesce(billing.bigint_at(i, '{quantity}'), 1)) ORDER BY n), '[]')
    INTO items FROM jsonb_array_elements(items) WITH ORDINALITY AS e(i, n);
    first_item := items -> 0;
    INSERT INTO billing.subscription_status_history (subscription_id, event_id, at, status)
    VALUES (object_id, event_id, to_timestamp(created), status)
    ON CONFLICT DO NOTHING;
    written := billing.write('subscriptions', object_id, jsonb_build_object(
            'customer_id', billing.id_at(obj, '{customer}', true),
            'status', status,
            'plan', coalesce(first_item ->> 'lookup_key', first_item ->> 'plan', first_item ->> 'product_id',
                             first_item ->> 'price_id'),
            'price_id', first_item ->> 'price_id',
            'product_id', first_item ->> 'product_id',
            'quantity', (first_item ->> 'quantity')::bigint,
            'amount', (SELECT sum((i ->> 'unit_amount')::bigint * (i ->> 'quantity')::bigint) FROM jsonb_array_elements(items) i),
            -- API versions without a top-level currency: the first item's price has it.
            'currency', coalesce(billing.text_at(obj, '{currency}'), billing.text_at(obj, '{items,data,0,price,currency}')),
            'billing_interval', first_item ->> 'interval',
            'interval_count', coalesce((first_item ->> 'interval_count')::integer, 1),
            'created_at', billing.time_at(obj, '{created}'),
            'items', items,
            -- 2020-era payloads put the period on the subscription, current ones on each item.
            'current_period_start', coalesce(billing.time_at(obj, '{current_period_start}'),
                (SELECT min(billing.time_at(i, '{current_period_start}')) FROM jsonb_array_elements(obj -> 'items' -> 'data') i)),
            'current_period_end', coalesce(billing.time_at(obj, '{current_period_end}'),
                (SELECT max(billing.time_at(i, '{current_period_end}')) FROM jsonb_array_elements(obj -> 'items' -> 'data') i)),
            'trial_start', billing.time_at(obj, '{trial_start}'),
            'trial_end', billing.time_at(obj, '{trial_end}'),
            'cancel_at_period_end', coalesce(billing.bool_at(obj, '{cancel_at_period_end}'), false),
            'cancel_at', billing.time_at(obj, '{cancel_at}'),
            'canceled_at', billing.time_at(obj, '{canceled_at}'),
            'ended_at', billing.time_at(obj, '{ended_at}'),
            'paused', status = 'paused' OR billing.field(obj, '{pause_collection}', 'object', false) IS NOT NULL,
            'livemode', billing.bool_at(obj, '{livemode}'),
            'previous_status', left_status),
        created, rank, 'stripe', event_id, event_type);
    -- An upgrade or downgrade: the price changed.
    IF written IS NOT NULL AND written -> '_before' IS NOT NULL
       AND written ->> 'price_id' IS DISTINCT FROM written -> '_before' ->> 'price_id'
       AND written -> '_before' ->> 'price_id' IS NOT NULL THEN
        old_amount := (written -> '_before' ->> 'amount')::bigint;
        new_amount := (written ->> 'amount')::bigint;
        INSERT INTO billing.audit_log (source, event_id, event_type, entity, entity_id, action, before, after)
        VALUES ('stripe', event_id, event_type, 'subscriptions', object_id,
                CASE WHEN new_amount > old_amount THEN 'upgraded'
                     WHEN new_amount < old_amount THEN 'downgraded' ELSE 'price_changed' END,
                jsonb_build_object('price_id', written -> '_before' ->> 'price_id', 'plan', written -> '_before' ->> 'plan',
                                   'amount', old_amount),
                jsonb_build_object('price_id', written ->> 'price_id', 'plan', written ->> 'plan', 'amount', new_amount));
    END IF;
END
$$;
COMMENT ON FUNCTION billing.apply_stripe_subscription_event(text, jsonb, jsonb, text, bigint) IS
    'customer.subscription.*: the subscription (status, plan, items, amount, periods, trial, cancellation), the '
    'status history every event reports, and an upgraded, downgraded or price_changed audit entry when the price '
    'changed. previous is the event''s data.previous_attributes, which decides a tie of versions first.';

-- Rows written before version 7 carry the old ranks (1 live or incomplete, 2 terminal).
DO $$
BEGIN
    UPDATE billing.subscriptions s SET rank = billing.subscription_rank(s.status)
    WHERE s.rank IS DISTINCT FROM billing.subscription_rank(s.status) AND s.status IS NOT NULL;
    IF FOUND THEN
        PERFORM sluice.note_upgrade('billing.subscriptions: ranks recomputed (incomplete 1, live 2, terminal 3)');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION billing.apply_stripe_invoice_event(event_type text, obj jsonb, event_id text, created bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    object_id text;
    status    text;
BEGIN
    object_id := billing.text_at(obj, '{id}', true);
    status := billing.text_at(obj, '{status}', true);
    PERFORM billing.write('invoices', object_id, jsonb_build_object(
            'customer_id', billing.id_at(obj, '{customer}'),
            'subscription_id', coalesce(billing.id_at(obj, '{subscription}'),
                                        billing.id_at(obj, '{parent,subscription_details,subscription}')),
            'status', status,
            'currency', billing.text_at(obj, '{currency}'),
            'amount_due', billing.bigint_at(obj, '{amount_due}', true),
            'amount_paid', billing.bigint_at(obj, '{amount_paid}'),
            'amount_remaining', billing.bigint_at(obj, '{amount_remaining}'),
            'attempt_count', billing.bigint_at(obj, '{attempt_count}'),
            'next_payment_attempt', billing.time_at(obj, '{next_payment_attempt}'),
            'billing_reason', billing.text_at(obj, '{billing_reason}'),
            'period_start', billing.time_at(obj, '{period_start}'),
            'period_end', billing.time_at(obj, '{period_end}'),
            'last_event_type', event_type,
            'livemode', billing.bool_at(obj, '{livemode}'),
            -- The hosted page shows the customer's name and address: none for an erased customer.
            'hosted_invoice_url', CASE WHEN billing.is_erased_customer(billing.id_at(obj, '{customer}')) THEN NULL
                                       ELSE billing.text_at(obj, '{hosted_invoice_url}') END,
            'created_at', billing.time_at(obj, '{created}')),
        created, (CASE status WHEN 'draft' THEN 0 WHEN 'open' THEN 1 ELSE 2 END)::smallint,
        'stripe', event_id, event_type);
    IF event_type = 'invoice.payment_failed' THEN
        -- Outside the version rule on purpose: the earliest failure, whichever event arrives last.
        UPDATE billing.invoices i SET first_failed_at = least(i.first_failed_at, to_timestamp(created))
        WHERE i.id = object_id AND i.first_failed_at IS DISTINCT FROM least(i.first_failed_at, to_timestamp(created));
    END IF;
END
$$;
COMMENT ON FUNCTION billing.apply_stripe_invoice_event(text, jsonb, text, bigint) IS
    'invoice.*: the invoice (status, amounts, attempt count, next payment attempt, period), ranked draft < open < '
    'paid, void, uncollectible; invoice.payment_failed also keeps the earliest failure in first_failed_at.';

CREATE OR REPLACE FUNCTION billing.apply_stripe_catalog_event(event_type text, obj jsonb, event_id text, created bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF event_type LIKE 'product.%' THEN
        PERFORM billing.write('products', billing.text_at(obj, '{id}', true),
            jsonb_build_object('name', billing.text_at(obj, '{name}'), 'active', billing.bool_at(obj, '{active}'),
                               'livemode', billing.bool_at(obj, '{livemode}'),
                               'deleted_at', CASE WHEN event_type = 'product.deleted' THEN to_timestamp(created) END),
            created, (CASE WHEN event_type = 'product.deleted' THEN 2 ELSE 1 END)::smallint, 'stripe', event_id, event_type);
    ELSE
        PERFORM billing.write('prices', billing.text_at(obj, '{id}', true),
            jsonb_build_object('product_id', billing.id_at(obj, '{product}'), 'currency', billing.text_at(obj, '{currency}'),
                               'unit_amount', billing.bigint_at(obj, '{unit_amount}'),
                               'recurring_interval', billing.text_at(obj, '{recurring,interval}'),
                               'lookup_key', billing.text_at(obj, '{lookup_key}'),
                               'active', billing.bool_at(obj, '{active}'), 'livemode', billing.bool_at(obj, '{livemode}'),
                               'deleted_at', CASE WHEN event_type = 'price.deleted' THEN to_timestamp(created) END),
            created, (CASE WHEN event_type = 'price.deleted' THEN 2 ELSE 1 END)::smallint, 'stripe', event_id, event_type);
    END IF;
END
$$;
COMMENT ON FUNCTION billing.apply_stripe_catalog_event(text, jsonb, text, bigint) IS
    'product.* and price.*: the catalog that plans and amounts are read from. A deletion outranks any other state.';

CREATE OR REPLACE FUNCTION billing.apply_stripe_checkout_event(event_type text, obj jsonb, event_id text, created bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM billing.link(billing.id_at(obj, '{customer}'),
        coalesce(billing.text_at(obj, '{client_reference_id}'), billing.text_at(obj, '{metadata,clerk_user_id}'),
                 billing.text_at(obj, '{metadata,user_id}')),
        'stripe_checkout', event_id, event_type);
END
$$;
COMMENT ON FUNCTION billing.apply_stripe_checkout_event(text, jsonb, text, bigint) IS
    'checkout.session.completed: links the session''s customer to the Clerk user named by client_reference_id '
    '(or metadata.clerk_user_id, metadata.user_id).';

CREATE OR REPLACE FUNCTION billing.apply_stripe_charge_event(event_type text, obj jsonb, event_id text, created bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF event_type = 'charge.refunded' THEN
        PERFORM billing.write('charges', billing.text_at(obj, '{id}', true), jsonb_build_object(
                'customer_id', billing.id_at(obj, '{customer}'), 'invoice_id', billing.id_at(obj, '{invoice}'),
                'currency', billing.text_at(obj, '{currency}'), 'amount', billing.bigint_at(obj, '{amount}', true),
                'amount_refunded', billing.bigint_at(obj, '{amount_refunded}', true),
                'refunded', billing.bool_at(obj, '{refunded}'), 'livemode', billing.bool_at(obj, '{livemode}')),
            created, 1::smallint, 'stripe', event_id, event_type);
    ELSE
        PERFORM billing.write('disputes', billing.text_at(obj, '{id}', true), jsonb_build_object(
                'charge_id', billing.id_at(obj, '{charge}', true), 'currency', billing.text_at(obj, '{currency}'),
                'amount', billing.bigint_at(obj, '{amount}', true), 'reason', billing.text_at(obj, '{reason}'),
                'status', billing.text_at(obj, '{status}'), 'livemode', billing.bool_at(obj, '{livemode}')),
            created, 1::smallint, 'stripe', event_id, event_type);
    END IF;
END
$$;
COMMENT ON FUNCTION billing.apply_stripe_charge_event(text, jsonb, text, bigint) IS
    'charge.refunded and charge.dispute.created: refunds of a charge, and disputes against it.';

CREATE OR REPLACE FUNCTION billing.stripe_event_family(event_type text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN event_type IN ('customer.created', 'customer.updated', 'customer.deleted') THEN 'customer'
        WHEN event_type LIKE 'customer.subscription.%' THEN 'subscription'
        WHEN event_type IN ('invoice.created', 'invoice.updated', 'invoice.finalized', 'invoice.paid',
                            'invoice.payment_succeeded', 'invoice.payment_failed', 'invoice.payment_action_required',
                            'invoice.voided', 'invoice.marked_uncollectible', 'invoice.finalization_failed') THEN 'invoice'
        WHEN event_type IN ('product.created', 'product.updated', 'product.deleted',
                            'price.created', 'price.updated', 'price.deleted') THEN 'catalog'
        WHEN event_type = 'checkout.session.completed' THEN 'checkout'
        WHEN event_type IN ('charge.refunded', 'charge.dispute.created') THEN 'charge'
    END
$$;
COMMENT ON FUNCTION billing.stripe_event_family(text) IS
    'Which family function applies a Stripe event type (customer, subscription, invoice, catalog, checkout, charge), '
    'or NULL for a type the model does not use. A new type joins a family here; a new family also needs a '
    'billing.apply_stripe_<family>_event function and a line in billing.apply_stripe_event.';

CREATE OR REPLACE FUNCTION billing.apply_stripe_event(event jsonb, mode text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
<<apply>>
DECLARE
    event_id   text    := billing.text_at(event, '{id}', true);
    event_type text    := billing.text_at(event, '{type}', true);
    created    bigint  := billing.bigint_at(event, '{created}', true);
    livemode   boolean := billing.bool_at(event, '{livemode}');
    obj        jsonb   := billing.field(event, '{data,object}', 'object');
    problem    text;
BEGIN
    IF billing.future_outcome(created) IS NOT NULL THEN
        RETURN billing.future_outcome(created);
    END IF;
    PERFORM billing.lock_customer(
        CASE WHEN obj ->> 'object' = 'customer' THEN obj ->> 'id' ELSE billing.id_at(obj, '{customer}') END);
    INSERT INTO billing.processed_events (source, event_id, type, outcome, event_created)
    VALUES ('stripe', event_id, event_type, 'applied', to_timestamp(created))
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;
    IF mode IS NOT NULL AND livemode IS NOT NULL AND livemode <> (mode = 'live') THEN
        RETURN billing.set_outcome('stripe', apply.event_id, 'other_mode');
    END IF;

    CASE billing.stripe_event_family(event_type)
        WHEN 'customer' THEN PERFORM billing.apply_stripe_customer_event(event_type, obj, event_id, created);
        WHEN 'subscription' THEN
            PERFORM billing.apply_stripe_subscription_event(
                event_type, obj, billing.field(event, '{data,previous_attributes}', 'object', false), event_id, created);
        WHEN 'invoice' THEN PERFORM billing.apply_stripe_invoice_event(event_type, obj, event_id, created);
        WHEN 'catalog' THEN PERFORM billing.apply_stripe_catalog_event(event_type, obj, event_id, created);
        WHEN 'checkout' THEN PERFORM billing.apply_stripe_checkout_event(event_type, obj, event_id, created);
        WHEN 'charge' THEN PERFORM billing.apply_stripe_charge_event(event_type, obj, event_id, created);
        ELSE RETURN billing.set_outcome('stripe', apply.event_id, 'ignored');
    END CASE;
    -- What the app hears of it, in this same transaction (version 14). A field it cannot read costs the app an
    -- event, with a warning in PostgreSQL's log, never the model its update (version 16).
    BEGIN
        PERFORM billing.emit_for_stripe_event(
            event_type, obj, billing.field(event, '{data,previous_attributes}', 'object', false), event_id, created);
        PERFORM billing.emit_access_change(l.user_id, to_timestamp(created))
        FROM billing.customer_links l
        WHERE l.unlinked_at IS NULL
          AND l.customer_id = CASE WHEN obj ->> 'object' = 'customer' THEN obj ->> 'id'
                                   ELSE billing.id_at(obj, '{customer}') END;
    EXCEPTION WHEN data_exception THEN
        GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
        RAISE WARNING 'billing.apply_stripe_event: no outbound event for %: %', apply.event_id, problem;
    END;
    RETURN 'applied';
EXCEPTION WHEN data_exception THEN
    -- The readers name fields from data.object (or a subscription item) down; say where that is.
    GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
    RAISE EXCEPTION 'event %: %', apply.event_id, replace(problem, 'event field ', 'field data.object.')
        USING ERRCODE = 'data_exception';
END
$$;
COMMENT ON FUNCTION billing.apply_stripe_event(jsonb, text) IS
    'Applies one Stripe event (the raw body as jsonb) to the model, once, through the function of its family (see '
    'billing.stripe_event_family); returns applied, ignored (a type the model does not use), other_mode (livemode '
    'differs from mode, ''live'' or ''test'', when given), duplicate, or future:<seconds> for an event dated more '
    'than 5 minutes ahead of the database clock (nothing applied or recorded; see billing.future_outcome). A missing or wrong-typed field raises '
    'data_exception (22000) naming it. The stripe.event job calls it.';

CREATE OR REPLACE FUNCTION billing.erase_customer(customer_id text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Unconditional, outside the version rule: erasure is not a state an older event may undo.
    UPDATE billing.customers c SET email = NULL, name = NULL
    WHERE c.id = erase_customer.customer_id AND (c.email IS NOT NULL OR c.name IS NOT NULL);
    UPDATE billing.audit_log a
    SET before = a.before - '{email,name}'::text[], after = a.after - '{email,name}'::text[]
    WHERE a.entity = 'customers' AND a.entity_id = erase_customer.customer_id
      AND (a.before ?| '{email,name}' OR a.after ?| '{email,name}');
    -- An invoice's hosted page shows the customer's name and address.
    UPDATE billing.invoices i SET hosted_invoice_url = NULL
    WHERE i.customer_id = erase_customer.customer_id AND i.hosted_invoice_url IS NOT NULL;
    UPDATE billing.audit_log a
    SET before = a.before - 'hosted_invoice_url', after = a.after - 'hosted_invoice_url'
    WHERE a.entity = 'invoices' AND (a.before ? 'hosted_invoice_url' OR a.after ? 'hosted_invoice_url')
      AND a.entity_id IN (SELECT i.id FROM billing.invoices i WHERE i.customer_id = erase_customer.customer_id);
END
$$;
COMMENT ON FUNCTION billing.erase_customer(text) IS
    'Erases a Stripe customer''s email and name from billing.customers and its audit entries, and its invoices'' '
    'hosted invoice URLs (the page shows name and address). Called on '
    'customer.deleted and for the customers of a deleted user, whose queued events billing.erase_user also removes '
    '(a deleted customer''s other pending events, such as its subscription''s end, are still applied).';

CREATE OR REPLACE FUNCTION billing.is_erased_customer(customer_id text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM billing.customer_links l JOIN billing.erasures e ON e.user_id = l.user_id
                   WHERE l.customer_id = is_erased_customer.customer_id)
        OR EXISTS (SELECT 1 FROM billing.customers c
                   WHERE c.id = is_erased_customer.customer_id AND c.deleted_at IS NOT NULL)
$$;
COMMENT ON FUNCTION billing.is_erased_customer(text) IS
    'Whether a customer belongs to an erased user or was deleted: its events are applied without email and name.';

CREATE OR REPLACE FUNCTION billing.erase_user(user_id text, version bigint, event_id text, event_type text)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    customers text[];
    customer  text;
    listed    boolean;
BEGIN
    IF coalesce(user_id, '') = '' OR version IS NULL THEN
        RAISE EXCEPTION 'billing.erase_user: user_id and version (the deletion''s timestamp in ms) are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO billing.erasures (user_id, version) VALUES (erase_user.user_id, erase_user.version)
    ON CONFLICT DO NOTHING;
    listed := FOUND;
    -- Versioned like the deletion it stands for: an older event redelivered later never brings the data back.
    PERFORM billing.write('users', user_id, jsonb_build_object(
            'email', NULL, 'first_name', NULL, 'last_name', NULL, 'deleted_at', to_timestamp(version / 1000.0)),
        version, 2::smallint, 'clerk', event_id, event_type);
    -- And unconditionally: a later user.updated is applied without them too (see billing.apply_clerk_event).
    UPDATE billing.users u SET email = NULL, first_name = NULL, last_name = NULL
    WHERE u.id = erase_user.user_id AND (u.email IS NOT NULL OR u.first_name IS NOT NULL OR u.last_name IS NOT NULL);
    UPDATE billing.audit_log a
    SET before = a.before - '{email,first_name,last_name}'::text[],
        after = a.after - '{email,first_name,last_name}'::text[]
    WHERE a.entity = 'users' AND a.entity_id = erase_user.user_id
      AND (a.before ?| '{email,first_name,last_name}' OR a.after ?| '{email,first_name,last_name}');
    customers := ARRAY(SELECT l.customer_id FROM billing.customer_links l WHERE l.user_id = erase_user.user_id);
    FOREACH customer IN ARRAY customers LOOP
        PERFORM billing.erase_customer(customer);
    END LOOP;
    PERFORM sluice.erase_mentions(ARRAY[erase_user.user_id] || customers);
    DELETE FROM billing.access_snapshots s WHERE s.user_id = erase_user.user_id;
    IF NOT listed THEN
        RETURN false;
    END IF;
    INSERT INTO billing.audit_log (source, event_id, event_type, entity, entity_id, action)
    VALUES ('clerk', event_id, event_type, 'users', erase_user.user_id, 'erased');
    RETURN true;
END
$$;
COMMENT ON FUNCTION billing.erase_user(text, bigint, text, text) IS
    'Erases a user''s personal data for good: email and names from billing.users and the audit log, the email and '
    'name of their Stripe customers (billing.erase_customer), and every queued copy (waiting jobs, dead letters, '
    'job results: sluice.erase_mentions); lists the user in billing.erasures, so later events are applied without '
    'it. version is the deletion''s Clerk timestamp (ms). Safe to repeat; returns false when the user was already '
    'listed. user.deleted calls it; so does sluice erasures apply after a restore.';

CREATE OR REPLACE FUNCTION billing.apply_clerk_event(event jsonb, event_id text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    event_type text := billing.text_at(event, '{type}', true);
    data       jsonb := billing.field(event, '{data}', 'object');
    user_id    text := billing.text_at(data, '{id}', true);
    erased     boolean;
    primary_id text;
    stamp      bigint;
    problem    text;
BEGIN
    -- Clerk versions are milliseconds: the event's timestamp, and the user's updated_at for a write.
    stamp := greatest(billing.bigint_at(event, '{timestamp}'), billing.bigint_at(data, '{updated_at}'));
    IF billing.future_outcome(stamp / 1000.0) IS NOT NULL THEN
        RETURN billing.future_outcome(stamp / 1000.0);
    END IF;
    INSERT INTO billing.processed_events (source, event_id, type, outcome, event_created)
    VALUES ('clerk', event_id, event_type, 'applied',
            to_timestamp(billing.bigint_at(event, '{timestamp}') / 1000.0))
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;

    IF event_type IN ('user.created', 'user.updated') THEN
        primary_id := billing.text_at(data, '{primary_email_address_id}');
        -- An erased user stays erased: a later event (a Clerk id reused, a replay) writes no personal data.
        erased := EXISTS (SELECT 1 FROM billing.erasures e WHERE e.user_id = data ->> 'id');
        PERFORM billing.write('users', user_id, jsonb_build_object(
                'email', CASE WHEN NOT erased THEN
                    (SELECT billing.text_at(a, '{email_address}')
                     FROM jsonb_array_elements(coalesce(billing.field(data, '{email_addresses}', 'array', false), '[]')) a
                     WHERE a ->> 'id' = primary_id) END,
                'first_name', CASE WHEN NOT erased THEN billing.text_at(data, '{first_name}') END,
                'last_name', CASE WHEN NOT erased THEN billing.text_at(data, '{last_name}') END,
                'created_at', to_timestamp(billing.bigint_at(data, '{created_at}') / 1000.0)),
            billing.bigint_at(data, '{updated_at}', true), 1::smallint, 'clerk', event_id, event_type);
        PERFORM billing.link(billing.text_at(data, '{private_metadata,stripe_customer_id}'), user_id, 'clerk',
                             event_id, event_type);
        -- A link made here can give the user the access its customer's subscription grants (version 16).
        PERFORM billing.emit_access_change(user_id, to_timestamp(billing.bigint_at(data, '{updated_at}', true) / 1000.0));
    ELSIF event_type = 'user.deleted' THEN
        stamp := billing.bigint_at(event, '{timestamp}', true);
        PERFORM billing.erase_user(user_id, stamp, event_id, event_type);
    ELSE
        RETURN billing.set_outcome('clerk', apply_clerk_event.event_id, 'ignored');
    END IF;
    RETURN 'applied';
EXCEPTION WHEN data_exception THEN
    GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
    RAISE EXCEPTION 'event %: %', apply_clerk_event.event_id, replace(problem, 'event field ', 'field data.')
        USING ERRCODE = 'data_exception';
END
$$;
COMMENT ON FUNCTION billing.apply_clerk_event(jsonb, text) IS
    'Applies one Clerk event (the body as jsonb; event_id is its svix-id) to billing.users, once: user.created and '
    'user.updated write the primary email and names (version: updated_at), user.deleted erases them from the user and '
    'its audit entries. Other types are recorded and ignored. The clerk.event job calls it.';

-- ---------------------------------------------------------------------------------------------------
-- Access and usage
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION billing.access_of(user_id text)
RETURNS TABLE (
    has_access      boolean,
    plan            text,
    status          text,
    subscription_id text,
    customer_id     text,
    access_until    timestamptz,
    reason          text,
    period_start    timestamptz,
    period_end      timestamptz
)
LANGUAGE sql STABLE AS $$
    WITH grace AS (
        SELECT coalesce((SELECT value::interval FROM billing.settings WHERE key = 'past_due_grace_period'),
                        interval '0') AS period
    ), candidates AS (
        SELECT s.*,
               -- When the latest run of past_due began: the earliest past_due report since the last other
               -- status (the same second counts: the stored past_due already won that tie), else the version.
               CASE WHEN s.status = 'past_due' THEN
                   coalesce(
                       (SELECT min(h.at) FROM billing.subscription_status_history h
                        WHERE h.subscription_id = s.id AND h.status = 'past_due'
                          AND h.at >= coalesce((SELECT max(o.at) FROM billing.subscription_status_history o
                                                WHERE o.subscription_id = s.id AND o.status <> 'past_due'
                                                  AND o.at <= to_timestamp(s.version)), '-infinity')),
                       to_timestamp(s.version))
               END AS past_due_since
        FROM billing.customer_links l
        JOIN billing.subscriptions s ON s.customer_id = l.customer_id
        WHERE l.user_id = access_of.user_id
    ), judged AS (
        SELECT c.*,
               CASE
                   WHEN c.status IN ('active', 'trialing') THEN true
                   WHEN c.status = 'past_due' THEN coalesce(now() < c.past_due_since + (SELECT period FROM grace), false)
                   ELSE false
               END AS grants
        FROM candidates c
    ), best AS (
        SELECT * FROM judged j ORDER BY j.grants DESC, j.current_period_end DESC NULLS LAST, j.id LIMIT 1
    ), month AS (
        SELECT date_trunc('month', now(), 'UTC') AS start
    )
    SELECT coalesce(b.grants, false),
           CASE WHEN b.grants THEN b.plan ELSE 'free' END,
           b.status,
           b.id,
           b.customer_id,
           CASE
               WHEN NOT b.grants THEN NULL
               WHEN b.status = 'past_due' THEN b.past_due_since + (SELECT period FROM grace)
               WHEN b.status = 'trialing' THEN b.trial_end
               ELSE b.current_period_end
           END,
           CASE
               WHEN b.id IS NULL AND EXISTS (SELECT 1 FROM billing.customer_links l WHERE l.user_id = access_of.user_id)
                   THEN 'no subscription'
               WHEN b.id IS NULL THEN 'no Stripe customer linked'
               -- A reason is never NULL: a missing date leaves only its clause out.
               WHEN b.status = 'trialing' THEN 'trialing' || coalesce(' until ' || b.trial_end, '')
               WHEN b.status = 'active' AND b.cancel_at_period_end
                   THEN 'active; cancels at period end' || coalesce(' ' || b.current_period_end, '')
               WHEN b.status = 'active' THEN 'active'
               WHEN b.status = 'past_due' AND b.grants
                   THEN 'past_due since ' || b.past_due_since || '; grace period until '
                        || (b.past_due_since + (SELECT period FROM grace))
               WHEN b.status = 'past_due' THEN 'past_due since ' || b.past_due_since || '; grace period over'
               ELSE 'subscription ' || coalesce(b.status, 'unknown')
           END,
           -- Usage counts per billing period: the granting subscription's, else the calendar month in UTC.
           CASE WHEN b.grants AND b.current_period_start IS NOT NULL AND b.current_period_end IS NOT NULL
                THEN b.current_period_start ELSE (SELECT start FROM month) END,
           CASE WHEN b.grants AND b.current_period_start IS NOT NULL AND b.current_period_end IS NOT NULL
                THEN b.current_period_end ELSE (SELECT start FROM month) + interval '1 month' END
    FROM (SELECT 1) AS one
    LEFT JOIN best b ON true
$$;
COMMENT ON FUNCTION billing.access_of(text) IS
    'Access of one user: has_access, plan (free without a granting subscription), the subscription and status it comes '
    'from, until when, why, and the current usage period. active and trialing grant; past_due grants for '
    'billing.settings past_due_grace_period from when it became past_due; every other status denies. '
    'billing.user_access shows it for every user; billing.record_usage reads it for one.';

CREATE OR REPLACE VIEW billing.user_access AS
WITH people AS (
    SELECT u.id AS user_id, u.email FROM billing.users u WHERE u.deleted_at IS NULL
    UNION
    SELECT l.user_id, NULL FROM billing.customer_links l
    WHERE NOT EXISTS (SELECT 1 FROM billing.users u WHERE u.id = l.user_id)
)
SELECT p.user_id, p.email, a.has_access, a.plan, a.status, a.subscription_id, a.customer_id, a.access_until, a.reason,
       a.period_start, a.period_end
FROM people p
CROSS JOIN LATERAL billing.access_of(p.user_id) a;
COMMENT ON VIEW billing.user_access IS
    'One row per user (not deleted): has_access, the plan (free without a granting subscription), the subscription '
    'and status it comes from, until when, why, and the current usage period (see billing.access_of). A subscription '
    'set to cancel at period end stays active, and grants, until Stripe ends it.';

CREATE OR REPLACE FUNCTION billing.record_usage(user_id text, feature text, quantity bigint, idempotency_key text)
RETURNS TABLE (
    allowed      boolean,
    used         bigint,
    limit_value  bigint,
    remaining    bigint,
    plan         text,
    period_start timestamptz,
    period_end   timestamptz,
    repeated     boolean
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    access   record;
    prior    record;
    included boolean := false;
    cap      bigint;
    counted  bigint;
    granted  boolean;
BEGIN
    IF coalesce(user_id, '') = '' OR coalesce(feature, '') = '' OR coalesce(idempotency_key, '') = '' THEN
        RAISE EXCEPTION 'billing.record_usage: user_id, feature and idempotency_key must be non-empty texts'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF quantity IS NULL OR quantity < 1 THEN
        RAISE EXCEPTION 'billing.record_usage: quantity must be at least 1, got %', quantity
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT * INTO access FROM billing.access_of(record_usage.user_id);
    SELECT true, l.limit_per_period INTO included, cap
    FROM billing.plan_limits l WHERE l.plan = access.plan AND l.feature = record_usage.feature;
    included := coalesce(included, false);

    -- The counter row is the lock: callers for one user and feature take turns from here to commit.
    INSERT INTO billing.usage_counters AS c (user_id, feature, period_start, period_end)
    VALUES (record_usage.user_id, record_usage.feature, access.period_start, access.period_end)
    ON CONFLICT DO NOTHING;
    SELECT c.used INTO counted FROM billing.usage_counters c
    WHERE c.user_id = record_usage.user_id AND c.feature = record_usage.feature AND c.period_start = access.period_start
    FOR UPDATE;

    -- A repeated key gets the first answer and counts nothing. Checked under the lock, so a concurrent call
    -- with the same key that committed while this one waited is seen too. A key reused for another call is
    -- refused, as Stripe does: answering it would hand over another user's figures and count nothing.
    SELECT e.user_id, e.feature, e.quantity INTO prior
    FROM billing.usage_events e WHERE e.idempotency_key = record_usage.idempotency_key;
    IF FOUND AND (prior.user_id, prior.feature, prior.quantity)
                 IS DISTINCT FROM (record_usage.user_id, record_usage.feature, record_usage.quantity) THEN
        RAISE EXCEPTION 'billing.record_usage: idempotency key % was first used with a different %', idempotency_key,
                array_to_string(ARRAY[CASE WHEN prior.user_id <> record_usage.user_id THEN 'user_id' END,
                                      CASE WHEN prior.feature <> record_usage.feature THEN 'feature' END,
                                      CASE WHEN prior.quantity <> record_usage.quantity THEN 'quantity' END], ', ')
            USING ERRCODE = 'SL409',
                  HINT = 'A key may only repeat the same call; use a new key for a new use.';
    END IF;
    RETURN QUERY SELECT e.allowed, e.used, e.limit_value, e.remaining, e.plan, e.period_start, e.period_end, true
                 FROM billing.usage_events e WHERE e.idempotency_key = record_usage.idempotency_key;
    IF FOUND THEN
        RETURN;
    END IF;

    -- All or nothing: a use larger than what remains is denied whole.
    granted := included AND (cap IS NULL OR counted + quantity <= cap);
    IF granted THEN
        UPDATE billing.usage_counters c SET used = c.used + quantity
        WHERE c.user_id = record_usage.user_id AND c.feature = record_usage.feature AND c.period_start = access.period_start;
        counted := counted + quantity;
    END IF;
    allowed := granted;
    used := counted;
    limit_value := CASE WHEN included THEN cap ELSE 0 END;
    remaining := CASE WHEN NOT included THEN 0 WHEN cap IS NULL THEN NULL ELSE greatest(cap - counted, 0) END;
    plan := access.plan;
    period_start := access.period_start;
    period_end := access.period_end;
    repeated := false;
    INSERT INTO billing.usage_events (idempotency_key, user_id, feature, quantity, allowed, plan, limit_value, used,
                                      remaining, period_start, period_end)
    VALUES (record_usage.idempotency_key, record_usage.user_id, record_usage.feature, record_usage.quantity, allowed,
            plan, limit_value, used, remaining, period_start, period_end);
    -- usage.threshold at 80 % and 100 % of the limit, once each a period (version 14).
    IF granted AND cap > 0 THEN
        PERFORM billing.emit('usage.threshold', now(), jsonb_build_object(
                'user_id', record_usage.user_id, 'feature', record_usage.feature, 'threshold_percent', t.percent,
                'used', counted, 'limit_value', cap, 'plan', access.plan, 'period_start', access.period_start,
                'period_end', access.period_end, 'version', counted),
            record_usage.user_id,
            'usage:' || record_usage.user_id || ':' || record_usage.feature || ':'
                || coalesce(extract(epoch FROM access.period_start)::bigint::text, '-') || ':' || t.percent)
        FROM (VALUES (80), (100)) AS t(percent)
        WHERE (counted - quantity) * 100 < cap * t.percent AND counted * 100 >= cap * t.percent;
    END IF;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION billing.record_usage(text, text, bigint, text) IS
    'Records a use of quantity units of a feature by a user, if the user''s plan allows it in the current billing period, '
    'and returns allowed, used (this period, after the call), limit_value (NULL: unlimited; 0: not in the plan), '
    'remaining, the plan and the period. All or nothing: a use larger than what remains is denied whole and counts '
    'nothing. Concurrent calls for one user and feature take turns, so a limit is never exceeded. A repeated '
    'idempotency_key returns the first answer (repeated = true) and counts nothing.';

CREATE OR REPLACE VIEW billing.entitlements AS
SELECT a.user_id, a.plan, l.feature, l.limit_per_period AS limit_value, coalesce(c.used, 0) AS used,
       CASE WHEN l.limit_per_period IS NULL THEN NULL
            ELSE greatest(l.limit_per_period - coalesce(c.used, 0), 0) END AS remaining,
       a.period_start, a.period_end
FROM billing.user_access a
JOIN billing.plan_limits l ON l.plan = a.plan
LEFT JOIN billing.usage_counters c
    ON c.user_id = a.user_id AND c.feature = l.feature AND c.period_start = a.period_start;
COMMENT ON VIEW billing.entitlements IS
    'Per user and feature of the user''s plan: the limit (NULL: unlimited), used this period, and what remains. '
    'After a downgrade, usage already over the new limit leaves 0 remaining until the next period.';

-- What the app's API answers (`sluice api`, role sluice_api), built here so the server only passes it on.
-- PL/pgSQL, not SQL, for the plan cache: a SQL function's body (billing.access_of and the entitlements view,
-- inlined) is planned again on every call, which cost ten times the execution (version 14).
CREATE OR REPLACE FUNCTION billing.api_access(user_id text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        SELECT jsonb_build_object(
            'user_id', api_access.user_id, 'has_access', a.has_access, 'plan', a.plan, 'status', a.status,
            'reason', a.reason, 'access_until', a.access_until,
            'entitlements', coalesce(
                (SELECT jsonb_agg(jsonb_build_object(
                            'feature', e.feature, 'limit_value', e.limit_value, 'used', e.used,
                            'remaining', e.remaining, 'period_start', e.period_start, 'period_end', e.period_end)
                        ORDER BY e.feature)
                 FROM billing.entitlements e WHERE e.user_id = api_access.user_id),
                '[]'::jsonb))
        FROM billing.access_of(api_access.user_id) a);
END
$$;
COMMENT ON FUNCTION billing.api_access(text) IS
    'GET /v1/me and GET /v1/users/{user_id}/access: {user_id, has_access, plan, status, reason, access_until, '
    'entitlements: [{feature, limit_value, used, remaining, period_start, period_end}]}.';

CREATE OR REPLACE FUNCTION billing.api_invoices(user_id text, max_count integer) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        SELECT jsonb_build_object('invoices',
                                  coalesce(jsonb_agg(to_jsonb(i) ORDER BY i.created DESC NULLS LAST, i.id), '[]'))
        FROM (
            SELECT inv.id, inv.status, inv.amount_due, inv.amount_paid, inv.currency, inv.created_at AS created,
                   inv.hosted_invoice_url
            FROM billing.invoices inv
            WHERE inv.customer_id IN (SELECT l.customer_id FROM billing.customer_links l
                                      WHERE l.user_id = api_invoices.user_id)
            ORDER BY inv.created_at DESC NULLS LAST, inv.id
            LIMIT greatest(least(api_invoices.max_count, 100), 1)
        ) i);
END
$$;
COMMENT ON FUNCTION billing.api_invoices(text, integer) IS
    'GET /v1/me/invoices: the user''s invoices over every customer ever linked to it, newest first, at most '
    'max_count (1 to 100): {invoices: [{id, status, amount_due, amount_paid, currency, created, hosted_invoice_url}]}.';

REVOKE ALL ON FUNCTION billing.api_access(text), billing.api_invoices(text, integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION billing.price_on_sale(price_id text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM billing.prices p
                   WHERE p.id = price_on_sale.price_id AND p.active AND p.deleted_at IS NULL
                     AND p.recurring_interval IS NOT NULL
                     -- Version 16: and its product is on sale too.
                     AND NOT EXISTS (SELECT 1 FROM billing.products d
                                     WHERE d.id = p.product_id AND (d.active IS FALSE OR d.deleted_at IS NOT NULL)))
$$;
COMMENT ON FUNCTION billing.price_on_sale(text) IS
    'Whether a signed-in user may choose this price through the app''s API (checkout, plan change): a recurring '
    'price that Stripe''s events said is active and not deleted, of a product not archived or deleted. Any other id, a one-off or archived price '
    'included, is refused, so a user cannot pick a price the product does not offer.';
REVOKE ALL ON FUNCTION billing.price_on_sale(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION billing.emit(
    event_type text, occurred_at timestamptz, data jsonb, user_id text, dedup_key text
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id text := 'evt_' || replace(gen_random_uuid()::text, '-', '');
    body   text;
BEGIN
    body := jsonb_build_object('id', new_id, 'type', event_type,
                               'occurred_at', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                               'data', data)::text;
    INSERT INTO sluice.outbound_events (id, type, occurred_at, body, user_id, dedup_key)
    VALUES (new_id, event_type, occurred_at, body, emit.user_id, emit.dedup_key)
    ON CONFLICT ON CONSTRAINT outbound_events_dedup_key_key DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM sluice.deliver_outbound(new_id);
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION billing.emit(text, timestamptz, jsonb, text, text) IS
    'Writes one outbound event in the caller''s transaction and its deliveries; nothing when dedup_key was '
    'emitted before. Returns the event id, or NULL.';
REVOKE ALL ON FUNCTION billing.emit(text, timestamptz, jsonb, text, text) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------
-- Business events for the app (the outbox's billing side, version 14): which changes the product hears
-- of, written by billing.emit in the transaction of the change (see sluice.outbound_events).
-- ---------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS billing.access_snapshots (
    user_id      text        PRIMARY KEY,
    has_access   boolean     NOT NULL,
    plan         text,
    status       text,
    reason       text,
    access_until timestamptz,
    changes      bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.access_snapshots IS
    'A user''s access as the app last heard of it (access.changed): a change of has_access or plan against this '
    'row emits the next access.changed, whose version is changes. The periodic outbound.sweep job looks again at '
    'users whose access_until has passed (a grace period or a cancelled period running out with no event).';
CREATE INDEX IF NOT EXISTS access_snapshots_until ON billing.access_snapshots (access_until)
    WHERE access_until IS NOT NULL;
COMMENT ON INDEX billing.access_snapshots_until IS 'Serves the sweep for access that ran out with time.';

CREATE OR REPLACE FUNCTION billing.user_of_customer(customer_id text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.user_id FROM billing.customer_links l
    WHERE l.customer_id = user_of_customer.customer_id AND l.unlinked_at IS NULL
    ORDER BY l.linked_at DESC LIMIT 1
$$;
COMMENT ON FUNCTION billing.user_of_customer(text) IS 'The Clerk user a Stripe customer is linked to now, if any.';

CREATE OR REPLACE FUNCTION billing.emit_access_change(user_id text, occurred_at timestamptz) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    now_access record;
    before     record;
    fresh      boolean;
    news       boolean;
BEGIN
    IF user_id IS NULL OR EXISTS (SELECT 1 FROM billing.erasures e WHERE e.user_id = emit_access_change.user_id) THEN
        RETURN NULL;
    END IF;
    -- The user's row first, then access: a concurrent change for the same user waits here and then reads what
    -- the other committed (version 16).
    INSERT INTO billing.access_snapshots (user_id, has_access) VALUES (emit_access_change.user_id, false)
    ON CONFLICT ON CONSTRAINT access_snapshots_pkey DO NOTHING
    RETURNING true INTO fresh;
    fresh := coalesce(fresh, false);
    SELECT * INTO before FROM billing.access_snapshots s WHERE s.user_id = emit_access_change.user_id FOR UPDATE;
    SELECT * INTO now_access FROM billing.access_of(emit_access_change.user_id);
    -- Every user starts without access on the free plan: only a first state beyond that is news.
    news := CASE WHEN fresh THEN now_access.has_access OR now_access.plan IS DISTINCT FROM 'free'
                 ELSE (before.has_access, before.plan) IS DISTINCT FROM (now_access.has_access, now_access.plan) END;
    UPDATE billing.access_snapshots s
    SET has_access = now_access.has_access, plan = now_access.plan, status = now_access.status,
        reason = now_access.reason, access_until = now_access.access_until,
        changes = s.changes + CASE WHEN news THEN 1 ELSE 0 END,
        updated_at = CASE WHEN news THEN now() ELSE s.updated_at END
    WHERE s.user_id = emit_access_change.user_id;
    IF NOT news THEN
        RETURN NULL;
    END IF;
    RETURN billing.emit('access.changed', occurred_at, jsonb_build_object(
            'user_id', emit_access_change.user_id, 'has_access', now_access.has_access, 'plan', now_access.plan,
            'status', now_access.status, 'reason', now_access.reason, 'access_until', now_access.access_until,
            'previous', CASE WHEN fresh THEN NULL
                             ELSE jsonb_build_object('has_access', before.has_access, 'plan', before.plan) END,
            'version', before.changes + 1),
        emit_access_change.user_id, 'access:' || emit_access_change.user_id || ':' || (before.changes + 1));
END
$$;
COMMENT ON FUNCTION billing.emit_access_change(text, timestamptz) IS
    'Emits access.changed when the user''s access (has_access or plan, from billing.access_of) differs from what '
    'the app last heard (billing.access_snapshots); its version counts the user''s changes. Returns the event id.';

CREATE OR REPLACE FUNCTION billing.emit_due_access_changes(batch_size integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    due     text;
    emitted integer := 0;
BEGIN
    FOR due IN
        SELECT s.user_id FROM billing.access_snapshots s
        WHERE s.access_until IS NOT NULL AND s.access_until <= now()
        ORDER BY s.access_until LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    LOOP
        IF billing.emit_access_change(due, now()) IS NOT NULL THEN
            emitted := emitted + 1;
        END IF;
        -- Looked at: a row still past its access_until (no later one) is not looked at again.
        UPDATE billing.access_snapshots s SET access_until = NULL
        WHERE s.user_id = due AND s.access_until <= now();
    END LOOP;
    RETURN emitted;
END
$$;
COMMENT ON FUNCTION billing.emit_due_access_changes(integer) IS
    'The periodic outbound.sweep job: access.changed for users whose access ran out with time and no event '
    '(a past-due grace period, a cancelled period), at most batch_size users a call. Returns how many were emitted.';

CREATE OR REPLACE FUNCTION billing.emit_for_stripe_event(
    event_type text, obj jsonb, previous jsonb, event_id text, created bigint
) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at          timestamptz := to_timestamp(created);
    customer    text := billing.id_at(obj, '{customer}');
    user_id     text := billing.user_of_customer(billing.id_at(obj, '{customer}'));
    status      text;
    was_status  text;
    subject     jsonb;
    item        jsonb;
    was_item    jsonb;
BEGIN
    -- An erased user's customer is told of no more (version 16): its ids were erased everywhere.
    IF billing.is_erased_customer(customer) THEN
        RETURN;
    END IF;
    IF event_type LIKE 'customer.subscription.%' THEN
        status := billing.text_at(obj, '{status}');
        was_status := billing.text_at(previous, '{status}');
        item := obj -> 'items' -> 'data' -> 0;
        subject := jsonb_build_object(
            'subscription_id', billing.text_at(obj, '{id}'), 'customer_id', customer, 'user_id', user_id,
            'status', status,
            'plan', coalesce(item -> 'price' ->> 'lookup_key', item -> 'price' -> 'metadata' ->> 'plan',
                             item -> 'price' ->> 'product', item -> 'price' ->> 'id'),
            'price_id', item -> 'price' ->> 'id',
            'amount', (SELECT sum(coalesce((i -> 'price' ->> 'unit_amount')::bigint, 0) * coalesce((i ->> 'quantity')::bigint, 1))
                       FROM jsonb_array_elements(coalesce(obj -> 'items' -> 'data', '[]')) i),
            'currency', coalesce(obj ->> 'currency', item -> 'price' ->> 'currency'),
            'cancel_at_period_end', coalesce(billing.bool_at(obj, '{cancel_at_period_end}'), false),
            'current_period_end', coalesce(billing.time_at(obj, '{current_period_end}'),
                                           billing.time_at(item, '{current_period_end}')),
            'version', created);
        IF event_type = 'customer.subscription.deleted' THEN
            PERFORM billing.emit('subscription.canceled', at, subject || jsonb_build_object(
                    'ended_at', billing.time_at(obj, '{ended_at}')), user_id, 'stripe:' || event_id);
        ELSIF event_type = 'customer.subscription.trial_will_end' THEN
            PERFORM billing.emit('trial.will_end', at, subject || jsonb_build_object(
                    'trial_end', billing.time_at(obj, '{trial_end}')), user_id, 'stripe:' || event_id);
        ELSIF status IN ('active', 'trialing')
              AND (event_type = 'customer.subscription.created'
                   OR was_status IN ('incomplete', 'incomplete_expired', 'paused', 'unpaid', 'canceled')) THEN
            PERFORM billing.emit('subscription.activated', at, subject, user_id, 'stripe:' || event_id);
        ELSIF status = 'past_due' AND was_status IS DISTINCT FROM 'past_due' AND was_status IS NOT NULL THEN
            PERFORM billing.emit('subscription.past_due', at, subject, user_id, 'stripe:' || event_id);
        END IF;
        -- A change of price, as the event itself says (previous_attributes), whatever order events arrive in.
        was_item := previous -> 'items' -> 'data' -> 0;
        IF event_type = 'customer.subscription.updated' AND was_item IS NOT NULL
           AND was_item -> 'price' ->> 'id' IS DISTINCT FROM item -> 'price' ->> 'id' THEN
            PERFORM billing.emit('subscription.updated', at, subject || jsonb_build_object(
                    'previous', jsonb_build_object(
                        'plan', coalesce(was_item -> 'price' ->> 'lookup_key', was_item -> 'price' -> 'metadata' ->> 'plan',
                                         was_item -> 'price' ->> 'product', was_item -> 'price' ->> 'id'),
                        'price_id', was_item -> 'price' ->> 'id',
                        'amount', coalesce((was_item -> 'price' ->> 'unit_amount')::bigint, 0)
                                  * coalesce((was_item ->> 'quantity')::bigint, 1))),
                user_id, 'stripe:' || event_id || ':plan');
        END IF;
    ELSIF event_type = 'invoice.payment_failed' THEN
        PERFORM billing.emit('payment.failed', at, jsonb_build_object(
                'invoice_id', billing.text_at(obj, '{id}'), 'customer_id', customer, 'user_id', user_id,
                'subscription_id', coalesce(billing.id_at(obj, '{subscription}'),
                                            billing.id_at(obj, '{parent,subscription_details,subscription}')),
                'amount_due', billing.bigint_at(obj, '{amount_due}'), 'currency', billing.text_at(obj, '{currency}'),
                'attempt_count', billing.bigint_at(obj, '{attempt_count}'),
                'next_payment_attempt', billing.time_at(obj, '{next_payment_attempt}'),
                'hosted_invoice_url', CASE WHEN billing.is_erased_customer(customer) THEN NULL
                                           ELSE billing.text_at(obj, '{hosted_invoice_url}') END,
                'version', created),
            user_id, 'stripe:' || event_id);
    ELSIF event_type IN ('invoice.paid', 'invoice.payment_succeeded')
          AND coalesce(billing.bigint_at(obj, '{attempt_count}'), 0) > 1 THEN
        -- Paid after a failed attempt: one recovery per invoice, whichever of the two events says it first.
        PERFORM billing.emit('payment.recovered', at, jsonb_build_object(
                'invoice_id', billing.text_at(obj, '{id}'), 'customer_id', customer, 'user_id', user_id,
                'subscription_id', coalesce(billing.id_at(obj, '{subscription}'),
                                            billing.id_at(obj, '{parent,subscription_details,subscription}')),
                'amount_paid', billing.bigint_at(obj, '{amount_paid}'), 'currency', billing.text_at(obj, '{currency}'),
                'attempt_count', billing.bigint_at(obj, '{attempt_count}'), 'version', created),
            user_id, 'recovered:' || billing.text_at(obj, '{id}'));
    ELSIF event_type = 'charge.dispute.created' THEN
        PERFORM billing.emit('dispute.created', at, jsonb_build_object(
                'dispute_id', billing.text_at(obj, '{id}'), 'charge_id', billing.id_at(obj, '{charge}'),
                'amount', billing.bigint_at(obj, '{amount}'), 'currency', billing.text_at(obj, '{currency}'),
                'reason', billing.text_at(obj, '{reason}'), 'status', billing.text_at(obj, '{status}'),
                'version', created),
            NULL, 'stripe:' || event_id);
    END IF;
END
$$;
COMMENT ON FUNCTION billing.emit_for_stripe_event(text, jsonb, jsonb, text, bigint) IS
    'The outbound events a Stripe event stands for, each once per Stripe event (dedup by its id) whatever order '
    'events arrive in: subscription.activated, .updated (a new price, from previous_attributes), .past_due, '
    '.canceled, trial.will_end, payment.failed, payment.recovered (once per invoice), dispute.created. Each carries '
    'the Stripe event''s created as version.';

-- ---------------------------------------------------------------------------------------------------

-- Business analytics
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE VIEW billing.mrr AS
SELECT s.plan, s.currency, count(*) AS subscriptions,
       round(sum(s.amount::numeric * CASE s.billing_interval
                                        WHEN 'year' THEN 1.0 / 12
                                        WHEN 'week' THEN 52.0 / 12
                                        WHEN 'day' THEN 365.0 / 12
                                        ELSE 1 END
                 / greatest(coalesce(s.interval_count, 1), 1)))::bigint AS mrr
FROM billing.subscriptions s
WHERE s.status IN ('active', 'past_due')
GROUP BY s.plan, s.currency
ORDER BY s.currency, mrr DESC;
COMMENT ON VIEW billing.mrr IS
    'Monthly recurring revenue by plan and currency, in minor units: active and past_due subscriptions (trials '
    'excluded), each amount normalised to a month (yearly / 12, weekly x 52 / 12, every N months / N).';

CREATE OR REPLACE VIEW billing.active_subscriptions AS
SELECT s.plan, s.status, count(*) AS subscriptions
FROM billing.subscriptions s
WHERE s.status NOT IN ('canceled', 'incomplete_expired')
GROUP BY s.plan, s.status
ORDER BY s.plan, s.status;
COMMENT ON VIEW billing.active_subscriptions IS 'Subscriptions that have not ended, by plan and status.';

CREATE OR REPLACE VIEW billing.subscription_movements AS
WITH started AS (
    SELECT date_trunc('month', s.created_at, 'UTC') AS month, count(*) AS new
    FROM billing.subscriptions s WHERE s.created_at IS NOT NULL GROUP BY 1
), ended AS (
    SELECT date_trunc('month', coalesce(s.ended_at, s.canceled_at), 'UTC') AS month, count(*) AS churned
    FROM billing.subscriptions s
    WHERE s.status IN ('canceled', 'incomplete_expired') AND coalesce(s.ended_at, s.canceled_at) IS NOT NULL
    GROUP BY 1
)
SELECT coalesce(st.month, e.month) AS month, coalesce(st.new, 0) AS new, coalesce(e.churned, 0) AS churned,
       coalesce(st.new, 0) - coalesce(e.churned, 0) AS net
FROM started st
FULL JOIN ended e ON e.month = st.month
ORDER BY 1;
COMMENT ON VIEW billing.subscription_movements IS
    'Per calendar month (UTC): subscriptions started (created), ended (canceled, by ended_at or canceled_at), and the net.';

CREATE OR REPLACE VIEW billing.payment_recovery AS
SELECT date_trunc('month', i.first_failed_at, 'UTC') AS month,
       count(*) AS failed,
       count(*) FILTER (WHERE i.status = 'paid') AS recovered,
       count(*) FILTER (WHERE i.status = 'open') AS still_open,
       count(*) FILTER (WHERE i.status IN ('void', 'uncollectible')) AS lost,
       round(count(*) FILTER (WHERE i.status = 'paid')::numeric / count(*), 3) AS recovery_rate
FROM billing.invoices i
WHERE i.first_failed_at IS NOT NULL
GROUP BY 1
ORDER BY 1;
COMMENT ON VIEW billing.payment_recovery IS
    'Invoices whose payment failed, by the month of their first failure: how many were paid later (recovered), are '
    'still open, or were voided or marked uncollectible, and the recovery rate.';

CREATE OR REPLACE VIEW billing.top_usage AS
SELECT ranked.feature, ranked.rank, ranked.user_id, ranked.used, ranked.period_start
FROM (
    SELECT c.feature, c.user_id, c.used, c.period_start,
           rank() OVER (PARTITION BY c.feature ORDER BY c.used DESC) AS rank
    FROM billing.usage_counters c
    WHERE c.period_start <= now() AND now() < c.period_end AND c.used > 0
) ranked
WHERE ranked.rank <= 10
ORDER BY ranked.feature, ranked.rank, ranked.user_id;
COMMENT ON VIEW billing.top_usage IS 'Per feature, the ten users who used the most in their current billing period.';

-- ---------------------------------------------------------------------------------------------------
-- Retention: the billing tables that grow with traffic, pruned in bounded batches by their settings.
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION billing.retention(key text) RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT sluice.retention((SELECT s.value FROM billing.settings s WHERE s.key = retention.key))
$$;
COMMENT ON FUNCTION billing.retention(text) IS 'A retention setting of billing.settings as an interval; NULL for forever.';

CREATE OR REPLACE FUNCTION billing.prune(batch_size integer DEFAULT 1000)
RETURNS TABLE (table_name text, pruned integer)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    events  interval := greatest(billing.retention('processed_event_retention'), interval '35 days');
    usage   interval := billing.retention('usage_event_retention');
    audit   interval := billing.retention('audit_log_retention');
    history interval := billing.retention('status_history_retention');
BEGIN
    table_name := 'billing.processed_events';
    pruned := 0;
    IF billing.retention('processed_event_retention') IS NOT NULL THEN
        WITH old AS (
            SELECT p.source, p.event_id FROM billing.processed_events p
            WHERE p.processed_at < now() - events
            LIMIT batch_size FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM billing.processed_events p USING old
            WHERE p.source = old.source AND p.event_id = old.event_id RETURNING 1
        )
        SELECT count(*)::integer INTO pruned FROM gone;
    END IF;
    RETURN NEXT;

    table_name := 'billing.usage_events';
    pruned := 0;
    IF usage IS NOT NULL THEN
        WITH old AS (
            SELECT e.idempotency_key FROM billing.usage_events e
            WHERE e.period_end < now() - usage
              -- A use of a metered feature leaves only once Stripe has it (or refused it).
              AND (e.reported_at IS NOT NULL OR e.report_error IS NOT NULL OR NOT e.allowed
                   OR NOT EXISTS (SELECT 1 FROM billing.meters m WHERE m.feature = e.feature))
            LIMIT batch_size FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM billing.usage_events e USING old WHERE e.idempotency_key = old.idempotency_key RETURNING 1
        )
        SELECT count(*)::integer INTO pruned FROM gone;
    END IF;
    RETURN NEXT;

    table_name := 'billing.usage_counters';
    pruned := 0;
    IF usage IS NOT NULL THEN
        WITH old AS (
            SELECT c.user_id, c.feature, c.period_start FROM billing.usage_counters c
            WHERE c.period_end < now() - usage
            LIMIT batch_size FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM billing.usage_counters c USING old
            WHERE c.user_id = old.user_id AND c.feature = old.feature AND c.period_start = old.period_start
            RETURNING 1
        )
        SELECT count(*)::integer INTO pruned FROM gone;
    END IF;
    RETURN NEXT;

    table_name := 'billing.audit_log';
    pruned := 0;
    IF audit IS NOT NULL THEN
        WITH old AS (
            SELECT a.id FROM billing.audit_log a WHERE a.at < now() - audit
            ORDER BY a.id LIMIT batch_size FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM billing.audit_log a USING old WHERE a.id = old.id RETURNING 1
        )
        SELECT count(*)::integer INTO pruned FROM gone;
    END IF;
    RETURN NEXT;

    table_name := 'billing.subscription_status_history';
    pruned := 0;
    IF history IS NOT NULL THEN
        WITH old AS (
            SELECT h.subscription_id, h.event_id FROM billing.subscription_status_history h
            WHERE h.at < now() - history
              -- The grace period of a past_due subscription is counted from these rows.
              AND NOT EXISTS (SELECT 1 FROM billing.subscriptions s
                              WHERE s.id = h.subscription_id AND s.status = 'past_due')
            LIMIT batch_size FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM billing.subscription_status_history h USING old
            WHERE h.subscription_id = old.subscription_id AND h.event_id = old.event_id RETURNING 1
        )
        SELECT count(*)::integer INTO pruned FROM gone;
    END IF;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION billing.prune(integer) IS
    'One batch of housekeeping over the billing tables that grow with traffic, by the retentions in '
    'billing.settings: processed event ids (at least 35 days), usage events and counters of long-ended periods '
    '(unreported metered uses stay), and, when configured, audit log entries and status reports. Returns how '
    'many rows left each table; workers call it every minute, and again while a table returns a full batch.';

-- ---------------------------------------------------------------------------------------------------
-- Roles: what each role of deploy/roles.sql may do. A database administrator creates the roles (that
-- part of deploy/roles.sql); every run of this file grants them their rights, as do the owner's part of
-- deploy/roles.sql, so new functions are covered by the next migration. A role that does not exist is
-- skipped.
-- ---------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION sluice.grant_roles() RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    granted   text[] := '{}';
    role_name text;
    enqueue_functions text := 'sluice.enqueue(text, jsonb, text, integer, timestamptz, integer, text, boolean), '
        'sluice.enqueue_many(text[], jsonb[], text[], integer[], timestamptz[], integer[], text[], boolean), '
        'sluice.enqueue_unique(text[], jsonb[], text[], text[], integer[], timestamptz[], integer[], boolean)';
BEGIN
    IF to_regrole('sluice_receiver') IS NOT NULL THEN
        GRANT USAGE ON SCHEMA sluice TO sluice_receiver;
        GRANT SELECT ON sluice.schema_version TO sluice_receiver;
        GRANT EXECUTE ON FUNCTION
            sluice.enqueue_unique(text[], jsonb[], text[], text[], integer[], timestamptz[], integer[], boolean)
            TO sluice_receiver;
        granted := granted || 'sluice_receiver'::text;
    END IF;
    FOREACH role_name IN ARRAY ARRAY['sluice_enqueuer', 'sluice_billing', 'sluice_api'] LOOP
        CONTINUE WHEN to_regrole(role_name) IS NULL;
        EXECUTE format('GRANT USAGE ON SCHEMA sluice TO %I', role_name);
        EXECUTE format('GRANT SELECT ON sluice.schema_version TO %I', role_name);
        -- Version 14: the API starts jobs only with sluice.start_job_for, which records who asked.
        EXECUTE format('%s EXECUTE ON FUNCTION %s, sluice.job_result(bigint) %s %I',
                       CASE WHEN role_name = 'sluice_api' THEN 'REVOKE' ELSE 'GRANT' END, enqueue_functions,
                       CASE WHEN role_name = 'sluice_api' THEN 'FROM' ELSE 'TO' END, role_name);
        granted := granted || role_name;
    END LOOP;
    FOREACH role_name IN ARRAY ARRAY['sluice_billing', 'sluice_api'] LOOP
        CONTINUE WHEN to_regrole(role_name) IS NULL;
        EXECUTE format('GRANT USAGE ON SCHEMA billing TO %I', role_name);
        EXECUTE format('GRANT EXECUTE ON FUNCTION billing.record_usage(text, text, bigint, text) TO %I', role_name);
    END LOOP;
    IF to_regrole('sluice_api') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION sluice.authenticate_api_key(bytea), billing.api_access(text),
            billing.api_invoices(text, integer), sluice.start_job_for(text, text, jsonb), sluice.job_for(bigint, text),
            billing.price_on_sale(text), sluice.start_exclusive_job_for(text, text, jsonb, text[]) TO sluice_api;
    END IF;
    IF to_regrole('sluice_operator') IS NOT NULL THEN
        GRANT USAGE ON SCHEMA sluice, billing TO sluice_operator;
        GRANT EXECUTE ON FUNCTION sluice.pause_queue(text), sluice.resume_queue(text), sluice.cancel(bigint),
            sluice.retry_dead(bigint), sluice.retry_dead_kind(text), sluice.discard_dead(bigint) TO sluice_operator;
        GRANT SELECT ON sluice.queue_stats, sluice.dead_letter_summary, sluice.dead_letters, sluice.operator_actions,
            sluice.schema_version, sluice.schema_upgrades, sluice.settings, sluice.kind_rules TO sluice_operator;
        GRANT SELECT ON ALL TABLES IN SCHEMA billing TO sluice_operator;
        granted := granted || 'sluice_operator'::text;
    END IF;
    RETURN granted;
END
$$;
COMMENT ON FUNCTION sluice.grant_roles() IS
    'Grants each role of deploy/roles.sql that exists what it may do (see the README''s threat model); returns '
    'the roles it found. schema.sql calls it on every run; deploy/roles.sql calls it after creating the roles.';

DO $$ BEGIN PERFORM sluice.grant_roles(); END $$;

-- ---------------------------------------------------------------------------------------------------
-- Version stamp: last, so a run that fails leaves the old version recorded.
-- ---------------------------------------------------------------------------------------------------

DO $$
DECLARE
    before_version integer;
    this_version   integer := current_setting('sluice.schema_version')::integer;
    steps          text[]  := coalesce(string_to_array(nullif(current_setting('sluice.upgrade_steps', true), ''), E'\n'),
                                       '{}');
BEGIN
    SELECT version INTO before_version FROM sluice.schema_version;
    IF before_version IS DISTINCT FROM this_version OR cardinality(steps) > 0 THEN
        INSERT INTO sluice.schema_upgrades (from_version, to_version, steps) VALUES (before_version, this_version, steps);
    END IF;
    INSERT INTO sluice.schema_version (singleton, version, serves_from)
    VALUES (true, this_version, current_setting('sluice.serves_from')::integer)
    ON CONFLICT (singleton) DO UPDATE SET version = excluded.version, serves_from = excluded.serves_from,
                                          applied_at = now();
    -- sluice migrate --dry-run: everything above ran, and is now rolled back.
    IF current_setting('sluice.dry_run', true) = 'on' THEN
        RAISE EXCEPTION 'dry run: rolled back, nothing was applied'
            USING ERRCODE = 'SL001', DETAIL = array_to_string(steps, E'\n');
    END IF;
END
$$;

COMMIT;
