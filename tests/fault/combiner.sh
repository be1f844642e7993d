#!/usr/bin/env bash
# combiner.sh -- the lock holder that took queued purchases with its lock
# (include/combine.h) is killed after its COMMIT, killed before it, or
# stalled past its TTL: every buyer it took still gets a definite answer,
# its own, and nothing is sold twice.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/lib.sh"

FROZEN=
WAITERS=4
thaw() {
    [[ -n $FROZEN ]] && kill -CONT $FROZEN 2>/dev/null
    FROZEN=
}
trap 'thaw; cleanup_suite' EXIT

# queue_up ID: a fake holder takes the product's lock, and WAITERS buyers
# queue behind it through nginx, the even ones with a key (comb-PID-ID-b),
# the odd ones without: a key would let a bought-twice purchase replay. Then the stack's workers are frozen,
# so that when the fake holder lets go our own worker, not one of theirs,
# takes the lock, and the queue with it.
queue_up() {
    local p=$1
    rcli SET "lock:product:$p" fake PX 60000 >/dev/null
    rm -f "$TMP"/q.*
    for ((b = 0; b < WAITERS; b++)); do
        local key=()
        ((b % 2)) || key=(-H "Idempotency-Key: comb-$$-$p-$b")
        curl -s --max-time 30 -w '\n%{http_code}' -X POST "$BASE_URL/buy/$p" \
            -H 'Content-Type: application/json' "${key[@]}" -d '{"amount": 1}' >"$TMP/q.$b" &
    done
    for ((i = 0; i < 200; i++)); do
        [[ $(rcli LLEN "queue:product:$p") == "$WAITERS" ]] && break
        sleep 0.05
    done
    FROZEN=$(workers)
    kill -STOP $FROZEN
    rcli DEL "lock:product:$p" >/dev/null
}

# holder FAULT ID: our worker, frozen at FAULT, buys with a key, and takes
# the queue with the lock.
holder() {
    LOCK_TTL_MS=4000 STOCK_FAULT=$1 start_worker
    fcgi_buy "$2" "comb-$$-$2-holder" >"$TMP/holder" 2>&1 &
    HOLDER=$!
    check "our worker took the lock and stopped at $1" wait_stopped
    local lock t mine=0
    lock=$(rcli GET "lock:product:$2")
    for t in $(rcli --scan --pattern 'taken:*'); do
        [[ $(rcli GET "$t") == "$lock" ]] && mine=$((mine + 1))
    done
    same "it took every queued purchase with the lock (taken marks with its token)" \
        "$mine/$(rcli LLEN "queue:product:$2")" "$WAITERS/0"
}

# waiters_answered ID ORDERS: every queued buyer answered 200 with an
# order of its own (a keyed one, the order its key recorded), and the
# product has ORDERS orders in all: none bought twice.
waiters_answered() {
    local p=$1 b bad=0 order orders=()
    for ((b = 0; b < WAITERS; b++)); do
        wait_for_file_line "$TMP/q.$b" || bad=$((bad + 1))
        order=$(head -n 1 "$TMP/q.$b" | jq -r '.order_id // empty' 2>/dev/null)
        orders+=("$order")
        [[ $(tail -n 1 "$TMP/q.$b") == 200 && -n $order ]] || bad=$((bad + 1))
        ((b % 2)) && continue
        [[ $order == $(sql "SELECT order_id FROM idempotency_keys WHERE key = 'comb-$$-$p-$b'") ]] ||
            bad=$((bad + 1))
    done
    same "every buyer it took answered 200 with an order" "$bad" 0
    same "each with an order of its own, of this product" \
        "$(printf '%s\n' "${orders[@]}" | sort -u | grep -c .)/$(sql "SELECT COUNT(*) FROM orders
            WHERE product_id = $p AND id IN ($(printf '%s,' "${orders[@]}" | sed 's/,$//'))")" \
        "$WAITERS/$WAITERS"
    same "$2 orders in all: nothing bought twice" \
        "$(sql "SELECT COUNT(*) FROM orders WHERE product_id = $p")" "$2"
}

# wait_for_file_line FILE: the curl writing FILE has finished (30 s at most).
wait_for_file_line() {
    for ((i = 0; i < 600; i++)); do
        [[ $(tail -n 1 "$1" 2>/dev/null) =~ ^[0-9]{3}$ ]] && return 0
        sleep 0.05
    done
    return 1
}

kill_holder() {
    kill -KILL "$WORKER"
    wait "$WORKER" 2>/dev/null
    WORKER=
    wait "$HOLDER" 2>/dev/null
}

# 1. Killed after its COMMIT, before its release delivered the answers:
#    the buyers find their orders in PostgreSQL, under their tokens.
P=$(new_product "Combiner killed after COMMIT" 100)
queue_up "$P"
holder committed "$P"
same "its batch committed: its own purchase and the 4 it took" "$(sold "$P")" 5
kill_holder
thaw
waiters_answered "$P" 5
same "they learned it from their tokens: their orders are the batch's" \
    "$(sql "SELECT COUNT(*) FROM purchase_tokens WHERE product_id = $P AND status = 200
            AND order_id IN ($(for b in $(seq 0 $((WAITERS - 1))); do
                head -n 1 "$TMP/q.$b" | jq -r '.order_id // 0'; done | paste -sd,))")" "$WAITERS"
check_orders() {
    same "stock + orders = $2" "$(($(stock "$1") + $(sold "$1")))" "$2"
    check "no lock key is left" wait_unlocked
    same "no queue or taken key is left" \
        "$(rcli --scan --pattern '*' | grep -cE "^(queue:product:$1|taken:)")" 0
}
check_orders "$P" 100

# 2. Killed before its COMMIT: nothing of its batch is made; the buyers
#    close their tokens, find nothing, and buy on their own.
P=$(new_product "Combiner killed before COMMIT" 100)
queue_up "$P"
holder before_commit "$P"
kill_holder
thaw
waiters_answered "$P" "$WAITERS"
same "the dead holder's own purchase was not made" \
    "$(sql "SELECT COUNT(*) FROM idempotency_keys WHERE key = 'comb-$$-$P-holder'")" 0
same "the batch's tokens were closed, never made" \
    "$(sql "SELECT COUNT(*) FROM purchase_tokens WHERE product_id = $P AND status = 0")" "$WAITERS"
check_orders "$P" 100

# 3. Stalled (SIGSTOP) past its TTL, then woken: the buyers are served by
#    the next holder, and its late batch is refused by the fence.
P=$(new_product "Combiner stalled" 100)
buy "/buy/$P" '{"amount": 1}' # the fence counter exists: the refusal is the fence's
queue_up "$P"
holder locked "$P"
thaw
waiters_answered "$P" $((1 + WAITERS))
kill -CONT "$WORKER"
wait "$HOLDER"
check "woken, the stalled holder's purchase is refused: lock_lost" \
    grep -q '"code":"lock_lost"' "$TMP/holder"
same "and its own purchase was not made" \
    "$(sql "SELECT COUNT(*) FROM idempotency_keys WHERE key = 'comb-$$-$P-holder' AND status = 200")" 0
same "still the first purchase and one per buyer" \
    "$(sql "SELECT COUNT(*) FROM orders WHERE product_id = $P")" $((1 + WAITERS))
stop_worker
check_orders "$P" 100
finish
