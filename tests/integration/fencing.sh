#!/usr/bin/env bash
# fencing.sh -- every lock grant carries a larger fence, and PostgreSQL
# refuses a purchase whose fence is not newer than the last one applied: a
# holder whose lock expired while it was paused sells nothing. A purchase
# whose lock validity is spent before COMMIT is rolled back. The fence
# survives a Redis restart without persistence.
. "$(dirname "$0")/lib.sh"

fences() {
    sql "SELECT string_agg(fence::text, ' ' ORDER BY id) FROM orders WHERE product_id = $1"
}

P=$(new_product "Fenced" 10)
buy "/buy/$P" '{"amount": 1}'
buy "/buy/$P" '{"amount": 1}'
read -r f1 f2 <<<"$(fences "$P")"
check "each sale records its grant's fence, and fences grow ($f1 < $f2)" test "$f1" -lt "$f2"
same "the product keeps the last fence applied" "$(sql "SELECT fence FROM products WHERE id = $P")" "$f2"
same "a product's first sale starts its first epoch (its counter is new)" "$((f1 >> 32))" 1

# Every key the lock makes expires. The counter lives a day after its last
# grant; once it is gone, the next sale starts a new epoch, above every fence
# before it (here PEXPIRE stands in for a day without a sale).
ttl=$(rcli PTTL "fence:product:$P")
check "the fence counter expires a day after its last grant ($ttl ms)" \
    test "$ttl" -gt 86000000 -a "$ttl" -le 86400000
rcli PEXPIRE "fence:product:$P" 1 >/dev/null
for ((i = 0; i < 50; i++)); do
    [[ $(rcli EXISTS "fence:product:$P") == 0 ]] && break
    sleep 0.02
done
buy "/buy/$P" '{"amount": 1}'
expect "counter expired: the next purchase succeeds" 200
read -r _ _ f3 <<<"$(fences "$P")"
check "counter expired: its fence is of the next epoch ($f2 < $f3)" \
    test "$f2" -lt "$f3" -a "$((f3 >> 32))" -eq "$(((f2 >> 32) + 1))"

# Ids are the client's to choose: purchases of products that do not exist
# leave no key behind (the release deletes their counters), and no key in
# Redis is without an expiry.
seq 2000000 2000299 | xargs -P 8 -I{} curl -s -o /dev/null -w '%{http_code}\n' -X POST \
    "$BASE_URL/buy/{}" -H 'Content-Type: application/json' -d '{"amount": 1}' >"$TMP/unknown"
same "300 unknown product ids: 300 × 404" "$(grep -cx 404 "$TMP/unknown")" 300
same "300 unknown product ids: no fence counter left for them" \
    "$(rcli --scan --pattern 'fence:product:2000[0-2][0-9][0-9]' | wc -l)" 0
forever=$(rcli --scan | while read -r k; do [[ $(rcli PTTL "$k") == -1 ]] && echo "$k"; done)
same "no key in Redis lives forever ($(head -n 3 <<<"${forever:-none}" | tr '\n' ' '))" \
    "$(grep -c . <<<"$forever")" 0

# A holder paused (SIGSTOP) right after it took the lock, for longer than the
# TTL; meanwhile someone else buys. Woken, its purchase must be refused.
# TTL 4000 ms is the smallest the default timeouts allow (> 2 x 1750).
S=$(new_product "Stale holder" 10)
buy "/buy/$S" '{"amount": 1}' # not the first grant: that one starts an epoch first
STOCK_FAULT=locked LOCK_TTL_MS=4000 start_worker
fcgi_buy "$S" >"$TMP/answer" &
buyer=$!
check "stale holder: the worker is frozen holding the lock" wait_stopped
check "stale holder: its lock expires by its TTL" wait_gone "lock:product:$S"
buy "/buy/$S" '{"amount": 1}'
expect "stale holder: meanwhile another buyer gets the lock and buys" 200
kill -CONT "$WORKER"
wait "$buyer"
check "stale holder: woken, it answers 503" grep -q '^Status: 503' "$TMP/answer"
check "stale holder: with code lock_lost" grep -q '"code":"lock_lost"' "$TMP/answer"
check "stale holder: and Retry-After" grep -q '^Retry-After: 1' "$TMP/answer"
same "stale holder: only the other buyers' units were sold" "$(sold "$S")/$(stock "$S")" "2/8"
check "stale holder: the refusal is logged" grep -q "lock lost (PostgreSQL has applied a newer fence)" \
    "$TMP/w.log"
