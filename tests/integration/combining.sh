#!/usr/bin/env bash
# combining.sh -- a flash sale with combining on (COMBINE_MAX > 0, the
# default): the buyers waiting for a hot product's lock are made in batches
# by its holder, and every answer is still the one the purchases would have
# got one by one, in order-id order (include/combine.h).
. "$(dirname "$0")/lib.sh"

# batched: purchase transactions that made more than one purchase, so far.
batched() {
    curl -s "$BASE_URL/metrics" |
        awk '/^stock_batch_size_bucket\{le="1"\}/ {one = $2} /^stock_batch_size_count/ {all = $2}
             END {print all - one}'
}

# key ID I: buyer I's Idempotency-Key, with the characters a PostgreSQL
# array literal must escape.
key() { printf 'comb-%s-%s-%s "a\\,{b} c"' "$$" "$1" "$2"; }

# rush ID N: N buyers at once; buyer i asks for 1 + i % 4 units, every other
# one with an Idempotency-Key, and 1 in 10 hangs up after 50 ms. Each answer
# is "i amount status body" in $TMP/answers.
rush() {
    local id=$1 n=$2 args=()
    for ((i = 0; i < n; i++)); do
        args+=(-o "$TMP/r.$i" -w "$i $((1 + i % 4)) %{http_code}\n" -X POST
            -H 'Content-Type: application/json' -d "{\"amount\": $((1 + i % 4))}")
        ((i % 2)) && args+=(-H "Idempotency-Key: $(key "$id" "$i")")
        ((i % 10 == 5)) && args+=(--max-time 0.05)
        args+=("$BASE_URL/buy/$id")
        ((i < n - 1)) && args+=(--next)
    done
    curl -s --parallel --parallel-immediate --parallel-max "$n" "${args[@]}" 2>/dev/null |
        while read -r i amount status; do
            printf '%s %s %s %s\n' "$i" "$amount" "$status" "$(tr -d '\n' 2>/dev/null <"$TMP/r.$i")"
        done >"$TMP/answers"
}

# replay ID INITIAL: replays the product's orders by id from INITIAL and
# checks every answer against it; prints the problems, one a line.
replay() {
    sql "SELECT id, amount FROM orders WHERE product_id = $1 ORDER BY id" >"$TMP/orders"
    jq -nr --arg initial "$2" --rawfile orders "$TMP/orders" --rawfile answers "$TMP/answers" '
        ($orders | split("\n") | map(select(length > 0) | split("|") | map(tonumber))) as $o
        | (reduce $o[] as $r ({stock: ($initial | tonumber), after: {}, amount: {},
                               seen: [($initial | tonumber)]};
              .stock -= $r[1] | .after[$r[0] | tostring] = .stock
              | .amount[$r[0] | tostring] = $r[1] | .seen += [.stock])) as $replay
        | $answers | split("\n")[] | select(length > 0) | split(" ") as $f
        | ($f[3:] | join(" ") | try fromjson catch null) as $b
        | ($f[1] | tonumber) as $amount
        | if $f[2] == "200" then
            if $b == null or $replay.after[$b.order_id | tostring] == null then "200 without its order: \($f)"
            elif $replay.after[$b.order_id | tostring] != $b.remaining then "remaining \($b.remaining), replay says \($replay.after[$b.order_id | tostring]): \($f)"
            elif $b.amount != $amount or $replay.amount[$b.order_id | tostring] != $amount then
                "amount \($b.amount), order of \($replay.amount[$b.order_id | tostring]), for \($amount): \($f)"
            else empty end
          elif $f[2] == "409" then
            if $b.code != "insufficient_stock" then "409 \($b.code): \($f)"
            elif $b.available >= $amount then "409 with \($b.available) available for \($amount): \($f)"
            elif ($replay.seen | index($b.available)) == null then "409 available \($b.available), a stock the replay never had: \($f)"
            else empty end
          elif $f[2] == "000" and ($f[0] | tonumber) % 10 == 5 then empty
          else "answer \($f[2]): \($f)" end'
}

# hold_keys PRODUCT KEY...: an open transaction (psql) claims the keys, as
# their first requests would, and holds them until release_keys: keys in
# flight elsewhere.
hold_keys() {
    local product=$1 k inserts=
    shift
    for k in "$@"; do
        inserts+="INSERT INTO idempotency_keys (key, product_id, amount, status)
                  VALUES (\$k\$$k\$k\$, $product, 1, 0);"$'\n'
    done
    hold key-holder "$inserts"
}
release_keys() { release key-holder; }

