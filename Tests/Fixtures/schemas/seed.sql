-- Rows in every table of every past schema, for the upgrade tests: apply a historical schema.sql, then this
-- file, then the current schema.sql, and check that the rows survive. Each insert names only the columns of
-- its table's first version (columns were only ever added), so it runs against every later one; a table
-- that a version does not have yet is skipped. Fixed ids and timestamps keep the result the same each run,
-- and every insert is ON CONFLICT DO NOTHING (or NOT EXISTS), so applying it twice adds nothing.
--
-- Run with: psql -X -q -v ON_ERROR_STOP=1 -f seed.sql   (prints nothing)
--
-- The story: Clerk user user_seed_1 checks out the Pro plan in Stripe (customer cus_seed_1, subscription
-- sub_seed_1, invoice in_seed_1 paid by ch_seed_1, later partly refunded and disputed), and uses api_calls.
-- Meanwhile the queue holds a waiting webhook job with a unique key, a running job, a retry waiting in a
-- paused queue, a dead letter, and the key and result of a completed job.

BEGIN;

-- ---------------------------------------------------------------------------------------------------
-- sluice: these tables exist in every version (first: schema-version 1), so they are not guarded; a
-- failure here means the database is not a Sluice database at all.
-- ---------------------------------------------------------------------------------------------------

-- Written by schema.sql itself; this only makes sure of the row (version 1 is the oldest, so it never
-- stops a later schema.sql from upgrading).
INSERT INTO sluice.schema_version (singleton, version, applied_at)
VALUES (true, 1, '2024-04-01 00:00:00+00')
ON CONFLICT DO NOTHING;

-- First version: (kind, max_attempts NOT NULL); timeout_seconds came later and max_attempts became nullable.
INSERT INTO sluice.kinds (kind, max_attempts) VALUES
    ('stripe.event', 25),
    ('stripe.report_usage', 10)
ON CONFLICT DO NOTHING;

INSERT INTO sluice.paused_queues (queue, paused_at) VALUES
    ('billing-sync', '2024-05-20 09:30:00+00')
ON CONFLICT DO NOTHING;

-- Job ids 1-3 are live, 4 completed (its key and result remain), 5 died. Ids are given, so the identity
-- sequence is moved past them below.
INSERT INTO sluice.jobs
    (id, queue, kind, payload, priority, run_at, attempt, max_attempts, state, locked_by, locked_until,
     unique_key, errors, created_at)
VALUES
    -- A webhook waiting for a worker, deduplicated by the Stripe event id.
    (1, 'webhooks', 'stripe.event',
     '{"source": "webhook", "event_id": "evt_seed_5", "type": "invoice.upcoming", "body": "{\"id\": \"evt_seed_5\", \"object\": \"event\", \"type\": \"invoice.upcoming\", \"created\": 1716195600, \"livemode\": false, \"data\": {\"object\": {\"id\": \"upcoming_in_seed_2\", \"object\": \"invoice\", \"customer\": \"cus_seed_1\"}}}"}',
     0, '2024-05-20 09:00:00+00', 0, 25, 'available', NULL, NULL,
     'stripe:evt_seed_5', '[]', '2024-05-20 09:00:00+00'),
    -- A Clerk event being applied right now, leased to one worker's claim.
    (2, 'default', 'clerk.event',
     '{"source": "webhook", "event_id": "msg_seed_2", "type": "user.updated", "body": "{\"type\": \"user.updated\", \"object\": \"event\", \"timestamp\": 1716195900000, \"data\": {\"id\": \"user_seed_1\", \"object\": \"user\", \"first_name\": \"Ada\", \"last_name\": \"Lovelace\", \"updated_at\": 1716195900000, \"created_at\": 1714550400000}}"}',
     0, '2024-05-20 09:05:00+00', 1, 20, 'running', 'worker-a.internal:4242:9f1c2e/17', '2024-05-20 09:10:00+00',
     NULL, '[]', '2024-05-20 09:05:00+00'),
    -- A usage report that failed once and waits out its backoff in a paused queue.
    (3, 'billing-sync', 'stripe.report_usage', '{}',
     5, '2024-05-20 09:45:00+00', 1, 10, 'available', NULL, NULL,
     NULL, '[{"attempt": 1, "at": "2024-05-20T09:15:02+00:00", "error": "Stripe API: 503 Service Unavailable", "kind": "error"}]',
     '2024-05-20 09:15:00+00')
