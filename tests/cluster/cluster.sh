#!/usr/bin/env bash
# cluster.sh -- several machines, each a network namespace this test makes
# itself, on a bridge of its own:
#
#   client 10.77.0.10 --> edge 10.77.0.1 (nginx, SITE=edge)
#                           |-> a 10.77.0.2 (nginx + both pools)
#                           |-> b 10.77.0.3 (nginx + both pools)
#   redis 10.77.0.4 (Redis, requirepass)
#   pg 10.77.0.5 (PostgreSQL, scram)
#
# Host a reaches PostgreSQL through a TCP relay (socat) on its own loopback,
# which the test pauses (SIGSTOP) to stall that link: this kernel has no
# netem. Partitions are nftables rules inside a host's namespace.
#
# Under a load of buyers with idempotency keys (tests/fault/lib.sh), one
# fault after another, each followed by the invariants of tests/fault/:
#   1. host a partitioned from Redis, then healed;
#   2. host a's link to PostgreSQL stalled beyond LOCK_TTL_MS, then resumed;
#   3. the edge partitioned from host a, then healed;
#   4. both hosts degraded at once (a from Redis, b from PostgreSQL);
#   5. host a killed whole (every process in it) while it holds purchases.
# (Redis and PostgreSQL failover: tests/cluster/ha.sh.)
# Each prints how long sales stopped. Every name and address exists only in
# the namespaces, all of which go on exit, failure or interrupt; namespaces
# a killed run left behind fail the next run (and are removed by it).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ $(id -u) != 0 ]]; then
    echo "ok 1 - cluster # SKIP network namespaces need root"
    echo "1..1"
    exit 0
fi

STOCK_BIN=$ROOT/build/asan/stock-fcgi
. "$ROOT/tests/cluster/lib.sh"
RELAY_PORT=6432

# What tests/integration/lib.sh and tests/fault/lib.sh expect: the database
# and Redis are the pg and redis hosts' (their unix sockets are files, seen
# from here), and the buyers go through the edge.
export BASE_URL=http://${ADDR[edge]}:3000 RUN_DIR=$CL/pg PGPORT=5432 STACK STOCK_BIN
. "$ROOT/tests/integration/lib.sh"
. "$ROOT/tests/fault/lib.sh"
rcli() { REDISCLI_AUTH=$REDIS_PW redis-cli -s "$CL/redis/sock/redis.sock" "$@"; }
# Every client command runs on the client host.
curl() { on client curl "$@"; }

cleanup() {
    [[ -n ${MONITOR:-} ]] && kill "$MONITOR" 2>/dev/null
    teardown "$NS"
    [[ -n ${KEEP:-} ]] || rm -rf "$CL"
    cleanup_suite
}
trap cleanup EXIT
trap 'exit 130' INT TERM

leftover=$(leftovers)
same "no namespaces left by an earlier run" "$(echo $leftover)" ""
for prefix in $leftover; do teardown "$prefix"; done
ADDR[edge1]=$NET.6 # a second edge, rate limited, that no load goes through
network_up || not_ok "the network namespaces could be made"

# Host a's relay to PostgreSQL, its own process group: paused as one.
relay() {
    on a setsid -f sh -c 'echo $$ >"$1"; shift; exec socat "$@"' sh "$CL/relay.pid" \
        "TCP-LISTEN:$RELAY_PORT,bind=127.0.0.1,fork,reuseaddr" "TCP:${ADDR[pg]}:5432" \
        </dev/null >/dev/null 2>&1
    for _ in {1..50}; do
        RELAY=$(cat "$CL/relay.pid" 2>/dev/null) && [[ -n $RELAY ]] && return 0
        sleep 0.1
    done
    return 1
}

