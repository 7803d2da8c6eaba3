-- wrk script for the webhook ingest benchmark (SluiceBench): posts pre-signed Stripe events, each once.
-- SLUICE_BENCH_EVENTS names a file of lines "<Stripe-Signature>\t<body>"; of WRK_THREADS threads, thread k
-- takes lines k, k + n, k + 2n, ..., so no two requests carry the same event unless the file runs out.

local created = 0

function setup(thread)
    thread:set("thread_index", created)
    created = created + 1
end

function init(args)
    local threads = tonumber(os.getenv("WRK_THREADS"))
    events = {}
    local line_number = 0
    for line in io.lines(os.getenv("SLUICE_BENCH_EVENTS")) do
        if line_number % threads == thread_index then
            local tab = line:find("\t", 1, true)
            events[#events + 1] = { line:sub(1, tab - 1), line:sub(tab + 1) }
        end
        line_number = line_number + 1
    end
    position = 0
end

function request()
    position = position % #events + 1
    local event = events[position]
    return wrk.format("POST", "/webhooks/stripe",
        { ["Stripe-Signature"] = event[1], ["Content-Type"] = "application/json" }, event[2])
end
