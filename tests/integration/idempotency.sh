#!/usr/bin/env bash
# idempotency.sh -- the Idempotency-Key header: a retry gets the first
# answer back and buys nothing; a key used for another purchase is refused;
# a retry while the first request still runs waits for it and replays it.
. "$(dirname "$0")/lib.sh"

key() { echo "test-$1-$$-$RANDOM"; }
P=$(new_product "Idempotent" 10)

K=$(key first)
buy "/buy/$P" '{"amount": 2}' -H "Idempotency-Key: $K"
expect "a first request with a key buys" 200
first=$BODY
same "a first request is not marked as replayed" "$(header Idempotent-Replayed)" ""
buy "/buy/$P" '{"amount": 2}' -H "Idempotency-Key: $K"
expect "the same request again answers 200" 200
same "with the original body, byte for byte" "$BODY" "$first"
same "marked Idempotent-Replayed: true" "$(header Idempotent-Replayed)" true
same "and buys nothing again" "$(sold "$P")/$(stock "$P")" "2/8"

buy "/buy/$P" '{"amount": 3}' -H "Idempotency-Key: $K"
expect "the key with another amount: 422 idempotency_key_reused" 422 idempotency_key_reused
Q=$(new_product "Other" 10)
buy "/buy/$Q" '{"amount": 2}' -H "Idempotency-Key: $K"
expect "the key with another product: 422 idempotency_key_reused" 422 idempotency_key_reused
same "a reused key buys nothing" "$(sold "$P")/$(sold "$Q")" "2/0"

# Refusals are answers too, and are replayed as first given, even once
# the stock has changed.
K=$(key short)
buy "/buy/$P" '{"amount": 100}' -H "Idempotency-Key: $K"
expect "a keyed request for too much: 409" 409 insufficient_stock
first=$BODY
sql "UPDATE products SET amount = 1000 WHERE id = $P" >/dev/null
buy "/buy/$P" '{"amount": 100}' -H "Idempotency-Key: $K"
same "its retry after a restock replays the 409, body and all" "$STATUS $BODY" "409 $first"
same "and is marked replayed" "$(header Idempotent-Replayed)" true
sql "UPDATE products SET amount = 8 WHERE id = $P" >/dev/null
K=$(key missing)
buy /buy/2147483645 '{"amount": 1}' -H "Idempotency-Key: $K"
expect "a keyed request for a missing product: 404" 404 product_not_found
buy /buy/2147483645 '{"amount": 1}' -H "Idempotency-Key: $K"
same "its retry replays the 404" "$STATUS $(header Idempotent-Replayed)" "404 true"

# Keys: 1 to 255 printable ASCII characters.
long=$(head -c 255 /dev/zero | tr '\0' k)
buy "/buy/$P" '{"amount": 1}' -H "Idempotency-Key: $long"
expect "a 255-character key is accepted" 200
before=$(snapshot)
buy "/buy/$P" '{"amount": 1}' -H "Idempotency-Key;" # curl's way to send an empty header
expect "an empty key is refused" 400 invalid_idempotency_key
for bad in "${long}k" $'tab\there' $'del\x7f' 'caf\xc3\xa9'; do
    bad=$(printf "$bad")
    buy "/buy/$P" '{"amount": 1}' -H "Idempotency-Key: $bad"
    expect "an invalid key ($(printf %q "${bad:0:12}"), ${#bad} bytes) is refused" 400 \
        invalid_idempotency_key
done
same "invalid keys buy nothing" "$(snapshot)" "$before"

