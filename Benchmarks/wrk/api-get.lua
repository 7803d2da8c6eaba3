-- wrk script for the app API benchmark (SluiceBench): GETs SLUICE_BENCH_PATH with the session tokens of
-- SLUICE_BENCH_TOKENS (one per line, one user each), each request the next token, so every user's
-- per-caller limit sees a fraction of the load.

function init(args)
    tokens = {}
    for line in io.lines(os.getenv("SLUICE_BENCH_TOKENS")) do
        tokens[#tokens + 1] = line
    end
    path = os.getenv("SLUICE_BENCH_PATH")
    position = math.random(#tokens)
end

function request()
    position = position % #tokens + 1
    return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. tokens[position] })
end
