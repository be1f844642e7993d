#!/usr/bin/env bash
# api.sh -- every row of the API table, through nginx, against the real stack.
# Runs first on a freshly seeded database (product 1 has 5 units).
. "$(dirname "$0")/lib.sh"

JSON=(-H 'Content-Type: application/json')

# --- The seed scenario: the demo's own curl ---------------------------------
same "seed: product 1 starts with 5 units" "$(stock 1)" 5
STATUS=$(curl -s -o "$TMP/body" -w '%{http_code}' -X POST "$BASE_URL/buy/1" \
    -H "Content-Type: application/json" -d '{"amount": 1}')
BODY=$(cat "$TMP/body")
expect "seed: the demo's curl buys one unit" 200
check "seed: answer is {order_id, product_id, amount, remaining}" jq -e '
    (keys == ["amount", "order_id", "product_id", "remaining"]) and .product_id == 1
    and .amount == 1 and .remaining == 4 and (.order_id | type == "number")' <<<"$BODY"
same "seed: 4 units remain in PostgreSQL" "$(stock 1)" 4
same "seed: the order is recorded" "$(sql "SELECT product_id || ':' || amount FROM orders")" "1:1"

# --- 200: a purchase, and the stock it leaves -----------------------------------
P=$(new_product "Widget" 10)
buy "/buy/$P" '{"amount": 3}'
expect "buy: 3 of 10 answers 200" 200
same "buy: Content-Type is application/json" "$(header Content-Type)" application/json
check "buy: remaining is 7" jq -e '.remaining == 7 and .amount == 3' <<<"$BODY"
same "buy: stock is 7" "$(stock "$P")" 7
same "buy: orders sum to 3" "$(sold "$P")" 3

# --- Bad input: a clear error, and nothing changes ----------------------------
before=$(snapshot)

for id in abc 0 99999999999 -1 01 2147483648 1.5; do
    buy "/buy/$id" '{"amount": 1}'
    expect "400 invalid_product_id: /buy/$id" 400 invalid_product_id
done

for body in 'not json' '[1]' '' '{"amount": 1' '"{\"amount\":1}"' '{"amount": 1}x' "{'amount': 1}" \
    '{"amount": NaN}'; do
    buy "/buy/$P" "$body"
    expect "400 invalid_json: body '$body'" 400 invalid_json
done

for body in '{"amount": 1.5}' '{"amount": "1"}' '{"amount": true}' '{"amount": 1e3}' \
    '{"amount": 0}' '{"amount": -1}' '{"amount": -0}' '{"amount": 2147483648}' \
    '{"amount": null}' '{}' '{"qty": 1}' '{"amount": 1, "amount": 2}'; do
    buy "/buy/$P" "$body"
    expect "400 invalid_amount: body '$body'" 400 invalid_amount
done

http POST "/buy/$P" -H 'Content-Type: text/plain' --data-binary '{"amount": 1}'
expect "415 unsupported_media_type: text/plain" 415 unsupported_media_type
http POST "/buy/$P" --data-binary '{"amount": 1}'
expect "415 unsupported_media_type: curl's default form type" 415 unsupported_media_type
http POST "/buy/$P" -H 'Content-Type:' --data-binary '{"amount": 1}'
expect "415 unsupported_media_type: no Content-Type" 415 unsupported_media_type
http POST "/buy/$P" -H 'Content-Type: application/json; charset=utf-8' --data-binary '{"amount": 1}'
expect "200: application/json with a charset parameter" 200
before=$(snapshot) # that one bought a unit, on purpose

