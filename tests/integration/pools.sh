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
# A waiter leaves its BLPOP for a moment every slice (lock.h: "wait"), so
# one look may miss it: the most seen is counted. Once all are there, the
# other product and /healthz are tried at once (the first waiter gives up
# at LOCK_WAIT_MS), then half a second more of looks would show any waiter
# beyond the cap.
busy=$((PER_PRODUCT + OVERFLOW_WORKERS))
most=0
look() {
    local now
    now=$(blocked)
    ((now > most)) && most=$now
}
for ((i = 0; i < 200 && most < busy; i++)); do
    look
    sleep 0.05
done

buy "/buy/$COLD" '{"amount": 1}'
expect "storm: another product sells meanwhile" 200
answered=$(cat "$TMP"/hot.* | grep -c .)
same "storm: ... before any hot buyer was answered" "$answered" 0
http GET /healthz
same "storm: /healthz answers meanwhile" "$STATUS" 200

for ((i = 0; i < 10; i++)); do
    look
    sleep 0.05
done
same "storm: $busy responders wait on the hot lock ($PER_PRODUCT in the main pool, $OVERFLOW_WORKERS overflow)" \
    "$most" "$busy"

# Release as the owner would: the waiters hand the lock on to one another.
rcli DEL "lock:product:$HOT" >/dev/null
rcli LPUSH "wake:product:$HOT" 1 >/dev/null
wait
statuses=$(cat "$TMP"/hot.* | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
check "storm: every hot buyer is answered 200 or 429 (waited too long): $statuses" \
    test "$(cat "$TMP"/hot.* | grep -cxE '200|429')" -eq "$N"
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
expect "an overflow worker died holding the request: 504 outcome_unknown" 504 outcome_unknown
free_share
replaced() {
    local now
    now=$(workers overflow) || return 1
    [[ $(wc -w <<<"$now") == "$OVERFLOW_WORKERS" && " $now " != *" ${killed%% *} "* ]]
}
for ((i = 0; i < 100 && ! $(replaced && echo 1 || echo 0); i++)); do sleep 0.1; done
check "multiwatch replaces the overflow workers" replaced

# A read cannot have bought anything: when its worker dies holding it, the
# answer is service_unavailable, never outcome_unknown. The read waits in
# PostgreSQL behind a table lock, so that it is provably in a worker when
# every main-pool worker is killed. A kill that came too late (the read
# timed out first: nginx logged no 502) is tried again, three times at most.
read_killed() {
    local id=read-killed-$$-$1 pid
    psql -X -q "$(conninfo application_name=table-holder)" \
        -c "BEGIN; LOCK TABLE products IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60)" >/dev/null 2>&1 &
    for ((i = 0; i < 200; i++)); do
        [[ -n $(sql "SELECT 1 FROM pg_stat_activity WHERE application_name = 'table-holder'
                     AND query LIKE '%pg_sleep%'") ]] && break
        sleep 0.05
    done
    http GET "/products/$COLD" -H "X-Request-Id: $id" &
    pid=$!
    [[ -n $(waiting_purchase) ]] && kill -KILL $(workers app)
    wait "$pid"
    sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'table-holder'" >/dev/null
    STATUS=$(head -n 1 "$TMP/headers" | cut -d' ' -f2)
    BODY=$(cat "$TMP/body")
    for ((i = 0; i < 100; i++)); do
        grep -q "\"request_id\":\"$id\".*\"upstream_status\":\"502\"" "$RUN_DIR/log/nginx-access.log" &&
            return 0
        sleep 0.05
    done
    return 1
}
killed_mid_read=no
for attempt in 1 2 3 4 5; do
    read_killed "$attempt" && killed_mid_read=yes && break
done
same "a read's worker was killed while it held the read (nginx logged the 502)" \
    "$killed_mid_read" yes
expect "a read whose worker died holding it: 503 service_unavailable, not outcome_unknown" \
    503 service_unavailable
for ((i = 0; i < 100; i++)); do
    [[ $(workers app | wc -w) == "$WORKERS" ]] && break
    sleep 0.1
done

# Clients that send a purchase and hang up at once, as fast as one client
# can, for one product: nginx holds each request until its responder answers,
# so it keeps counting against PER_PRODUCT, and the main pool stays free for
# other products and /healthz. (Released at once, the requests would still
# queue for the main pool and crowd out everything else.) The product's lock
# is held meanwhile, so each request a worker takes waits LOCK_WAIT_MS: the
# flood fills whatever pool it reaches. It asks for more than the stock, so
# once the lock is free the queue drains with 409s. Bounded: 6 s, 200 000
# requests at most.
hot_sold=$(sold "$HOT")
rcli SET "lock:product:$HOT" someone-else PX 60000 >/dev/null
flood() {
    local end=$((SECONDS + 6)) n=0 port=${BASE_URL##*:}
    trap '' PIPE # nginx may close first: a write then fails, and must not end the loop
    local req='POST /buy/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 18\r\nConnection: close\r\n\r\n{"amount": 100000}'
    while ((SECONDS < end && n < 200000)); do
        if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
            # shellcheck disable=SC2059
            printf "$req" "$HOT" >&3
            exec 3>&-
        fi
        n=$((n + 1))
    done 2>/dev/null
    echo "$n" >"$TMP/flooded"
}
flood &
flooder=$!
probes=()
for ((i = 0; i < 25; i++)); do
    sleep 0.2
    buy "/buy/$COLD" '{"amount": 0}' # parsed, refused: 400, and nothing bought
    probes+=("$STATUS")
    http GET /healthz
    probes+=("$STATUS")
done
wait "$flooder"
rcli DEL "lock:product:$HOT" >/dev/null
rcli LPUSH "wake:product:$HOT" 1 >/dev/null
statuses=$(printf '%s\n' "${probes[@]}" | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
same "hang-up flood ($(cat "$TMP/flooded") requests): every purchase of another product and every /healthz answered ($statuses)" \
    "$(printf '%s\n' "${probes[@]}" | grep -cxE '400|200')" 50

# The queue drains (409s, and the stock hint): no flood request is left in a
# worker when the next checks run.
for ((i = 0; i < 600; i++)); do
    [[ $(blocked) == 0 && $(curl -s -o /dev/null -w '%{http_code}' "$BASE_URL/buy/$HOT" \
        -H 'Content-Type: application/json' -d '{"amount": 100000}') == 409 ]] && break
    sleep 0.1
done
same "the flood bought nothing" "$(sold "$HOT")" "$hot_sold"

# A purchase whose client hung up is made all the same; its key tells.
key=hung-up-$$
before=$(sold "$COLD")
exec 3<>"/dev/tcp/127.0.0.1/${BASE_URL##*:}"
printf 'POST /buy/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: %s\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{"amount": 1}' \
    "$COLD" "$key" >&3
exec 3>&-
for ((i = 0; i < 100; i++)); do
    [[ $(sold "$COLD") != "$before" ]] && break
    sleep 0.05
done
same "a purchase whose client hung up is made" "$(sold "$COLD")" "$((before + 1))"
buy "/buy/$COLD" '{"amount": 1}' -H "Idempotency-Key: $key"
expect "and a retry with its key answers 200, replayed" 200
same "... as a replay" "$(header Idempotent-Replayed)" true

same "no lock key is left in Redis" "$(lock_keys)" 0
finish
