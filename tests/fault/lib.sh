# lib.sh -- what every fault test shares: a load of concurrent buyers, and
# the invariants checked after the fault (after Jepsen's bank and set
# checkers). Sourced after tests/integration/lib.sh.
#
# Every purchase carries its own Idempotency-Key, so each answer can be
# matched with what PostgreSQL recorded: the key's row holds the order a
# purchase made, if it made one.

# start_load PRODUCT BUYERS [curl arguments...]: BUYERS loops, each buying
# 1 unit at a time until stop_load; each answer is logged as
# "key http-status body" in $TMP/load.<n>. The key is also the request id,
# so the logs of every host it passed show the same purchase. The buyers
# run at nice 19, so that the load never keeps a CPU from the test's own
# psql and redis-cli calls: on 2 cores it did, and 15 calls meant 0.2 s
# apart took 40 s.
start_load() {
    local product=$1 n=$2
    shift 2
    LOAD_PIDS=()
    rm -f "$TMP/stop" "$TMP"/load.*
    for ((b = 0; b < n; b++)); do
        (
            renice -n 19 -p "$BASHPID" >/dev/null
            buyer "$product" "$b" "$@"
        ) >"$TMP/load.$b" &
        LOAD_PIDS+=($!)
    done
}

# wait_granted_after PRODUCT FENCE: waits (15 s at most) until the product's
# lock has been granted since the grant that drew FENCE, which proves that
# lock gone. Under load, "no lock key" may never be seen: the next grant
# can follow the expiry within a poll.
wait_granted_after() {
    local now i
    [[ $2 =~ ^[0-9]+$ ]] || return 1
    for ((i = 0; i < 300; i++)); do
        now=$(rcli GET "fence:product:$1")
        ((${now:-0} > $2)) && return 0
        sleep 0.05
    done
    return 1
}

# buyer PRODUCT N [curl arguments...]: buyer N's loop. One curl makes
# LOAD_BATCH purchases in a row (--next, on a kept-alive connection): a
# curl started per purchase costs the client about 25 ms of CPU, more than
# the purchase costs the service. The stop file is looked at between
# batches.
LOAD_BATCH=${LOAD_BATCH:-5}
((LOAD_BATCH >= 1)) || LOAD_BATCH=1
buyer() {
    local product=$1 b=$2 i=0 n keys args
    shift 2
    while [[ ! -e $TMP/stop ]]; do
        keys=() args=()
        for ((n = 0; n < LOAD_BATCH; n++)); do
            keys+=("fault-$$-$product-$b-$((i++))")
            ((n > 0)) && args+=(--next)
            args+=(-s --max-time 30 -w $'\n\036%{http_code}\n' -X POST "$BASE_URL/buy/$product"
                -H 'Content-Type: application/json' -H "Idempotency-Key: ${keys[n]}"
                -H "X-Request-Id: ${keys[n]}" -d '{"amount": 1}' "$@")
        done
        curl "${args[@]}" | answers_of "${keys[@]}"
    done
}

# answers_of KEY...: curl's output for those purchases, in order (each body
# followed by a line "\036<status>"), as "key status body" lines, the body's
# newlines removed. A purchase curl never reported is logged as status 000.
answers_of() {
    awk -v keys="$*" 'BEGIN { n = split(keys, key, " ") }
        /^\036/ { if (++k <= n) print key[k], substr($0, 2), body; body = ""; next }
        { body = body $0 }
        END { while (++k <= n) print key[k], "000", "" }'
}

stop_load() {
    touch "$TMP/stop"
    wait "${LOAD_PIDS[@]}"
    cat "$TMP"/load.* >"$TMP/answers"
}

# answered CODE: how many answers had this problem code (or HTTP status
# 200 / 000 for success / no answer).
answered() {
    case $1 in
    200 | 000) awk -v s="$1" '$2 == s' "$TMP/answers" | wc -l ;;
    *) grep -c "\"code\":\"$1\"" "$TMP/answers" ;;
    esac
}

# wait_unlocked: waits until no lock key is left (a killed holder's lock
# expires by its TTL, 5 s by default).
wait_unlocked() {
    for ((i = 0; i < 200; i++)); do
        [[ $(lock_keys) == 0 ]] && return 0
        sleep 0.05
    done
    return 1
}