ON CONFLICT DO NOTHING;

INSERT INTO sluice.unique_keys (key, job_id, expires_at) VALUES
    ('stripe:evt_seed_5', 1, NULL),                       -- job 1 is waiting: held
    ('stripe:evt_seed_4', 4, '2024-05-27 08:00:00+00')    -- job 4 completed: kept for the retention
ON CONFLICT DO NOTHING;

INSERT INTO sluice.dead_letters
    (id, queue, kind, payload, priority, attempt, max_attempts, errors, reason, unique_key, created_at, died_at)
VALUES
    (5, 'webhooks', 'stripe.event',
     '{"source": "webhook", "event_id": "evt_seed_bad", "type": "customer.subscription.updated", "body": "{\"id\": \"evt_seed_bad\", \"object\": \"event\", \"type\": \"customer.subscription.updated\", \"created\": 1716192000, \"data\": {\"object\": {\"object\": \"subscription\"}}}"}',
     0, 1, 25,
     '[{"attempt": 1, "at": "2024-05-20T08:00:01+00:00", "error": "the event cannot be applied: event evt_seed_bad: field data.object.id is missing (expected string)", "kind": "permanent"}]',
     'permanent_failure', 'stripe:evt_seed_bad', '2024-05-20 08:00:00+00', '2024-05-20 08:00:01+00')
ON CONFLICT DO NOTHING;

-- Past every id used above (jobs and dead letters share the id space), never backwards.
DO $$
BEGIN
    PERFORM setval(pg_get_serial_sequence('sluice.jobs', 'id'),
                   greatest(5, pg_sequence_last_value(pg_get_serial_sequence('sluice.jobs', 'id'))));
END
$$;

