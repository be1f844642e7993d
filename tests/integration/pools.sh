#!/usr/bin/env bash
# pools.sh -- a hot product cannot take every responder: nginx lets only
# PER_PRODUCT requests for one product into the main pool at once and sends
# the rest to the overflow pool, so other products still sell at once.
. "$(dirname "$0")/lib.sh"
: "${PER_PRODUCT:?} ${OVERFLOW_WORKERS:?} ${WORKERS:?}"

HOT=$(new_product "Storm" 100)
COLD=$(new_product "Quiet" 10)
blocked() { rcli CLIENT LIST | grep -c 'cmd=blpop'; }

# Someone else holds the hot product's lock, so its buyers wait on it (up to
# LOCK_WAIT_MS), each occupying a responder. More of them than the main pool
# has workers: without the per-product cap they would fill it.
rcli SET "lock:product:$HOT" someone-else PX 60000 >/dev/null
N=$((WORKERS + OVERFLOW_WORKERS))
for ((i = 0; i < N; i++)); do
    curl -s -o /dev/null -w '%{http_code}\n' -X POST "$BASE_URL/buy/$HOT" \
        -H 'Content-Type: application/json' -d '{"amount": 1}' >"$TMP/hot.$i" &
done
# Each responder that took a hot request blocks in BLPOP: PER_PRODUCT of the
# main pool and the whole overflow pool; the rest queue for the overflow pool.
busy=$((PER_PRODUCT + OVERFLOW_WORKERS))
for ((i = 0; i < 200; i++)); do
    (($(blocked) >= busy)) && break
    sleep 0.05
done
same "storm: $busy responders wait on the hot lock ($PER_PRODUCT in the main pool, $OVERFLOW_WORKERS overflow)" \
    "$(blocked)" "$busy"

buy "/buy/$COLD" '{"amount": 1}'
expect "storm: another product sells meanwhile" 200
answered=$(cat "$TMP"/hot.* | grep -c .)
same "storm: ... before any hot buyer was answered" "$answered" 0
http GET /healthz
same "storm: /healthz answers meanwhile" "$STATUS" 200

# Release as the owner would: the waiters hand the lock on to one another.
rcli DEL "lock:product:$HOT" >/dev/null
rcli LPUSH "wake:product:$HOT" 1 >/dev/null
wait
statuses=$(cat "$TMP"/hot.* | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
check "storm: every hot buyer is answered 200 or 503 (waited too long): $statuses" \
    test "$(cat "$TMP"/hot.* | grep -cxE '200|503')" -eq "$N"
check "storm: the release is handed on from buyer to buyer" \
    test "$(cat "$TMP"/hot.* | grep -cx 200)" -gt 0
same "storm: units sold = 200 answers" "$(sold "$HOT")" "$(cat "$TMP"/hot.* | grep -cx 200)"

# The overflow pool's failures are answered like the main pool's, as
# problems. PER_PRODUCT buyers take the product's share of the main pool;
# the next one goes to the overflow pool.
fill_share() {
    rcli SET "lock:product:$HOT" someone-else PX 60000 >/dev/null
    for ((i = 0; i < PER_PRODUCT; i++)); do
        curl -s -o /dev/null -X POST "$BASE_URL/buy/$HOT" \
            -H 'Content-Type: application/json' -d '{"amount": 1}' &
    done
    for ((i = 0; i < 200; i++)); do
        (($(blocked) >= PER_PRODUCT)) && break
        sleep 0.05
    done
}
free_share() {
    rcli DEL "lock:product:$HOT" >/dev/null
    rcli LPUSH "wake:product:$HOT" 1 >/dev/null
    wait
}
fill_share
mv "$RUN_DIR/sock/overflow.sock" "$RUN_DIR/sock/overflow.sock.away"
buy "/buy/$HOT" '{"amount": 1}'
expect "overflow pool unreachable: 503 service_unavailable, as a problem" 503 service_unavailable
mv "$RUN_DIR/sock/overflow.sock.away" "$RUN_DIR/sock/overflow.sock"
free_share

fill_share
buy "/buy/$HOT" '{"amount": 1}' &
for ((i = 0; i < 200; i++)); do
    (($(blocked) > PER_PRODUCT)) && break
    sleep 0.05
done
killed=$(workers overflow)
kill -KILL $killed # one of them holds the request
wait $!
STATUS=$(head -n 1 "$TMP/headers" | cut -d' ' -f2)
BODY=$(cat "$TMP/body")
expect "an overflow worker died holding the request: 503 outcome_unknown" 503 outcome_unknown
free_share
replaced() {
    local now
    now=$(workers overflow) || return 1
    [[ $(wc -w <<<"$now") == "$OVERFLOW_WORKERS" && " $now " != *" ${killed%% *} "* ]]
}
for ((i = 0; i < 100 && ! $(replaced && echo 1 || echo 0); i++)); do sleep 0.1; done
check "multiwatch replaces the overflow workers" replaced

same "no lock key is left in Redis" "$(lock_keys)" 0
finish