started=0
if backends && relay &&
    responders a "127.0.0.1:$RELAY_PORT" WORKERS=3 OVERFLOW_WORKERS=2 &&
    responders b "${ADDR[pg]}:5432" WORKERS=3 OVERFLOW_WORKERS=2 &&
    start edge SERVICES=edge UPSTREAMS="${ADDR[a]}:3000 ${ADDR[b]}:3000" FAIL_TIMEOUT=3s &&
    start edge1 SERVICES=edge UPSTREAMS="${ADDR[a]}:3000 ${ADDR[b]}:3000" RATE_LIMIT=1; then
    started=1
fi
same "the hosts start: pg, redis, two responder hosts, two edges" "$started" 1
((started)) || finish

# --- Addresses and metrics behind the edge ----------------------------------
http GET /healthz
expect "through the edge: /healthz answers 200" 200
http GET /metrics
expect "through the edge: /metrics is not there (404)" 404 not_found
for host in a b; do
    out=$(on edge curl -s "http://${ADDR[$host]}:3000/metrics")
    check "host $host: /metrics from the edge's address (METRICS_ALLOW) answers 200" \
        grep -q '^stock_http_requests_total' <<<"$out"
    STATUS=$(curl -s -o /dev/null -w '%{http_code}' "http://${ADDR[$host]}:3000/metrics")
    same "host $host: /metrics from a client's address is forbidden" "$STATUS" 403
done
buy /buy/1 '{"amount": 1}' -H 'X-Real-IP: 10.77.0.66' -H 'X-Request-Id: realip-check'
hosts_log=$(cat "$CL"/{a,b}/log/nginx-access.log)
same "a host logs the client's address the edge saw, not the edge's, nor a forged one" \
    "$(jq -r 'select(.request_id == "realip-check") | .remote_addr' <<<"$hosts_log")" "${ADDR[client]}"

# The edge's own errors on a purchase are problem+json too (its /buy/
# location has error pages of its own, and must repeat the others).
buy /buy/1 "{\"amount\": 1, \"pad\": \"$(printf '%02000d' 0)\"}"
expect "through the edge: a body over 1 KiB is 413 payload_too_large" 413 payload_too_large
edge=$BASE_URL
BASE_URL=http://${ADDR[edge1]}:3000
for i in 1 2 3 4; do buy /buy/999999 '{"amount": 1}'; done
expect "an edge with RATE_LIMIT=1: the 4th purchase at once is 429 too_many_requests" 429 too_many_requests
same "and it says when to retry" "$(header Retry-After)" 1
BASE_URL=$edge

# --- The faults ---------------------------------------------------------------
# Purchases sent again after an attempt that may have bought: the ids. From
# the edge's log, which lists every attempt of a request (", " between
# hosts, " : " between passes): every attempt but the last must have been a
# 503 or have sent nothing. From the hosts' logs: a request id that reached
# both hosts must have been answered 503 by one of them.
resent_without_503() {
    jq -r 'select(.method == "POST") | . as $r
           | [.upstream_status, .upstream_bytes_sent] | map(split(", | : "; null)) | transpose
           | .[:-1] | map(select(.[0] != "503" and .[1] != "0"))
           | select(length > 0) | $r.request_id' "$CL/edge/log/nginx-access.log"
    jq -rs 'map(select(.method == "POST")) | group_by(.request_id)
            | map(select(length > 1 and (map(.status) | index(503)) == null)) | .[][0].request_id' \
        "$CL"/{a,b}/log/nginx-access.log
}
# The edge's own 504s whose attempts were each a 503 or sent nothing: a
# purchase nobody can have made, called outcome_unknown.
false_unknowns() {
    jq -r 'select(.method == "POST" and .status == 504) | . as $r
           | [.upstream_status, .upstream_bytes_sent] | map(split(", | : "; null)) | transpose
           | select(all(.[0] == "503" or .[1] == "0")) | $r.request_id' "$CL/edge/log/nginx-access.log"
}
# Lock grants (the acquire script's SET NX, as MONITOR shows a script's
# calls) with a token that a release had already been sent with. The release
# script is the one whose first call reads the lock key; its token is the
# first ARGV (field 11: time, [db, client], EVALSHA, sha, 4, four keys).
stale_acquires() {
    awk 'NR == FNR {
             if ($4 == "\"EVALSHA\"") { sha = $5; first = 1; next }
             if (first && $3 == "lua]" && $4 == "\"GET\"" && $5 ~ /^"lock:product:/) release[sha] = 1
             first = 0
             next
         }
         $4 == "\"EVALSHA\"" && ($5 in release) { released[$11] = 1 }
         $3 == "lua]" && $4 == "\"SET\"" && $5 ~ /^"lock:product:/ && ($6 in released) { print $6 }' \
        "$1" "$1" | head -n 3
}

