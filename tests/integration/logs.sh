#!/usr/bin/env bash
# logs.sh -- request ids and JSON logs: nginx takes the client's
# X-Request-Id or makes one, returns it on every answer, and both nginx's
# access log and the responder's log carry it, one JSON object per line.
. "$(dirname "$0")/lib.sh"

APP_LOG=$RUN_DIR/log/app.log
ACCESS_LOG=$RUN_DIR/log/nginx-access.log
# wait_line FILE PATTERN: the file's last line matching PATTERN (fixed
# string), waited for up to 5 s: nginx writes its line after the answer.
wait_line() {
    for ((i = 0; i < 100; i++)); do
        grep -F -- "$2" "$1" | tail -n 1 | grep . && return 0
        sleep 0.05
    done
    return 1
}

http GET /healthz -H 'X-Request-Id: client-id.42'
same "a client's X-Request-Id is returned" "$(header X-Request-Id)" client-id.42
http GET /healthz
check "without one, nginx makes one up (32 hex digits): $(header X-Request-Id)" \
    grep -qxE '[0-9a-f]{32}' <<<"$(header X-Request-Id)"
http GET /healthz -H 'X-Request-Id: has spaces"and quotes'
check "an X-Request-Id that is not a plain token is replaced" \
    grep -qxE '[0-9a-f]{32}' <<<"$(header X-Request-Id)"
http GET /healthz -H "X-Request-Id: $(printf 'x%.0s' {1..129})"
check "so is one longer than 128 characters" grep -qxE '[0-9a-f]{32}' <<<"$(header X-Request-Id)"
http POST /buy/1 -H 'X-Request-Id: too-large' -H 'Content-Type: application/json' \
    --data-binary "$(printf '%02000d' 0)"
same "nginx's own errors carry it too (413)" "$STATUS $(header X-Request-Id)" "413 too-large"

P=$(new_product "Traced" 10)
id=trace-$$
buy "/buy/$P" '{"amount": 2}' -H "X-Request-Id: $id"
expect "a traced purchase answers 200" 200
line=$(wait_line "$APP_LOG" "\"request_id\":\"$id\"")
check "the responder logs the request as JSON: $line" jq -e --arg id "$id" --argjson p "$P" '
    .request_id == $id and .level == "info" and (.pid | type == "number") and .method == "POST"
    and .path == "/buy/\($p)" and .status == 200 and .code == "ok" and .product == $p
    and .amount == 2 and (.lock_wait_ms | type == "number") and (.total_ms | type == "number")
    and (.ts | test("^[0-9-]{10}T[0-9:.]{12}Z$"))' <<<"$line"
line=$(wait_line "$ACCESS_LOG" "\"request_id\":\"$id\"")
check "nginx's access log has the same id, as JSON: $line" jq -e --arg id "$id" '
    .request_id == $id and .status == 200 and .method == "POST" and (.request_time | type == "number")
    and (.upstream | test("app.sock"))' <<<"$line"

buy "/buy/$P" '{"amount": 100}' -H "X-Request-Id: $id-refused"
line=$(wait_line "$APP_LOG" "\"request_id\":\"$id-refused\"")
check "a refusal is logged with its code" jq -e '.status == 409 and .code == "insufficient_stock"' <<<"$line"

# A client cannot forge a log line: a newline in the path stays inside the
# JSON string.
http GET "/x%0A%7B%22forged%22:1%7D" -H "X-Request-Id: $id-forge"
line=$(wait_line "$APP_LOG" "\"request_id\":\"$id-forge\"")
check "a newline in the path stays inside its string" \
    jq -e '.path == "/x\n{\"forged\":1}" and .status == 404' <<<"$line"
same "no line of the log starts with the forged text" "$(grep -c '^{"forged"' "$APP_LOG")" 0
bad=$(grep -F '"pid":' "$APP_LOG" | jq -R 'fromjson? // "bad"' | grep -c '^"bad"$')
same "every line a responder wrote is valid JSON" "$bad" 0

