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

same "no lock key is left in Redis" "$(lock_keys)" 0
finish
