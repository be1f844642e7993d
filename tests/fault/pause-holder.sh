#!/usr/bin/env bash
# pause-holder.sh -- a worker paused (SIGSTOP) while it holds the lock, for
# longer than the TTL; the load buys meanwhile; woken (SIGCONT), its late
# purchase is refused by the fence, and the invariants hold.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/lib.sh"

P=$(new_product "Pause the holder" 100000)

# Our worker buys before the load starts, so that it takes the lock itself
# (see kill-worker.sh); and not the product's first grant, which starts a
# fence epoch and, woken, would refuse itself before PostgreSQL's fence
# check could (purchase.c).
buy "/buy/$P" '{"amount": 1}' -H "Idempotency-Key: fault-$$-first"
STOCK_FAULT=locked LOCK_TTL_MS=4000 start_worker
fcgi_buy "$P" "fault-$$-paused" >"$TMP/paused" &
late=$!
check "a worker is paused holding the lock" wait_stopped
fence=$(rcli GET "fence:product:$P")
start_load "$P" 24
sleep 1
same "while it sleeps within its TTL, its lock is granted to no one else (fence $fence)" \
    "$(rcli GET "fence:product:$P")" "$fence"
check "its lock expires by its TTL: granted again after fence $fence" \
    wait_granted_after "$P" "$fence"
sold_then=$(sold "$P")
for ((i = 0; i < 100; i++)); do
    (($(sold "$P") > sold_then + 10)) && break
    sleep 0.1
done
check "others buy while it sleeps ($sold_then, then $(sold "$P"))" \
    test "$(sold "$P")" -gt "$((sold_then + 10))"
kill -CONT "$WORKER"
wait "$late"
check "woken, its purchase is refused: 503 lock_lost" grep -q '"code":"lock_lost"' "$TMP/paused"
check "by PostgreSQL's fence check" grep -q "lock lost (PostgreSQL has applied a newer fence)" \
    "$TMP/w.log"
same "and it bought nothing" \
    "$(sql "SELECT COUNT(*) FROM idempotency_keys WHERE key = 'fault-$$-paused'")" 0
stop_worker
stop_load
check_invariants "$P" 100000
finish