# Probes answered 200 (healthchecks every few seconds) are in neither log at
# info; a probe that fails is in both. The purchase after them is the marker:
# once its lines are there, the probes' would be too.
http GET /healthz -H "X-Request-Id: $id-probe"
http GET /metrics -H "X-Request-Id: $id-scrape"
http POST /healthz -H "X-Request-Id: $id-badprobe"
expect "a POST /healthz answers 405" 405
buy "/buy/$P" '{"amount": 1}' -H "X-Request-Id: $id-marker"
wait_line "$APP_LOG" "\"request_id\":\"$id-marker\"" >/dev/null
wait_line "$ACCESS_LOG" "\"request_id\":\"$id-marker\"" >/dev/null
for log in "$APP_LOG" "$ACCESS_LOG"; do
    same "a /healthz answered 200 is not in $(basename "$log")" \
        "$(grep -cF "\"request_id\":\"$id-probe\"" "$log")" 0
    same "nor a /metrics answered 200" "$(grep -cF "\"request_id\":\"$id-scrape\"" "$log")" 0
    same "a /healthz answered 405 is" "$(grep -cF "\"request_id\":\"$id-badprobe\"" "$log")" 1
done
check "nginx logs the method the client sent, also for its own error answers (POST, 413)" \
    grep -q '"request_id":"too-large".*"method":"POST".*"status":413' "$ACCESS_LOG"

# Connections are events, named without credentials.
check "the workers log their Redis connection" grep -qF '"msg":"redis connected: ' "$APP_LOG"
check "and their PostgreSQL connection" grep -qF '"msg":"postgres connected: database redisdistributedlock' "$APP_LOG"

# The startup line has the settings, and no URL (a URL may carry a password).
line=$(grep -F 'worker ready' "$APP_LOG" | tail -n 1)
check "the startup line names the settings" grep -q 'lock_ttl_ms=[0-9]* lock_wait_ms=3000' <<<"$line"
check "and no URL" eval "! grep -qE 'unix://|redis://|postgresql://|host=' <<<'$line'"

# A failure is logged once, by whoever gives up on it: Redis unreachable
# at start, for a purchase, for /healthz, one line each.
WORKER_REDIS_URL="unix://$TMP/no-redis.sock" start_worker
same "Redis unreachable at start: one line says so" "$(grep -c '"msg":"redis connect: ' "$TMP/w.log")" 1
: >"$TMP/w.log"
check "Redis unreachable: a purchase answers 503" grep -q '^Status: 503' <<<"$(fcgi_buy "$P")"
same "Redis unreachable: the purchase logs the failure once" \
    "$(grep -c '"msg":"redis connect: ' "$TMP/w.log")" 1
: >"$TMP/w.log"
check "Redis unreachable: /healthz answers 503" grep -q '^Status: 503' <<<"$("$FCGI_REQUEST" \
    "$TMP/w.sock" REQUEST_METHOD=GET DOCUMENT_URI=/healthz </dev/null)"
same "Redis unreachable: /healthz logs the failure once" "$(grep -c 'redis connect: ' "$TMP/w.log")" 1
stop_worker
: >"$TMP/w.log"

# LOG_LEVEL: warn leaves out the request lines (info).
export LOG_LEVEL=warn
check "a worker starts with LOG_LEVEL=warn" start_worker
check "and serves a purchase" grep -q '^Status: 200' <<<"$(fcgi_buy "$P")"
stop_worker
same "with LOG_LEVEL=warn that request logged nothing" "$(grep -c '"status":' "$TMP/w.log")" 0
export LOG_LEVEL=info
check "a worker starts with LOG_LEVEL=info" start_worker
check "and serves a purchase" grep -q '^Status: 200' <<<"$(fcgi_buy "$P")"
stop_worker
same "with LOG_LEVEL=info that request logged its line" "$(grep -c '"status":200' "$TMP/w.log")" 1
# LOG_LEVEL: debug adds the probes, at level debug.
: >"$TMP/w.log"
export LOG_LEVEL=debug
check "a worker starts with LOG_LEVEL=debug" start_worker
check "and answers /healthz" grep -q '^Status: 200' <<<"$("$FCGI_REQUEST" "$TMP/w.sock" \
    REQUEST_METHOD=GET DOCUMENT_URI=/healthz </dev/null)"
stop_worker
check "with LOG_LEVEL=debug the probe has its line, at debug" \
    grep -q '"level":"debug","pid":[0-9]*,"method":"GET","path":"/healthz","status":200' "$TMP/w.log"
export LOG_LEVEL=info
finish