# fault_window PRODUCT SECONDS START STOP: 8 keyed buyers of PRODUCT; after
# a second START (a command and its arguments) at t0, STOP SECONDS later at
# t1, and 2 s more of load to see selling resume.
fault_window() {
    local product=$1 secs=$2 start=$3 stop=$4
    start_load "$product" 8
    sleep 1
    t0=$(date +%s.%N)
    $start
    sleep "$secs"
    $stop
    t1=$(date +%s.%N)
    sleep 2
    stop_load
}

# 1. Host a loses Redis. Its workers time out, answer 503, and the edge sends
# those purchases to b. The heal must not leave a lock that nobody releases:
# a command the kernel resent after the worker gave up would take the lock
# after the worker's own "release what I may hold" (Redis MONITOR shows it).
P=$(new_product "Cluster: Redis partition" 100000)
rcli MONITOR >"$CL/monitor" 2>/dev/null &
MONITOR=$!
fault_window "$P" 3 "nft_cut a ${ADDR[redis]}" "nft_heal a"
# A kernel's retransmission backs off: after a 3 s cut, the next one may
# come some seconds after the heal.
sleep 2
kill "$MONITOR"
MONITOR=
echo "# Redis partition of host a: $(stopped "$P" "$t0")"
stale=$(stale_acquires "$CL/monitor")
same "after the heal, no lock was taken with a token already released" "$stale" ""
same "no client got service_unavailable: the edge sent a's 503s to b" \
    "$(answered service_unavailable)" 0
check "selling goes on after the heal" test "$(sold_since "$P" "$t1")" -gt 0
check "host a did answer 503 while cut off from Redis" \
    jq -se 'any(.status == 503)' "$CL/a/log/nginx-access.log"
same "no POST reached two hosts unless the first answered 503" "$(resent_without_503)" ""
check_invariants "$P" 100000