# The retry arrives while the first request still runs (frozen holding the
# product's lock): the retry waits for the lock, finds the key committed,
# and replays the first answer.
K=$(key inflight)
STOCK_FAULT=locked LOCK_TTL_MS=30000 start_worker
fcgi_buy "$P" "$K" >"$TMP/first" &
first_pid=$!
check "in flight: the first request is frozen holding the lock" wait_stopped
sold_before=$(sold "$P")
evals=$(rcli INFO commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p')
curl -s -D "$TMP/retry.headers" -o "$TMP/retry.body" -X POST "$BASE_URL/buy/$P" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: $K" -d '{"amount": 1}' &
retry_pid=$!
# Once the retry has tried the lock, let the first one go.
for ((i = 0; i < 200; i++)); do
    (($(rcli INFO commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p') > evals)) && break
    sleep 0.05
done
kill -CONT "$WORKER"
wait "$first_pid"
wait "$retry_pid"
check "in flight: the first request answered 200" grep -q '^Status: 200' "$TMP/first"
check "in flight: the retry answered 200" grep -q '^HTTP/1.1 200' "$TMP/retry.headers"
check "in flight: marked as replayed" grep -qi '^Idempotent-Replayed: true' "$TMP/retry.headers"
same "in flight: with the first request's body" "$(cat "$TMP/retry.body")" "$(sed -n '$p' "$TMP/first")"
same "in flight: one unit sold for the key, not two" "$(sold "$P")" "$((sold_before + 1))"
stop_worker

# The retry is for another product while the first request is still
# running and holds the key uncommitted (frozen before its COMMIT): the
# retry cannot know the answer yet and says so; afterwards it gets 422.
K=$(key busy)
# PostgreSQL ends a transaction left idle for statement_timeout + 500 ms:
# this one must outlive the frozen seconds.
STOCK_FAULT=before_commit STATEMENT_TIMEOUT_MS=10000 LOCK_TTL_MS=60000 start_worker
fcgi_buy "$P" "$K" >"$TMP/first" &
first_pid=$!
check "busy: the first request is frozen before its COMMIT" wait_stopped
buy "/buy/$Q" '{"amount": 1}' -H "Idempotency-Key: $K"
expect "busy: a second request with the key answers 409 request_in_progress" 409 request_in_progress
same "busy: with Retry-After" "$(header Retry-After)" 1
kill -CONT "$WORKER"
wait "$first_pid"
check "busy: the first request then completes with 200" grep -q '^Status: 200' "$TMP/first"
buy "/buy/$Q" '{"amount": 1}' -H "Idempotency-Key: $K"
expect "busy: the second request, retried, gets 422" 422 idempotency_key_reused
same "busy: the other product sold nothing" "$(sold "$Q")" 0
stop_worker

# A purchase that times out waiting for its product's row (not for its key)
# is a lock_timeout, key or no key: the product was busy, not the key. Like
# every 429 it is not recorded, so its retry buys. (One sale first: the
# first grant of a product starts a fence epoch, a statement of its own,
# and api.sh covers that one.)
R=$(new_product "Row held" 10)
K=$(key rowheld)
buy "/buy/$R" '{"amount": 1}'
hold_row "$R"
buy "/buy/$R" '{"amount": 1}' -H "Idempotency-Key: $K"
expect "a keyed purchase whose row is held answers 429 lock_timeout" 429 lock_timeout
release_row
same "row held: nothing was bought, and the key was not recorded" \
    "$(sold "$R")/$(sql "SELECT COUNT(*) FROM idempotency_keys WHERE key = '$K'")" 1/0
buy "/buy/$R" '{"amount": 1}' -H "Idempotency-Key: $K"
expect "row held: once free, the retry with the key buys" 200

# Keys are kept 24 hours; sql/prune.sql removes older ones.
sql "INSERT INTO idempotency_keys (key, product_id, amount, status, created_at)
     VALUES ('old-key-$$', $P, 1, 404, now() - interval '25 hours'),
            ('new-key-$$', $P, 1, 404, now() - interval '23 hours')" >/dev/null
psql -X -q "$(conninfo)" -f "$(dirname "$0")/../../sql/prune.sql" >/dev/null
same "prune: a key older than 24 hours is removed, a younger one kept" \
    "$(sql "SELECT string_agg(key, ' ' ORDER BY key) FROM idempotency_keys WHERE key LIKE '%-key-$$'")" \
    "new-key-$$"

same "no lock key is left in Redis" "$(lock_keys)" 0
finish
