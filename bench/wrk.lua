-- wrk's script in the gunicorn scenario (bench/under_gunicorn.py).
-- With BENCH_TOKENS (a file of Authorization headers, one a line), every request sends the next one,
-- from line BENCH_OFFSET on, cycling: the cold-token row. Without it, the request is wrk's own (the
-- headers given with -H). At the end it prints one line of JSON: requests, duration, latency, errors.

local file = os.getenv("BENCH_TOKENS")
if file then
    local requests, offset = {}, tonumber(os.getenv("BENCH_OFFSET") or "0")
    for line in io.lines(file) do
        local headers = {}
        for name, value in pairs(wrk.headers) do
            headers[name] = value
        end
        headers["Authorization"] = line
        requests[#requests + 1] = wrk.format(nil, nil, headers)
    end
    local i = offset % #requests
    request = function()
        i = i % #requests + 1
        return requests[i]
    end
end

done = function(summary, latency, _)
    local e = summary.errors
    io.write(string.format(
        'WRK-RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
            .. '"status_errors": %d, "socket_errors": %d}\n',
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        e.status, e.connect + e.read + e.write + e.timeout
    ))
end