PAD_FRAME='{"amount": 1, "pad": ""}'
printf '{"amount": 1, "pad": "%s"}' "$(head -c 1100 /dev/zero | tr '\0' x)" >"$TMP/big.json"
http POST "/buy/$P" "${JSON[@]}" --data-binary @"$TMP/big.json"
expect "413 payload_too_large: a 1.1 KiB body" 413 payload_too_large
pad=$((1024 - ${#PAD_FRAME}))
printf '{"amount": 1, "pad": "%s"}' "$(head -c "$pad" /dev/zero | tr '\0' x)" >"$TMP/edge.json"
same "edge: the body is exactly 1024 bytes" "$(wc -c <"$TMP/edge.json")" 1024
http POST "/buy/$P" "${JSON[@]}" --data-binary @"$TMP/edge.json"
expect "200: a body of exactly 1024 bytes is accepted" 200
before=$(snapshot)

for method in GET PUT DELETE PATCH; do
    http "$method" "/buy/$P"
    expect "405 method_not_allowed: $method /buy/{id}" 405 method_not_allowed
    same "405: $method /buy/{id} answers Allow: POST" "$(header Allow)" POST
done
http POST "/products/$P" "${JSON[@]}" -d '{"amount": 1}'
expect "405 method_not_allowed: POST /products/{id}" 405 method_not_allowed
same "405: /products/{id} answers Allow: GET, HEAD" "$(header Allow)" "GET, HEAD"

buy /buy/2147483647 '{"amount": 1}'
expect "404 product_not_found: buying a product that does not exist" 404 product_not_found

buy "/buy/$P" '{"amount": 1000}'
expect "409 insufficient_stock: more than the stock" 409 insufficient_stock
check "409: reports available and requested" jq -e ".available == $(stock "$P") and .requested == 1000" \
    <<<"$BODY"

for path in / /buy /buy/ /buy/1/ /buy/1/x /nope /products /healthz/x; do
    http POST "$path" "${JSON[@]}" -d '{"amount": 1}'
    if [[ $path == /buy/ ]]; then
        expect "400 invalid_product_id: POST $path" 400 invalid_product_id
    else
        expect "404 not_found: POST $path" 404 not_found
    fi
done

# Errors nginx answers itself are problem+json too.
http POST "/buy/$P%00" "${JSON[@]}" -d '{"amount": 1}'
expect "nginx 400 bad_request: a NUL byte in the path" 400 bad_request
http POST "/buy/$P?$(head -c 9000 /dev/zero | tr '\0' x)" "${JSON[@]}" -d '{"amount": 1}'
expect "nginx 414 uri_too_long: a 9 KB request line" 414 uri_too_long
http POST "/buy/$P" "${JSON[@]}" -H "X-Big: $(head -c 9000 /dev/zero | tr '\0' x)" -d '{"amount": 1}'
expect "nginx 400 headers_too_large: a 9 KB header" 400 headers_too_large
http TRACE "/buy/$P"
expect "nginx 405 method_not_allowed: TRACE" 405 method_not_allowed
http GET /.errors/bad_request
expect "nginx 404 not_found: its error pages are not reachable from outside" 404 not_found

# nginx's copies of the responder's problems must not drift from the originals.
canonical() { jq -cS . <<<"$BODY"; }
http GET /.errors/not_found
from_nginx=$(canonical)
http GET /nope
same "nginx and the responder answer not_found with the same body" "$from_nginx" "$(canonical)"
http TRACE "/buy/$P"
from_nginx=$(canonical)
http GET "/buy/$P"
same "nginx and the responder answer method_not_allowed with the same body" "$from_nginx" \
    "$(canonical)"

same "bad input changed no stock and no order" "$(snapshot)" "$before"

# --- 429 lock_timeout: the product is locked by someone else -------------------
rcli SET "lock:product:$P" someone-else PX 30000 >/dev/null
buy "/buy/$P" '{"amount": 1}'
expect "429 lock_timeout: the lock stays busy past LOCK_WAIT_MS" 429 lock_timeout
same "429 lock_timeout: Retry-After is sent" "$(header Retry-After)" 1
same "429 lock_timeout: another owner's lock is left alone" "$(rcli GET "lock:product:$P")" someone-else
rcli DEL "lock:product:$P" >/dev/null
same "429 lock_timeout: nothing was bought" "$(snapshot)" "$before"

# The product's row, not its Redis lock, is what is busy: another
# transaction (another host's, whose COMMIT is late) holds it past
# lock_timeout. The product is busy, as above; nothing here is unavailable.
hold_row "$P"
buy "/buy/$P" '{"amount": 1}'
expect "429 lock_timeout: the product's row stays locked past lock_timeout" 429 lock_timeout
same "429 lock_timeout (row): Retry-After is sent" "$(header Retry-After)" 1
release_row
same "429 lock_timeout (row): nothing was bought" "$(snapshot)" "$before"
same "429 lock_timeout (row): the lock was released" "$(rcli EXISTS "lock:product:$P")" 0
# The same on a product's first grant, which starts a fence epoch with a
# statement of its own on the row before it buys.
F=$(new_product "Row held, first grant" 10)
hold_row "$F"
buy "/buy/$F" '{"amount": 1}'
expect "429 lock_timeout (row): also on a product's first grant (a new fence epoch)" 429 lock_timeout
release_row
same "429 lock_timeout (row, first grant): nothing was bought" "$(sold "$F")/$(stock "$F")" 0/10

# The row held by a COMMIT that waits for a synchronous standby that is gone
# (a primary cut off from it): every COMMIT here would wait the same, so
# this server cannot sell, and says so with 503, which an edge takes to
# another host; not 429, which says "busy, this host is fine".
S=$(new_product "Row held by a COMMIT that cannot end" 10)
buy "/buy/$S" '{"amount": 1}'
sql "ALTER SYSTEM SET synchronous_standby_names = 'gone'" && sql "SELECT pg_reload_conf()" >/dev/null
psql -X -q "$(conninfo application_name=stalled-commit)" \
    -c "UPDATE products SET amount = amount WHERE id = $S" >/dev/null 2>&1 &
stalled=$!
for ((i = 0; i < 200; i++)); do
    [[ -n $(sql "SELECT pid FROM pg_stat_activity WHERE application_name = 'stalled-commit'
                 AND wait_event = 'SyncRep'") ]] && break
    sleep 0.05
done
buy "/buy/$S" '{"amount": 1}'
expect "503 service_unavailable: the row is held by a COMMIT waiting for a lost standby" \
    503 service_unavailable
same "503 (stalled COMMIT): Retry-After is sent" "$(header Retry-After)" 1
sql "ALTER SYSTEM RESET synchronous_standby_names" && sql "SELECT pg_reload_conf()" >/dev/null
wait "$stalled"
same "503 (stalled COMMIT): nothing was bought" "$(sold "$S")/$(stock "$S")" 1/9
buy "/buy/$S" '{"amount": 1}'
expect "503 (stalled COMMIT): once the standby is back, purchases succeed" 200

# --- Acknowledged only after COMMIT --------------------------------------------
# A deferred constraint fails at COMMIT, after the UPDATE and the INSERT have
# returned their rows: the answer must be an error, and nothing sold.
C=$(new_product "Refused at commit" 10)
sql "CREATE FUNCTION refuse_order() RETURNS trigger LANGUAGE plpgsql
         AS 'BEGIN RAISE EXCEPTION ''refused at commit''; END';
     CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON orders
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.product_id = $C)
         EXECUTE FUNCTION refuse_order()"
buy "/buy/$C" '{"amount": 1}'
expect "a purchase whose COMMIT fails is not acknowledged (500)" 500 internal_error
same "a purchase whose COMMIT fails sells nothing" "$(stock "$C")/$(sold "$C")" "10/0"
sql "DROP TRIGGER refuse_at_commit ON orders; DROP FUNCTION refuse_order()"
buy "/buy/$C" '{"amount": 1}'
expect "the same purchase succeeds once the trigger is gone" 200

# --- GET /products/{id} and GET /healthz -------------------------------------
http GET "/products/$P"
expect "GET /products/{id} answers 200" 200
check "GET /products/{id}: {id, name, amount}" jq -e \
    ".id == $P and .name == \"Widget\" and .amount == $(stock "$P") and (keys | length == 3)" <<<"$BODY"
http GET /products/2147483647
expect "GET /products/{id}: 404 product_not_found" 404 product_not_found
http GET /products/abc
expect "GET /products/abc: 400 invalid_product_id" 400 invalid_product_id
http HEAD "/products/$P" -I
expect "HEAD /products/{id} answers 200" 200

http GET /healthz
expect "GET /healthz answers 200" 200
check "GET /healthz: both dependencies ok" jq -e \
    '. == {"status": "ok", "postgres": "ok", "redis": "ok"}' <<<"$BODY"

# --- Invariants after all of the above -----------------------------------------
same "no lock key is left in Redis" "$(lock_keys)" 0
same "invariant: initial stock = remaining + orders, for both products" \
    "$(sql "SELECT string_agg(p.id || ':' || (p.amount + (SELECT COALESCE(SUM(amount), 0)
        FROM orders o WHERE o.product_id = p.id)), ' ' ORDER BY p.id)
        FROM products p WHERE p.id IN (1, $P)")" "1:5 $P:10"

finish
