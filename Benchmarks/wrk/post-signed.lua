-- wrk script for the outbound benchmark (SluiceBench): POSTs one signed Standard Webhooks body, the
-- ceiling for deliveries to the same endpoint.

function init(args)
    body = os.getenv("SLUICE_BENCH_BODY")
    headers = {
        ["Content-Type"] = "application/json",
        ["webhook-id"] = os.getenv("SLUICE_BENCH_ID"),
        ["webhook-timestamp"] = os.getenv("SLUICE_BENCH_TIMESTAMP"),
        ["webhook-signature"] = os.getenv("SLUICE_BENCH_SIGNATURE"),
    }
end

function request()
    return wrk.format("POST", nil, headers, body)
end
