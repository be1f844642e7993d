-- buy.lua -- wrk script: POST /buy/{id} with {"amount": 1}.
--   wrk ... -s buy.lua URL -- FIRST [LAST [keyed]]
-- The id is FIRST, or random in FIRST..LAST; "keyed" sends every purchase
-- with an Idempotency-Key of its own. Answers are counted by status and
-- problem code; done() prints one JSON line for bench.sh.

counts = {} -- a global: done() reads it from every thread

local first, last, keyed, tag
local sent = 0

function init(args)
    first = tonumber(args[1])
    last = tonumber(args[2] or args[1])
    -- Each thread has its own Lua state: seed each differently.
    math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
    wrk.method = "POST"
    wrk.body = '{"amount": 1}'
    wrk.headers["Content-Type"] = "application/json"
    keyed = args[3] == "keyed"
    tag = string.format("bench-%d-%d", os.time(), math.random(1, 2 ^ 30))
end

function request()
    local id = first
    if last > first then
        id = math.random(first, last)
    end
    if not keyed then
        return wrk.format(nil, "/buy/" .. id)
    end
    sent = sent + 1
    local headers = {}
    for k, v in pairs(wrk.headers) do
        headers[k] = v
    end
    headers["Idempotency-Key"] = tag .. "-" .. sent
    return wrk.format(nil, "/buy/" .. id, headers)
end

function response(status, headers, body)
    local key = tostring(status)
    if status ~= 200 then
        local code = body:match('"code":"([%w_]+)"')
        if code then
            key = key .. " " .. code
        end
    end
    counts[key] = (counts[key] or 0) + 1
end

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        for k, v in pairs(t:get("counts")) do
            total[k] = (total[k] or 0) + v
        end
    end
    local parts = {}
    for k, v in pairs(total) do
        table.insert(parts, string.format('"%s": %d', k, v))
    end
    local e = summary.errors
    io.write(string.format(
        '{"duration_us": %d, "requests": %d, "socket_errors": %d, "statuses": {%s}, ' ..
        '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
        summary.duration, summary.requests, e.connect + e.read + e.write + e.timeout,
        table.concat(parts, ", "), latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.max))
end