P=$(new_product "Combined flash sale" 150)
rush "$P" 400
same "400 buyers, amounts 1-4, stock 150: every answer agrees with the replay of the orders" \
    "$(replay "$P" 150 | head -n 5)" ""
answered=$(awk '$3 == 200 {n += $2} END {print n + 0}' "$TMP/answers")
hung_up=$(awk '$3 == "000"' "$TMP/answers" | wc -l)
hung_up_units=$(awk '$3 == "000" {n += $2} END {print n + 0}' "$TMP/answers")
check "some buyers hung up mid-sale ($hung_up), and the others were answered" test "$hung_up" -gt 0
# Nothing bought twice: what was sold beyond the 200s is at most what the
# buyers who hung up asked for, and no two 200s name one order.
check "sold $(sold "$P"), answered 200 for $answered, hung up on $hung_up_units" \
    test "$answered" -le "$(sold "$P")" -a "$(($(sold "$P") - answered))" -le "$hung_up_units"
same "no two 200s name the same order" \
    "$(awk '$3 == 200' "$TMP/answers" | cut -d' ' -f4- | jq -r .order_id | sort | uniq -d | wc -l)" 0
same "stock + orders = 150" "$(($(stock "$P") + $(sold "$P")))" 150
check "sold out: what is left is less than 4 units ($(stock "$P"))" test "$(stock "$P")" -lt 4
same "every keyed 200 has its key's order" \
    "$(sql "SELECT COUNT(*) FROM idempotency_keys k JOIN orders o ON o.id = k.order_id
            WHERE k.key LIKE 'comb-$$-$P-%' AND k.status = 200 AND o.amount = k.amount")" \
    "$(sql "SELECT COUNT(*) FROM idempotency_keys WHERE key LIKE 'comb-$$-$P-%' AND status = 200")"
same "no keyed purchase was left claimed but unanswered (status 0)" \
    "$(sql "SELECT COUNT(*) FROM idempotency_keys WHERE key LIKE 'comb-$$-$P-%' AND status = 0")" 0
check "purchases were combined ($(batched) transactions made more than one)" \
    test "$(batched)" -gt 0
# A transaction's orders share its grant's fence; all but the holder's own
# were made for queued buyers, and carry their tokens.
same "every combined purchase has its token, with its order" \
    "$(sql "SELECT COUNT(*) FILTER (WHERE n > 1) > 0 AND COUNT(*) FILTER (WHERE tokens < n - 1) = 0
            FROM (SELECT COUNT(*) AS n, COUNT(t.token) AS tokens FROM orders o
                  LEFT JOIN purchase_tokens t ON t.order_id = o.id AND t.status = 200
                  WHERE o.product_id = $P GROUP BY o.fence) x")" t
sleep 0.5
same "no lock, queue, reply, queued, taken or handoff key is left in Redis" \
    "$(rcli --scan --pattern '*' | grep -cE '^(lock|queue|reply|queued|taken|handoff):')" 0

# Replays of combined keyed purchases answer what the batch answered.
combined=" $(sql "SELECT order_id FROM purchase_tokens WHERE product_id = $P AND status = 200" | tr '\n' ' ') "
while read -r i amount _ body; do
    [[ $combined == *" $(jq -r .order_id <<<"$body") "* ]] && break
done < <(awk '$3 == 200 && $1 % 2 == 1' "$TMP/answers")
buy "/buy/$P" "{\"amount\": $amount}" -H "Idempotency-Key: $(key "$P" "$i")"
same "a combined keyed purchase, sent again, is replayed as first answered" \
    "$(jq -c . <<<"$BODY")" "$(jq -c . <<<"$body")"

# The same key twice in one batch: two buyers with one key queue behind a
# holder (a fake one, here); whoever takes the lock takes the other with
# it, and the key is claimed once: one order, answered to both, the second
# as a replay.
P=$(new_product "One key, twice" 10)
before=$(batched)
rcli SET "lock:product:$P" fake PX 60000 >/dev/null
for b in 1 2; do
    curl -s -D "$TMP/twice-h.$b" -o "$TMP/twice.$b" -X POST "$BASE_URL/buy/$P" \
        -H 'Content-Type: application/json' -H "Idempotency-Key: twice-$$" -d '{"amount": 2}' &
done
for ((i = 0; i < 200; i++)); do
    [[ $(rcli LLEN "queue:product:$P") == 2 ]] && break
    sleep 0.05
done
same "both buyers queued" "$(rcli LLEN "queue:product:$P")" 2
rcli DEL "lock:product:$P" >/dev/null
wait
same "one order for the key, of 2 units" "$(sql "SELECT COUNT(*) || ' ' || SUM(amount) FROM orders WHERE product_id = $P")" "1 2"
same "both answered 200 with that order" \
    "$(jq -r '.order_id' "$TMP/twice.1" "$TMP/twice.2" | sort -u | tr '\n' ' ')" \
    "$(sql "SELECT order_id FROM idempotency_keys WHERE key = 'twice-$$'") "
