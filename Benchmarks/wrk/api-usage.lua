-- wrk script for the app API benchmark (SluiceBench): POST /v1/usage with the service key
-- SLUICE_BENCH_KEY, one unit of api_calls for one of 10,000 users per request, each with an
-- Idempotency-Key of its own (SLUICE_BENCH_RUN, the thread and a counter), so every call records.

local created = 0

function setup(thread)
    thread:set("thread_index", created)
    created = created + 1
end

function init(args)
    key = os.getenv("SLUICE_BENCH_KEY")
    run = os.getenv("SLUICE_BENCH_RUN")
    count = 0
end

function request()
    count = count + 1
    local user = "user_" .. ((count * 7919 + thread_index * 13) % 10000 + 1)
    local body = '{"user_id":"' .. user .. '","feature":"api_calls","quantity":1}'
    return wrk.format("POST", "/v1/usage", {
        ["Authorization"] = "Bearer " .. key,
        ["Content-Type"] = "application/json",
        ["Idempotency-Key"] = run .. "-" .. thread_index .. "-" .. count,
    }, body)
end
