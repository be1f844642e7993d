#!/usr/bin/env bash
# lock.sh -- the Redis lock: taken per product, released by its owner only,
# on every path, and still released after Redis forgot its scripts.
. "$(dirname "$0")/lib.sh"

P=$(new_product "Locked" 10)

buy "/buy/$P" '{"amount": 1}'
expect "a purchase answers 200" 200
same "its lock is released afterwards" "$(rcli EXISTS "lock:product:$P")" 0
buy "/buy/$P" '{"amount": 100}'
expect "a refused purchase (409) answers 409" 409 insufficient_stock
same "its lock is released too" "$(rcli EXISTS "lock:product:$P")" 0
buy /buy/2147483646 '{"amount": 1}'
expect "a purchase of a missing product answers 404" 404 product_not_found
same "its lock is released too" "$(rcli EXISTS lock:product:2147483646)" 0

# Redis restarted or SCRIPT FLUSH: EVALSHA answers NOSCRIPT, EVAL takes over.
rcli SCRIPT FLUSH >/dev/null
buy "/buy/$P" '{"amount": 1}'
expect "after SCRIPT FLUSH a purchase still answers 200" 200
same "after SCRIPT FLUSH the lock is still released" "$(rcli EXISTS "lock:product:$P")" 0

# Owner-only release. While a purchase holds the lock (its statement waits
# on a row lock), the key is replaced, as if the lock had expired and another
# buyer had taken it. When the purchase ends, its release must leave the
# other owner's lock alone: a plain DEL would free it.
hold_row "$P"
export STATEMENT_TIMEOUT_MS=30000 LOCK_TTL_MS=100000
start_worker
fcgi_buy "$P" >"$TMP/answer" &
buyer=$!
check "a purchase is holding the lock, waiting in PostgreSQL" test -n "$(waiting_purchase)"
token=$(rcli GET "lock:product:$P")
check "the lock's value is a 128-bit random token (32 hex digits)" grep -qxE '[0-9a-f]{32}' <<<"$token"
rcli SET "lock:product:$P" another-owner PX 60000 >/dev/null
release_row
wait "$buyer"
check "the purchase completes with 200" grep -q '^Status: 200' "$TMP/answer"
same "its release left the other owner's lock in place" "$(rcli GET "lock:product:$P")" another-owner
check "and the worker logged that its lock had expired" grep -q 'lock expired before release' "$TMP/w.log"
rcli DEL "lock:product:$P" >/dev/null
stop_worker
same "the worker exits 0 on SIGTERM" "$STOPPED" 0

# Waiting is a blocking BLPOP on the product's wake-up list, not polling:
# while the lock is held elsewhere, a waiting buyer tries again only once a
# 250 ms slice (in case a wake-up token was lost), and a release wakes it at
# once.
calls() {
    local n
    n=$(rcli INFO commandstats | sed -n "s/^cmdstat_$1:calls=\([0-9]*\),.*/\1/p")
    echo "${n:-0}"
}
H=$(new_product "Hand-off" 10)
rcli SET "lock:product:$H" someone-else PX 30000 >/dev/null
curl -s -o "$TMP/waiter" -w '%{http_code}' -X POST "$BASE_URL/buy/$H" \
    -H 'Content-Type: application/json' -d '{"amount": 1}' >"$TMP/waiter.status" &
waiter=$!
for ((i = 0; i < 200; i++)); do
    [[ $(rcli CLIENT LIST | grep -c 'cmd=blpop') == 1 ]] && break
    sleep 0.05
done
tries=$(calls evalsha)
sleep 1
tries=$(($(calls evalsha) - tries))
check "hand-off: a waiter blocked for 1 s tries at most once a slice ($tries; polling would be dozens)" \
    test "$tries" -le 5
# What a release does: free the lock, leave a wake-up token.
rcli DEL "lock:product:$H" >/dev/null
rcli LPUSH "wake:product:$H" 1 >/dev/null
wait "$waiter"
same "hand-off: the release wakes it, and it buys" "$(cat "$TMP/waiter.status")" 200

# A holder that dies releases nothing: the waiter's wait is capped by the
# holder's remaining TTL, and it takes the lock once that has expired.
rcli SET "lock:product:$H" dead-holder PX 800 >/dev/null
buy "/buy/$H" '{"amount": 1}'
expect "hand-off: a dead holder's lock is taken once it expires" 200

# A sold-out product: the last release leaves the stock it saw, and for
# the next STOCK_HINT_MS buyers who want more are answered by the acquire
# script alone, without the lock or PostgreSQL.
O=$(new_product "Sold out" 2)
buy "/buy/$O" '{"amount": 2}'
expect "sold out: the last units sell" 200
same "sold out: the release leaves the stock it saw" "$(rcli GET "stock:product:$O")" 0
# Every grant draws a fence: an unchanged counter means no grant.
fence=$(rcli GET "fence:product:$O")
for i in 1 2 3; do
    buy "/buy/$O" '{"amount": 1}'
    expect "sold out: buyer $i is refused (409) with the stock seen" 409 insufficient_stock
done
same "sold out: none of them took the lock" "$(rcli GET "fence:product:$O")" "$fence"
buy "/buy/$O" '{"amount": 1}' -H "Idempotency-Key: sold-out-$$"
expect "sold out: a keyed buyer still asks PostgreSQL (its answer is recorded)" 409 insufficient_stock
same "sold out: and its refusal was recorded" \
    "$(sql "SELECT status FROM idempotency_keys WHERE key = 'sold-out-$$'")" 409
sql "UPDATE products SET amount = 5 WHERE id = $O" >/dev/null
check "sold out: the hint expires within STOCK_HINT_MS" wait_gone "stock:product:$O"
buy "/buy/$O" '{"amount": 1}'
expect "sold out: after a restock, once the hint expired, the product sells" 200

same "no lock key is left in Redis" "$(lock_keys)" 0
finish