# check_invariants PRODUCT INITIAL: the invariants, after the load stopped.
#  - stock never negative;
#  - initial stock = remaining + sum of orders;
#  - every 200 answered has its order (the one it named, for this product);
#  - every order was answered for: it belongs to an idempotency key, i.e. to
#    a request (no sale nobody asked for);
#  - no request that got a definite error bought anything (only an answer
#    of outcome_unknown, gateway_timeout or none at all may have);
#  - no sale without a lock: fences never go back along the order ids, and
#    orders that share a fence are one transaction's (a batch's, made under
#    one grant: include/combine.h);
#  - no lock key left.
# It also sets SALES_NOT_ANSWERED: purchases made whose client did not get
# their 200 (legitimate after a crash; not after a graceful stop).
check_invariants() {
    local product=$1 initial=$2 name
    jq -rR 'split(" ") as $f | ($f[2:] | join(" ") | try fromjson catch {}) as $j
            | [$f[0], $f[1], ($j.code // ""), ($j.order_id // "" | tostring)] | @tsv' \
        "$TMP/answers" >"$TMP/answers.tsv"
    psql -X -qAt -F ' ' -v ON_ERROR_STOP=1 "$(conninfo)" >"$TMP/invariants" <<SQL
CREATE TEMP TABLE answers (key text, status int, code text, order_id text);
\\copy answers FROM '$TMP/answers.tsv'
SELECT 'negative-stock', COUNT(*) FROM products WHERE id = $product AND amount < 0;
SELECT 'stock-plus-orders', amount + (SELECT COALESCE(SUM(amount), 0) FROM orders
       WHERE product_id = $product) FROM products WHERE id = $product;
SELECT 'acknowledged-but-missing', COUNT(*) FROM answers a WHERE a.status = 200 AND NOT EXISTS
       (SELECT 1 FROM orders o WHERE o.id = NULLIF(a.order_id, '')::bigint AND o.product_id = $product);
SELECT 'orders-without-request', COUNT(*) FROM orders o WHERE o.product_id = $product
       AND NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.order_id = o.id);
SELECT 'definite-errors-that-bought', COUNT(*) FROM answers a
       JOIN idempotency_keys k ON k.key = a.key AND k.status = 200
       WHERE a.status NOT IN (0, 200) AND a.code NOT IN ('outcome_unknown', 'gateway_timeout');
SELECT 'sales-not-answered-200', COUNT(*) FROM idempotency_keys k JOIN answers a ON a.key = k.key
       WHERE k.product_id = $product AND k.status = 200 AND a.status <> 200;
SELECT 'fences-out-of-order', COUNT(*) FROM (SELECT fence, lag(fence) OVER (ORDER BY id) AS prev
       FROM orders WHERE product_id = $product) t WHERE fence < prev OR fence <= 0;
SELECT 'fence-in-two-transactions', COUNT(*) FROM (SELECT fence FROM orders
       WHERE product_id = $product GROUP BY fence HAVING COUNT(DISTINCT xmin::text) > 1) t;
SQL
    value() { awk -v n="$1" '$1 == n {print $2}' "$TMP/invariants"; }
    SALES_NOT_ANSWERED=$(value sales-not-answered-200)
    same "invariant: stock never negative" "$(value negative-stock)" 0
    same "invariant: initial stock ($initial) = remaining + sum of orders" \
        "$(value stock-plus-orders)" "$initial"
    same "invariant: every 200 answered has its order" "$(value acknowledged-but-missing)" 0
    same "invariant: every order belongs to a request" "$(value orders-without-request)" 0
    same "invariant: no definite error bought anything" "$(value definite-errors-that-bought)" 0
    same "invariant: no sale without a lock (fences grow with orders)" \
        "$(value fences-out-of-order)" 0
    same "invariant: one transaction per fence (a batch's orders share one)" \
        "$(value fence-in-two-transactions)" 0
    check "invariant: no lock key left behind" wait_unlocked
    echo "#   answers: $(cut -f2,3 "$TMP/answers.tsv" | tr '\t' ' ' | sort | uniq -c |
        awk '{printf "%s %s%s, ", $1, $2, $3 == "" ? "" : " " $3}' | sed 's/, $//')"
}