stop_worker

# A holder paused after its purchase ran but before COMMIT, past its TTL,
# while nobody else wants the product: no newer fence exists, but the
# validity check before COMMIT refuses it.
V=$(new_product "Spent validity" 10)
STOCK_FAULT=before_commit LOCK_TTL_MS=4000 start_worker
fcgi_buy "$V" >"$TMP/answer" &
buyer=$!
check "spent validity: the worker is frozen before its COMMIT" wait_stopped
check "spent validity: its lock expires by its TTL" wait_gone "lock:product:$V"
kill -CONT "$WORKER"
wait "$buyer"
check "spent validity: woken, it answers 503 lock_lost" grep -q '"code":"lock_lost"' "$TMP/answer"
same "spent validity: the purchase was rolled back" "$(sold "$V")/$(stock "$V")" "0/10"
check "spent validity: the reason is logged" grep -q "its validity was spent before COMMIT" "$TMP/w.log"
stop_worker

# Redis restarted without persistence: every fence counter starts again at
# 1, below what PostgreSQL has applied. Its first holder starts a new epoch
# from PostgreSQL's fence, and the purchase goes through.
R=$(new_product "Redis restart" 10)
buy "/buy/$R" '{"amount": 1}'
buy "/buy/$R" '{"amount": 1}'
before=$(sql "SELECT fence FROM products WHERE id = $R")
"$STACK" stop redis
"$STACK" up >/dev/null
same "Redis restarted: the fence counter is gone" "$(rcli EXISTS "fence:product:$R")" 0
buy "/buy/$R" '{"amount": 1}'
expect "Redis restarted: the next purchase still succeeds" 200
after=$(sql "SELECT fence FROM products WHERE id = $R")
check "Redis restarted: its fence is newer than before the restart ($before < $after)" \
    test "$before" -lt "$after"
check "Redis restarted: the new epoch is logged" \
    grep -q "product $R: new fence epoch (a new counter)" "$RUN_DIR/log/app.log"
buy "/buy/$R" '{"amount": 1}'
expect "Redis restarted: and the purchases after it too" 200
same "Redis restarted: 4 sold, fences strictly growing" \
    "$(sql "SELECT COUNT(*) FILTER (WHERE fence <= prev) || '/' || COUNT(*) FROM (SELECT fence,
        lag(fence) OVER (ORDER BY id) AS prev FROM orders WHERE product_id = $R) t")" "0/4"

# The counter can run ahead of what PostgreSQL applied (grants that bought
# nothing draw fences too). A holder frozen with such a fence from before a
# restart must still lose to every grant after it: a new epoch, not just the
# fence PostgreSQL had, is what the counter restarts from.
E=$(new_product "Epoch" 10)
buy "/buy/$E" '{"amount": 1}'
for i in 1 2 3 4 5; do buy "/buy/$E" '{"amount": 100}'; done # five grants, five fences, no sale
STOCK_FAULT=locked start_worker
fcgi_buy "$E" >"$TMP/answer" &
buyer=$!
check "epoch: a holder is frozen with a fence from before the restart" wait_stopped
"$STACK" stop redis
"$STACK" up >/dev/null
buy "/buy/$E" '{"amount": 1}'
expect "epoch: after the restart, a new holder buys" 200
kill -CONT "$WORKER"
wait "$buyer"
check "epoch: the holder from before the restart is refused (lock_lost)" \
    grep -q '"code":"lock_lost"' "$TMP/answer"
same "epoch: 2 sold, not 3" "$(sold "$E")" 2
check "epoch: the new fences are of a new epoch ($(fences "$E"))" \
    test "$(sql "SELECT MAX(fence) >> 32 FROM orders WHERE product_id = $E")" -ge 1
stop_worker

same "no lock key is left in Redis" "$(lock_keys)" 0
finish