-- First version: schema-version 2 (history 09).
DO $$
BEGIN
    IF to_regclass('sluice.job_results') IS NOT NULL THEN
        INSERT INTO sluice.job_results (job_id, kind, result, created_at) VALUES
            (4, 'stripe.create_portal_session',
             '{"id": "bps_seed_1", "url": "https://billing.stripe.com/p/session/test_seed_1"}',
             '2024-05-20 08:00:03+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- billing: the schema arrived in history 06; usage_counters and usage_events in 07, meters in 10.
-- Each table is guarded, so versions before it skip it. Stripe versions are the event's created
-- (Unix seconds); Clerk versions the user's updated_at (ms). Rank 1: an ordinary state.
-- ---------------------------------------------------------------------------------------------------

-- Written by schema.sql itself; this only makes sure of the row.
DO $$
BEGIN
    IF to_regclass('billing.settings') IS NOT NULL THEN
        INSERT INTO billing.settings (key, value, description) VALUES
            ('past_due_grace_period', '3 days',
             'How long a past_due subscription keeps access, counted from when it became past_due (a PostgreSQL interval).')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.users') IS NOT NULL THEN
        INSERT INTO billing.users
            (id, email, first_name, last_name, created_at, deleted_at, version, rank, updated_at)
        VALUES
            ('user_seed_1', 'ada@example.com', 'Ada', 'Lovelace', '2024-05-01 08:00:00+00', NULL,
             1714550400000, 1, '2024-05-01 08:00:01+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.customers') IS NOT NULL THEN
        INSERT INTO billing.customers
            (id, email, name, livemode, created_at, deleted_at, version, rank, updated_at)
        VALUES
            ('cus_seed_1', 'ada@example.com', 'Ada Lovelace', false, '2024-05-01 08:05:00+00', NULL,
             1714550700, 1, '2024-05-01 08:05:01+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.customer_links') IS NOT NULL THEN
        INSERT INTO billing.customer_links (customer_id, user_id, linked_by, event_id, linked_at) VALUES
            ('cus_seed_1', 'user_seed_1', 'stripe_checkout', 'evt_seed_checkout', '2024-05-01 08:05:11+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.products') IS NOT NULL THEN
        INSERT INTO billing.products (id, name, active, livemode, deleted_at, version, rank, updated_at) VALUES
            ('prod_seed_pro', 'Pro', true, false, NULL, 1711929600, 1, '2024-04-01 00:00:01+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.prices') IS NOT NULL THEN
        INSERT INTO billing.prices
            (id, product_id, currency, unit_amount, recurring_interval, lookup_key, active, livemode, deleted_at,
             version, rank, updated_at)
        VALUES
            ('price_seed_pro_monthly', 'prod_seed_pro', 'usd', 2000, 'month', 'pro', true, false, NULL,
             1711929600, 1, '2024-04-01 00:00:02+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- First version (06) lacks billing_interval, interval_count and created_at; items in that version's shape.
DO $$
BEGIN
    IF to_regclass('billing.subscriptions') IS NOT NULL THEN
        INSERT INTO billing.subscriptions
            (id, customer_id, status, plan, price_id, product_id, quantity, amount, currency, items,
             current_period_start, current_period_end, trial_start, trial_end, cancel_at_period_end, cancel_at,
             canceled_at, ended_at, paused, livemode, version, rank, updated_at)
        VALUES
            ('sub_seed_1', 'cus_seed_1', 'active', 'pro', 'price_seed_pro_monthly', 'prod_seed_pro', 1, 2000, 'usd',
             '[{"id": "si_seed_1", "price_id": "price_seed_pro_monthly", "product_id": "prod_seed_pro", "lookup_key": "pro", "unit_amount": 2000, "quantity": 1}]',
             '2024-05-01 08:05:10+00', '2024-06-01 08:05:10+00', NULL, NULL, false, NULL,
             NULL, NULL, false, false, 1714550710, 1, '2024-05-01 08:05:11+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.subscription_status_history') IS NOT NULL THEN
        INSERT INTO billing.subscription_status_history (subscription_id, event_id, at, status) VALUES
            ('sub_seed_1', 'evt_seed_sub_created', '2024-05-01 08:05:10+00', 'active')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- First version (06) lacks first_failed_at.
DO $$
BEGIN
    IF to_regclass('billing.invoices') IS NOT NULL THEN
        INSERT INTO billing.invoices
            (id, customer_id, subscription_id, status, currency, amount_due, amount_paid, amount_remaining,
             attempt_count, next_payment_attempt, billing_reason, period_start, period_end, last_event_type,
             livemode, version, rank, updated_at)
        VALUES
            ('in_seed_1', 'cus_seed_1', 'sub_seed_1', 'paid', 'usd', 2000, 2000, 0,
             1, NULL, 'subscription_create', '2024-05-01 08:05:10+00', '2024-05-01 08:05:10+00', 'invoice.paid',
             false, 1714550720, 2, '2024-05-01 08:05:21+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.charges') IS NOT NULL THEN
        INSERT INTO billing.charges
            (id, customer_id, invoice_id, currency, amount, amount_refunded, refunded, livemode, version, rank,
             updated_at)
        VALUES
            ('ch_seed_1', 'cus_seed_1', 'in_seed_1', 'usd', 2000, 500, false, false, 1715342400, 1,
             '2024-05-10 12:00:01+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.disputes') IS NOT NULL THEN
        INSERT INTO billing.disputes
            (id, charge_id, currency, amount, reason, status, livemode, version, rank, updated_at)
        VALUES
            ('dp_seed_1', 'ch_seed_1', 'usd', 1500, 'fraudulent', 'needs_response', false, 1715515200, 1,
             '2024-05-12 12:00:01+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.plan_limits') IS NOT NULL THEN
        INSERT INTO billing.plan_limits (plan, feature, limit_per_period) VALUES
            ('free', 'api_calls', 100),
            ('pro', 'api_calls', 10000),
            ('pro', 'exports', NULL)      -- unlimited
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.processed_events') IS NOT NULL THEN
        INSERT INTO billing.processed_events (source, event_id, type, outcome, event_created, processed_at) VALUES
            ('clerk', 'msg_seed_user_created', 'user.created', 'applied',
             '2024-05-01 08:00:00+00', '2024-05-01 08:00:01+00'),
            ('stripe', 'evt_seed_checkout', 'checkout.session.completed', 'applied',
             '2024-05-01 08:05:10+00', '2024-05-01 08:05:11+00'),
            ('stripe', 'evt_seed_sub_created', 'customer.subscription.created', 'applied',
             '2024-05-01 08:05:10+00', '2024-05-01 08:05:11+00'),
            ('stripe', 'evt_seed_payment_intent', 'payment_intent.succeeded', 'ignored',
             '2024-05-01 08:05:20+00', '2024-05-01 08:05:21+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- id is GENERATED ALWAYS: left to the table; NOT EXISTS keeps a second run from adding the entries again.
DO $$
BEGIN
    IF to_regclass('billing.audit_log') IS NOT NULL THEN
        INSERT INTO billing.audit_log (at, source, event_id, event_type, entity, entity_id, action, before, after)
        SELECT v.at, v.source, v.event_id, v.event_type, v.entity, v.entity_id, v.action, v.before, v.after
        FROM (VALUES
            ('2024-05-01 08:00:01+00'::timestamptz, 'clerk', 'msg_seed_user_created', 'user.created', 'users',
             'user_seed_1', 'created', NULL::jsonb,
             '{"id": "user_seed_1", "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace", "created_at": "2024-05-01T08:00:00+00:00", "deleted_at": null, "version": 1714550400000, "rank": 1}'::jsonb),
            ('2024-05-01 08:05:11+00', 'stripe', 'evt_seed_checkout', 'checkout.session.completed',
             'customer_links', 'cus_seed_1', 'linked', NULL,
             '{"customer_id": "cus_seed_1", "user_id": "user_seed_1", "linked_by": "stripe_checkout"}'),
            ('2024-05-01 08:05:11+00', 'stripe', 'evt_seed_sub_created', 'customer.subscription.created',
             'subscriptions', 'sub_seed_1', 'created', NULL,
             '{"id": "sub_seed_1", "customer_id": "cus_seed_1", "status": "active", "plan": "pro", "price_id": "price_seed_pro_monthly", "amount": 2000, "currency": "usd", "version": 1714550710, "rank": 1}')
        ) AS v(at, source, event_id, event_type, entity, entity_id, action, before, after)
        WHERE NOT EXISTS (SELECT 1 FROM billing.audit_log a
                          WHERE a.event_id = v.event_id AND a.entity = v.entity AND a.entity_id = v.entity_id
                            AND a.action = v.action);
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.usage_counters') IS NOT NULL THEN
        INSERT INTO billing.usage_counters (user_id, feature, period_start, period_end, used) VALUES
            ('user_seed_1', 'api_calls', '2024-05-01 08:05:10+00', '2024-06-01 08:05:10+00', 42)
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- First version (07) lacks report_error.
DO $$
BEGIN
    IF to_regclass('billing.usage_events') IS NOT NULL THEN
        INSERT INTO billing.usage_events
            (idempotency_key, user_id, feature, quantity, allowed, plan, limit_value, used, remaining,
             period_start, period_end, recorded_at, reported_at)
        VALUES
            ('req_seed_1', 'user_seed_1', 'api_calls', 40, true, 'pro', 10000, 40, 9960,
             '2024-05-01 08:05:10+00', '2024-06-01 08:05:10+00', '2024-05-15 10:00:00+00', '2024-05-15 10:01:00+00'),
            ('req_seed_2', 'user_seed_1', 'api_calls', 2, true, 'pro', 10000, 42, 9958,
             '2024-05-01 08:05:10+00', '2024-06-01 08:05:10+00', '2024-05-20 09:20:00+00', NULL)
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('billing.meters') IS NOT NULL THEN
        INSERT INTO billing.meters (feature, event_name) VALUES
            ('api_calls', 'api_calls')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

DO $$
BEGIN
    -- Version 4: the list of erased users (no personal data).
    IF to_regclass('billing.erasures') IS NOT NULL THEN
        INSERT INTO billing.erasures (user_id, version, erased_at) VALUES
            ('user_seed_gone', 1714557600000, '2024-05-01 10:00:00+00')
        ON CONFLICT DO NOTHING;
    END IF;
    -- Version 5: the operators' trail.
    IF to_regclass('sluice.operator_actions') IS NOT NULL THEN
        INSERT INTO sluice.operator_actions (at, role, action, target, result)
        SELECT '2024-05-02 09:00:00+00', 'seed_operator', 'pause_queue', 'billing-sync', NULL
        WHERE NOT EXISTS (SELECT 1 FROM sluice.operator_actions);
    END IF;
    -- Version 12: service keys of the app's API (a hash only).
    IF to_regclass('sluice.api_keys') IS NOT NULL THEN
        INSERT INTO sluice.api_keys (name, prefix, secret_hash, scopes, created_at, created_by)
        VALUES ('seed-service', 'sk_sluice_seedAbCd', sha256('sk_sluice_seed'), '{access:read,usage:write}',
                '2024-05-03 09:00:00+00', 'seed_owner')
        ON CONFLICT DO NOTHING;
    END IF;
    -- Version 14: the job the API started for a user (job 4's result is seeded above).
    IF to_regclass('sluice.job_callers') IS NOT NULL THEN
        INSERT INTO sluice.job_callers (job_id, role, caller, created_at)
        VALUES (4, 'seed_api', 'user:user_seed_1', '2024-05-20 08:00:00+00')
        ON CONFLICT DO NOTHING;
    END IF;
    -- Version 14: an outbound endpoint and an event for it.
    IF to_regclass('sluice.outbound_endpoints') IS NOT NULL THEN
        INSERT INTO sluice.outbound_endpoints (url, secret, event_types, created_at)
        SELECT 'https://app.example.com/hooks/sluice', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', '{payment.failed}',
               '2024-05-20 08:00:00+00'
        WHERE NOT EXISTS (SELECT 1 FROM sluice.outbound_endpoints);
        INSERT INTO sluice.outbound_events (id, type, occurred_at, body, user_id, dedup_key, created_at)
        VALUES ('evt_seed0000000000000000000000001', 'access.changed', '2024-05-20 08:00:00+00',
                '{"id": "evt_seed0000000000000000000000001", "type": "access.changed", "occurred_at": "2024-05-20T08:00:00.000000Z", "data": {"user_id": "user_seed_1", "has_access": true, "plan": "pro", "version": 1}}',
                'user_seed_1', 'access:user_seed_1:1', '2024-05-20 08:00:00+00')
        ON CONFLICT DO NOTHING;
    END IF;
    IF to_regclass('billing.access_snapshots') IS NOT NULL THEN
        INSERT INTO billing.access_snapshots (user_id, has_access, plan, status, reason, changes, updated_at)
        VALUES ('user_seed_1', true, 'pro', 'active', 'subscription', 1, '2024-05-20 08:00:00+00')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

COMMIT;
