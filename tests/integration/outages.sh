#!/usr/bin/env bash
# outages.sh -- Redis or PostgreSQL down: a clear 503, nothing sold, and the
# same workers recover on their own once the service is back.
. "$(dirname "$0")/lib.sh"

P=$(new_product "Outage" 10)
pids=$(workers)

# outage SERVICE NAME: stop SERVICE, check the answers, start it again.
outage() {
    local service=$1 name=$2 other before sold_before
    [[ $service == redis ]] && other=postgres || other=redis
    sold_before=$(sold "$P")
    "$STACK" stop "$service"

    buy "/buy/$P" '{"amount": 1}'
    expect "$name down: purchase answers 503 service_unavailable" 503 service_unavailable
    same "$name down: Retry-After is sent" "$(header Retry-After)" 1
    http GET /healthz
    expect "$name down: /healthz answers 503" 503 service_unavailable
    check "$name down: /healthz names $service as down" jq -e \
        ".$service == \"down\" and .$other == \"ok\"" <<<"$BODY"
    http GET "/products/$P"
    if [[ $service == postgres ]]; then
        expect "$name down: GET /products/{id} answers 503" 503 service_unavailable
    else
        expect "$name down: GET /products/{id} still answers from PostgreSQL" 200
    fi

    "$STACK" up >/dev/null
    same "$name down: nothing was sold" "$(sold "$P")" "$sold_before"
    buy "/buy/$P" '{"amount": 1}'
    expect "$name back: the next purchase succeeds" 200
    same "$name back: exactly that unit was sold" "$(stock "$P")/$(sold "$P")" \
        "$((9 - sold_before))/$((sold_before + 1))"
    same "$name back: the same workers reconnected (no restart)" "$(workers)" "$pids"
}

outage redis Redis
outage postgres PostgreSQL
same "after both outages: 2 units sold in all" "$(sold "$P")" 2

# The responders themselves down: nginx answers for them, in the same format.
"$STACK" stop app
buy "/buy/$P" '{"amount": 1}'
expect "responders down: nginx answers 503 service_unavailable" 503 service_unavailable
same "responders down: Retry-After is sent" "$(header Retry-After)" 1
"$STACK" up >/dev/null
buy "/buy/$P" '{"amount": 1}'
expect "responders back: purchases succeed" 200
same "after all outages: 3 units sold in all" "$(sold "$P")" 3
same "no lock key is left in Redis" "$(lock_keys)" 0

# The connection breaks while the purchase statement runs: the client cannot
# know whether it committed, and the answer says so. The statement waits on a
# row lock (hold_row) so it is provably in flight; a worker of our own with a
# long statement_timeout keeps this free of timing.
Q=$(new_product "Lost connection" 10)
hold_row "$Q"
STATEMENT_TIMEOUT_MS=30000 LOCK_TTL_MS=70000 start_worker
fcgi_buy "$Q" >"$TMP/answer" &
buyer=$!
backend=$(waiting_purchase)
check "lost connection: the purchase is waiting inside PostgreSQL" test -n "$backend"
kill -KILL "$backend" # no goodbye: the client sees the socket close
wait "$buyer"
check "lost connection: the answer is 503 service_unavailable" grep -q '^Status: 503' "$TMP/answer"
check "lost connection: the answer says the outcome is unknown" grep -q 'may or may not' "$TMP/answer"
kill "$WORKER" 2>/dev/null
wait "$WORKER" 2>/dev/null
# PostgreSQL restarts every backend after one is killed; wait for it.
for ((i = 0; i < 100; i++)); do
    sql "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
done
same "lost connection: here it had not committed: nothing was sold" "$(sold "$Q")/$(stock "$Q")" "0/10"
buy "/buy/$Q" '{"amount": 1}'
expect "lost connection: the stack's workers recover by themselves" 200

finish
