#!/usr/bin/env bash
# kill-worker.sh -- kill -9 workers under load, one of them while it
# provably holds a product's lock: the lock frees by its TTL, multiwatch
# starts replacements, later buyers succeed, and the invariants hold.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/lib.sh"

P=$(new_product "Kill a worker" 100000)

# A worker of our own, frozen right after it took the product's lock. It
# buys before the load starts: under load, the lock could be busy, and its
# purchase queued and made by another holder (combine.h), never taking the
# lock itself.
STOCK_FAULT=locked start_worker
fcgi_buy "$P" "fault-$$-holder" >/dev/null 2>&1 &
check "a worker is frozen holding the lock" wait_stopped
fence=$(rcli GET "fence:product:$P")
start_load "$P" 24
sleep 1
same "while it is frozen, its lock is granted to no one else (fence $fence)" \
    "$(rcli GET "fence:product:$P")" "$fence"
kill -KILL "$WORKER"
wait "$WORKER" 2>/dev/null
WORKER=
check "the dead holder's lock frees by its TTL: granted again after fence $fence" \
    wait_granted_after "$P" "$fence"

# And the stack's own workers, one after another, while they serve the load.
# Two of the main pool, and one of the overflow pool, where the hot
# product's buyers beyond PER_PRODUCT are served.
before=$(workers)
victims="$(cut -d' ' -f1-2 <<<"$(workers app)") $(cut -d' ' -f1 <<<"$(workers overflow)")"
for victim in $victims; do
    kill -KILL "$victim"
    sleep 1.2 # more than multiwatch's 1 s: a replacement counts as healthy
done
sold_then=$(sold "$P")
sleep 2
stop_load

after=$(workers)
same "multiwatch replaced every killed worker" "$(wc -w <<<"$after")" "$(wc -w <<<"$before")"
for victim in $victims; do
    check "killed worker $victim is gone" eval "[[ ' $after' != *' $victim '* ]]"
done
check "buyers kept buying after the kills ($sold_then, then $(sold "$P"))" \
    test "$(sold "$P")" -gt "$sold_then"
check_invariants "$P" 100000
finish