same "one of them as a replay (Idempotent-Replayed)" \
    "$(cat "$TMP/twice-h.1" "$TMP/twice-h.2" | grep -ci '^idempotent-replayed: true')" 1
check "in one transaction ($before, then $(batched) combined)" test "$(batched)" -gt "$before"

# A batch that meets a key still held by its first request elsewhere (an
# open transaction here): the batch claims its keys one by one, leaves that
# one out and is made without it, in one transaction; the keyed buyer is
# answered request_in_progress, having bought nothing.
P=$(new_product "A key in flight elsewhere" 10)
hold_keys "$P" "inflight-$$"
log_from=$(($(wc -l <"$RUN_DIR/log/app.log") + 1))
rcli SET "lock:product:$P" fake PX 60000 >/dev/null
buyers=()
for b in 1 2 3; do
    key=()
    ((b == 2)) && key=(-H "Idempotency-Key: inflight-$$")
    curl -s --max-time 20 -o "$TMP/inflight.$b" -w '%{http_code}' -X POST "$BASE_URL/buy/$P" \
        -H 'Content-Type: application/json' "${key[@]}" -d '{"amount": 1}' >"$TMP/inflight-s.$b" &
    buyers+=($!)
done
for ((i = 0; i < 200; i++)); do
    [[ $(rcli LLEN "queue:product:$P") == 3 ]] && break
    sleep 0.05
done
rcli DEL "lock:product:$P" >/dev/null
wait "${buyers[@]}"
same "the unkeyed buyers bought, the one whose key is in flight did not" \
    "$(cat "$TMP/inflight-s.1") $(cat "$TMP/inflight-s.2") $(cat "$TMP/inflight-s.3")/$(jq -r .code "$TMP/inflight.2")" \
    "200 409 200/request_in_progress"
same "two orders, in one transaction (one fence)" \
    "$(sql "SELECT COUNT(*) || ' ' || COUNT(DISTINCT fence) FROM orders WHERE product_id = $P")" "2 1"
check "the batch claimed its keys one by one" \
    grep -q "product $P: a key of the batch is in flight elsewhere; claiming its keys one by one" \
    <(tail -n "+$log_from" "$RUN_DIR/log/app.log")
same "and did not fail for the key in flight" \
    "$(tail -n "+$log_from" "$RUN_DIR/log/app.log" | grep -c "product $P: .*made the batch fail")" 0
release_keys

# The same in a flash sale: 4 of 400 buyers retry a key whose first request
# is in flight elsewhere (held by an open transaction here, as by a host
# whose link to PostgreSQL stalled). Each of the 4 is answered
# request_in_progress and buys nothing; no batch fails for them, and no
# other buyer is refused for them: no 429, and every other answer agrees
# with the replay of the orders.
P=$(new_product "Poisoned flash sale" 150)
poisoned=(1 101 201 301)
held=()
for i in "${poisoned[@]}"; do held+=("$(key "$P" "$i")"); done
hold_keys "$P" "${held[@]}"
log_from=$(($(wc -l <"$RUN_DIR/log/app.log") + 1))
rush "$P" 400
release_keys
pattern="^($(IFS='|' && echo "${poisoned[*]}")) "
same "the 4 buyers whose key was in flight: 409 request_in_progress" \
    "$(grep -E "$pattern" "$TMP/answers" | cut -d' ' -f4- | jq -r '"\(.status) \(.code)"' | sort | uniq -c |
        awk '{print $1 "x" $2, $3}')" "4x409 request_in_progress"
grep -vE "$pattern" "$TMP/answers" >"$TMP/others" && mv "$TMP/others" "$TMP/answers"
same "the 396 others: every answer agrees with the replay (no 429)" "$(replay "$P" 150 | head -n 5)" ""
check "batches met the keys in flight and claimed one by one" \
    grep -q "product $P: a key of the batch is in flight elsewhere" \
    <(tail -n "+$log_from" "$RUN_DIR/log/app.log")
same "no batch failed for them" \
    "$(tail -n "+$log_from" "$RUN_DIR/log/app.log" | grep -c "product $P: .*made the batch fail")" 0
same "no keyed purchase was left claimed but unanswered (status 0)" \
    "$(sql "SELECT COUNT(*) FROM idempotency_keys WHERE key LIKE 'comb-$$-$P-%' AND status = 0")" 0

finish