# 2. Host a's link to PostgreSQL stalls (its relay paused) for longer than a
# lock lives, then resumes and delivers what it held. Host b, whose link is
# fine, goes on selling the same product: a's stalled transactions hold the
# row for at most STATEMENT_TIMEOUT_MS + 500 ms (the server ends them), and a
# row that is busy is "lock_timeout" (429), never a 503 from b. What a sent
# before the stall is delivered late and commits nothing.
P=$(new_product "Cluster: stalled PostgreSQL link" 100000)
fault_window "$P" $((LOCK_TTL_MS / 1000 + 1)) "kill -STOP -- -$RELAY" "kill -CONT -- -$RELAY"
during=$(sql "SELECT COUNT(*) FROM orders WHERE product_id = $P
              AND created_at BETWEEN to_timestamp($t0 + 2) AND to_timestamp($t1)")
echo "# PostgreSQL link of host a stalled: $(stopped "$P" "$t0")"
check "host b sold the product while a's link stalled ($during orders)" test "$during" -gt 0
same "host b answered no 503: its PostgreSQL and Redis were fine" \
    "$(jq -r 'select(.status == 503) | .request_id' "$CL/b/log/nginx-access.log" | grep -c "^fault-$$-$P-")" 0
same "no POST reached two hosts unless the first answered 503" "$(resent_without_503)" ""
check_invariants "$P" 100000

# 3. The edge loses host a for a while. New purchases go to b (a connect that
# times out sent nothing, and is tried once more); those a already had are
# answered when the link comes back. None is sent to both.
P=$(new_product "Cluster: edge partitioned from a host" 100000)
fault_window "$P" 3 "nft_cut edge ${ADDR[a]}" "nft_heal edge"
echo "# edge cut from host a: $(stopped "$P" "$t0")"
check "selling goes on after the heal" test "$(sold_since "$P" "$t1")" -gt 0
same "no purchase went unanswered" "$(answered 000)" 0
same "no POST reached two hosts unless the first answered 503" "$(resent_without_503)" ""
check_invariants "$P" 100000

# 4. Both hosts degraded at once: a cut off from Redis, b from PostgreSQL.
# Every purchase is answered 503 by both (nothing bought), or 200, or a
# host's own outcome_unknown for a COMMIT the cut caught; the edge, having
# run out of hosts, must not call a purchase that only met 503s and
# connects that sent nothing "outcome_unknown".
P=$(new_product "Cluster: both hosts degraded" 100000)
cut_both() { nft_cut a "${ADDR[redis]}" && nft_cut b "${ADDR[pg]}"; }
heal_both() { nft_heal a && nft_heal b; }
fault_window "$P" 2 cut_both heal_both
echo "# both hosts degraded: $(stopped "$P" "$t0")"
same "the edge made no outcome_unknown of 503s and unsent attempts" "$(false_unknowns)" ""
# What a purchase caught by the cut gets depends on where it was: b's
# COMMIT, 504; before it, 503; queued on the lock behind a holder of b's
# that waits for PostgreSQL, 429 lock_timeout at its deadline. Some get one
# of them; which, the timing decides.
refused=$(($(answered service_unavailable) + $(answered outcome_unknown) + $(answered lock_timeout)))
check "clients got 503, 504 or 429 while no host could sell ($refused)" test "$refused" -gt 0
check "selling goes on after the heal" test "$(sold_since "$P" "$t1")" -gt 0
same "no POST reached two hosts unless the first answered 503" "$(resent_without_503)" ""
check_invariants "$P" 100000

# 5. Host a dies whole: every process in it, at once, while it holds
# purchases (its responders frozen for a second first, so that some are in
# flight there for sure). Those are answered 504 outcome_unknown, and the
# same key, retried, gets a definite answer; the others go to b. Every
# answer is an order or problem+json, never nginx's HTML.
P=$(new_product "Cluster: a host killed" 100000)
start_load "$P" 8
sleep 1
t0=$(date +%s.%N)
frozen=$(RUN_DIR=$CL/a workers)
kill -STOP $frozen
sleep 1
for pid in $(ip netns pids "$NS-a"); do kill -KILL "$pid" 2>/dev/null; done
sleep 3
stop_load
echo "# host a killed: $(stopped "$P" "$t0")"
same "no purchase went unanswered" "$(answered 000)" 0
same "every answer is an order or a problem" \
    "$(cut -d' ' -f3- "$TMP/answers" | jq -Rr 'fromjson? // "not json" | .code // .order_id // "?"' |
        grep -c -e '^not json$' -e '^?$')" 0
unknown=$(awk '/"code":"outcome_unknown"/ {print $1}' "$TMP/answers")
check "the purchases a had when it died are outcome_unknown ($(wc -w <<<"$unknown"))" test -n "$unknown"
definite=0
for key in $unknown; do
    buy "/buy/$P" '{"amount": 1}' -H "Idempotency-Key: $key"
    [[ $STATUS == 200 ]] && definite=$((definite + 1))
done
same "each of them, retried with its key, gets its order" "$definite" "$(wc -w <<<"$unknown")"
check "selling goes on at host b after a died" test "$(sold_since "$P" "$t0 + 2")" -gt 0
check_invariants "$P" 100000

# What a responder under ASan or UBSan reported, on any host.
reports=$(ls "$CL"/{a,b}/log/sanitizer.* 2>/dev/null)
same "sanitizers: no report from any host's responders" "$reports" ""
[[ -z $reports ]] || sed 's/^/#   /' $reports | head -n 40

finish
