#!/usr/bin/env bash
# hostile.sh -- a table of hostile requests through nginx: each gets its
# expected status and problem code, and together they change no stock, no
# order and no idempotency key. Requests that do reach a purchase ask for
# far more than the stock, so their answer (409) proves they were parsed,
# and still buys nothing.
. "$(dirname "$0")/lib.sh"

P=$(new_product "Hostile" 10)
J=(-H 'Content-Type: application/json')
B=/buy/$P
before=$(snapshot)/$(sql "SELECT COUNT(*) FROM idempotency_keys")

# row STATUS CODE NAME METHOD PATH [curl arguments...]
row() {
    local status=$1 code=$2 name=$3
    shift 3
    http "$@" --max-time 20
    expect "$name" "$status" "$code"
}

# raw BYTES: a request sent as written (what curl cannot send: another HTTP
# version, say), answered into STATUS, BODY and $TMP/headers as by http.
raw() {
    STATUS=000
    BODY=
    exec 3<>"/dev/tcp/127.0.0.1/${BASE_URL##*:}" || return
    printf "$1" >&3
    timeout 5 cat <&3 >"$TMP/raw"
    exec 3<&-
    STATUS=$(head -n 1 "$TMP/raw" | cut -d' ' -f2)
    sed -n '1,/^\r$/p' "$TMP/raw" >"$TMP/headers"
    BODY=$(sed '1,/^\r$/d' "$TMP/raw")
}

# A body file with exact bytes (printf escapes), for what a shell argument cannot carry.
bytes() {
    printf "$2" >"$TMP/$1"
    echo "@$TMP/$1"
}

# --- Numbers at and past every bound ------------------------------------------
row 400 invalid_amount "amount 0" POST "$B" "${J[@]}" --data-binary '{"amount": 0}'
row 400 invalid_amount "amount -1" POST "$B" "${J[@]}" --data-binary '{"amount": -1}'
row 409 insufficient_stock "amount 2147483647 (the largest) is parsed, then refused by stock" \
    POST "$B" "${J[@]}" --data-binary '{"amount": 2147483647}'
row 400 invalid_amount "amount 2147483648" POST "$B" "${J[@]}" --data-binary '{"amount": 2147483648}'
row 400 invalid_amount "amount 2^63" POST "$B" "${J[@]}" --data-binary '{"amount": 9223372036854775808}'
row 400 invalid_amount "amount 2^64 + 1" POST "$B" "${J[@]}" \
    --data-binary '{"amount": 18446744073709551617}'
row 400 invalid_amount "amount 1e400" POST "$B" "${J[@]}" --data-binary '{"amount": 1e400}'
row 400 invalid_amount "amount -0" POST "$B" "${J[@]}" --data-binary '{"amount": -0}'
row 400 invalid_amount "amount 1.0" POST "$B" "${J[@]}" --data-binary '{"amount": 1.0}'
row 400 invalid_amount "amount 1e3" POST "$B" "${J[@]}" --data-binary '{"amount": 1e3}'
row 400 invalid_amount "amount 0.5" POST "$B" "${J[@]}" --data-binary '{"amount": 0.5}'
row 400 invalid_json "amount 01 (a leading zero is not JSON)" POST "$B" "${J[@]}" \
    --data-binary '{"amount": 01}'
row 400 invalid_json "amount +1" POST "$B" "${J[@]}" --data-binary '{"amount": +1}'
row 400 invalid_json "amount NaN" POST "$B" "${J[@]}" --data-binary '{"amount": NaN}'
row 400 invalid_json "amount Infinity" POST "$B" "${J[@]}" --data-binary '{"amount": Infinity}'
row 400 invalid_json "amount 0x10" POST "$B" "${J[@]}" --data-binary '{"amount": 0x10}'

# --- Wrong types, duplicates, shapes --------------------------------------------
row 400 invalid_amount "amount as a string" POST "$B" "${J[@]}" --data-binary '{"amount": "5"}'
row 400 invalid_amount "amount true" POST "$B" "${J[@]}" --data-binary '{"amount": true}'
row 400 invalid_amount "amount null" POST "$B" "${J[@]}" --data-binary '{"amount": null}'
row 400 invalid_amount "amount as an array" POST "$B" "${J[@]}" --data-binary '{"amount": [5]}'
row 400 invalid_amount "amount as an object" POST "$B" "${J[@]}" --data-binary '{"amount": {"n": 5}}'
row 400 invalid_amount "amount missing" POST "$B" "${J[@]}" --data-binary '{"qty": 5}'
row 400 invalid_amount "amount given twice" POST "$B" "${J[@]}" \
    --data-binary '{"amount": 100000, "amount": 1}'
row 400 invalid_amount "amount twice, once escaped (\\u0061mount)" POST "$B" "${J[@]}" \
    --data-binary '{"amount": 100000, "\u0061mount": 1}'
row 400 invalid_json "a JSON array" POST "$B" "${J[@]}" --data-binary '[{"amount": 1}]'
row 400 invalid_json "a JSON string" POST "$B" "${J[@]}" --data-binary '"amount"'
row 400 invalid_json "a JSON number" POST "$B" "${J[@]}" --data-binary '1'
row 400 invalid_json "JSON null" POST "$B" "${J[@]}" --data-binary 'null'
row 400 invalid_json "single quotes" POST "$B" "${J[@]}" --data-binary "{'amount': 1}"
row 400 invalid_json "a trailing comma" POST "$B" "${J[@]}" --data-binary '{"amount": 1,}'
row 400 invalid_json "trailing garbage" POST "$B" "${J[@]}" --data-binary '{"amount": 1} x'
row 400 invalid_json "two objects" POST "$B" "${J[@]}" --data-binary '{"amount": 1}{"amount": 1}'
row 400 invalid_json "a comment" POST "$B" "${J[@]}" --data-binary '{"amount": 1 /* one */}'
row 400 invalid_json "truncated" POST "$B" "${J[@]}" --data-binary '{"amount": 1'
deep=$(printf '{"a":%s1%s,"amount":1}' "$(printf '[%.0s' {1..40})" "$(printf ']%.0s' {1..40})")
row 400 invalid_json "nested 40 deep" POST "$B" "${J[@]}" --data-binary "$deep"
deep=$(printf '%s' "$(printf '[%.0s' {1..500})")
row 400 invalid_json "500 open brackets" POST "$B" "${J[@]}" --data-binary "$deep"

# --- Encoding ---------------------------------------------------------------------
row 400 invalid_json "invalid UTF-8 in a string" POST "$B" "${J[@]}" \
    --data-binary "$(bytes utf8 '{"amount": 1, "note": "\xff\xfe"}')"
row 400 invalid_json "an overlong UTF-8 sequence" POST "$B" "${J[@]}" \
    --data-binary "$(bytes overlong '{"amount": 1, "note": "\xc0\xaf"}')"
row 400 invalid_json "a lone surrogate escape" POST "$B" "${J[@]}" \
    --data-binary '{"amount": 1, "note": "\ud800"}'
row 400 invalid_json "a NUL byte after the object" POST "$B" "${J[@]}" \
    --data-binary "$(bytes nul1 '{"amount": 1}\0')"
row 400 invalid_json "a NUL byte inside a string" POST "$B" "${J[@]}" \
    --data-binary "$(bytes nul2 '{"amount": 1, "a": "x\0y"}')"
row 400 invalid_json "a byte order mark" POST "$B" "${J[@]}" \
    --data-binary "$(bytes bom '\xef\xbb\xbf{"amount": 1}')"
row 400 invalid_json "a raw control character in a string" POST "$B" "${J[@]}" \
    --data-binary "$(bytes ctl '{"amount": 1, "a": "x\ty"}')"

# --- Framing: empty, oversized, chunked -------------------------------------------
row 400 invalid_json "an empty body" POST "$B" "${J[@]}" --data-binary ''
row 400 invalid_json "no body at all" POST "$B" "${J[@]}"
row 400 invalid_json "only whitespace" POST "$B" "${J[@]}" --data-binary '   '
head -c 2048 /dev/zero | tr '\0' ' ' >"$TMP/big"
row 413 payload_too_large "a 2 KiB body" POST "$B" "${J[@]}" --data-binary @"$TMP/big"
head -c $((1024 * 1024)) /dev/zero | tr '\0' ' ' >"$TMP/huge"
row 413 payload_too_large "a 1 MiB body" POST "$B" "${J[@]}" --data-binary @"$TMP/huge"
row 409 insufficient_stock "a chunked body is read whole" POST "$B" "${J[@]}" \
    -H 'Transfer-Encoding: chunked' --data-binary '{"amount": 100000}'
row 413 payload_too_large "a chunked body over 1 KiB" POST "$B" "${J[@]}" \
    -H 'Transfer-Encoding: chunked' --data-binary @"$TMP/big"
# RFC 9110: Content-Length = 1*DIGIT; nginx reads 18 bytes for "0018".
row 409 insufficient_stock "Content-Length: 0018 (leading zeros)" POST "$B" "${J[@]}" \
    -H 'Content-Length: 0018' --data-binary '{"amount": 100000}'
row 409 insufficient_stock "Content-Length: 00000000000000000018" POST "$B" "${J[@]}" \
    -H 'Content-Length: 00000000000000000018' --data-binary '{"amount": 100000}'
for te in gzip identity "gzip, chunked"; do
    row 501 not_implemented "Transfer-Encoding: $te (from nginx)" POST "$B" "${J[@]}" \
        -H "Transfer-Encoding: $te" --data-binary '{"amount": 1}'
done
raw "GET /healthz HTTP/2.0\r\nHost: x\r\nConnection: close\r\n\r\n"
expect "HTTP/2.0 in the request line (from nginx)" 505 http_version_not_supported
raw "GET /healthz HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n"
expect "HTTP/9.9 in the request line (from nginx)" 505 http_version_not_supported

# --- Content-Encoding: the body must be plain JSON ---------------------------------
for ce in gzip br identity; do
    row 415 unsupported_media_type "Content-Encoding: $ce on a plain body buys nothing" POST "$B" \
        "${J[@]}" -H "Content-Encoding: $ce" --data-binary '{"amount": 1}'
done
row 415 unsupported_media_type "an empty Content-Encoding, then gzip" POST "$B" "${J[@]}" \
    -H 'Content-Encoding;' -H 'Content-Encoding: gzip' --data-binary '{"amount": 1}'
row 415 unsupported_media_type "two Content-Types (JSON, then text)" POST "$B" "${J[@]}" \
    -H 'Content-Type: text/plain' --data-binary '{"amount": 1}'
check "its detail says to send one" grep -q 'one Content-Type' <<<"$BODY"
printf '{"amount": 1}' | gzip >"$TMP/gz"
row 415 unsupported_media_type "a gzipped body" POST "$B" "${J[@]}" -H 'Content-Encoding: gzip' \
    --data-binary @"$TMP/gz"
check "its detail names Content-Encoding" grep -q 'Content-Encoding' <<<"$BODY"

# --- Content-Type ------------------------------------------------------------------
row 415 unsupported_media_type "no Content-Type" POST "$B" -H 'Content-Type:' \
    --data-binary '{"amount": 1}'
row 415 unsupported_media_type "text/plain" POST "$B" -H 'Content-Type: text/plain' \
    --data-binary '{"amount": 1}'
row 415 unsupported_media_type "a form" POST "$B" --data-binary '{"amount": 1}'
row 415 unsupported_media_type "application/jsonp" POST "$B" -H 'Content-Type: application/jsonp' \
    --data-binary '{"amount": 1}'
row 409 insufficient_stock "APPLICATION/JSON; charset=UTF-8 is JSON" POST "$B" \
    -H 'Content-Type: APPLICATION/JSON; charset=UTF-8' --data-binary '{"amount": 100000}'

# --- Odd ids and paths -------------------------------------------------------------
row 409 insufficient_stock "/buy//{id} (slashes merged by nginx)" POST "/buy//$P" "${J[@]}" \
    --data-binary '{"amount": 100000}'
row 409 insufficient_stock "/buy/{id}?x=1 (query ignored)" POST "$B?x=1" "${J[@]}" \
    --data-binary '{"amount": 100000}'
row 409 insufficient_stock "/buy/%xx-encoded id (decoded by nginx)" POST \
    "/buy/$(printf '%s' "$P" | od -An -tx1 | tr -d ' \n' | sed 's/../%&/g')" "${J[@]}" \
    --data-binary '{"amount": 100000}'
row 404 not_found "/buy/{id}/" POST "$B/" "${J[@]}" --data-binary '{"amount": 1}'
row 404 not_found "/buy/{id}/x" POST "$B/x" "${J[@]}" --data-binary '{"amount": 1}'
row 400 bad_request "/buy/{id}%00 (nginx refuses NUL)" POST "$B%00" "${J[@]}" \
    --data-binary '{"amount": 1}'
row 400 invalid_product_id "/buy/{id}%20" POST "$B%20" "${J[@]}" --data-binary '{"amount": 1}'
row 400 invalid_product_id "/buy/-{id}" POST "/buy/-$P" "${J[@]}" --data-binary '{"amount": 1}'
row 400 invalid_product_id "/buy/0{id}" POST "/buy/0$P" "${J[@]}" --data-binary '{"amount": 1}'
row 400 invalid_product_id "/buy/2147483648" POST /buy/2147483648 "${J[@]}" \
    --data-binary '{"amount": 1}'
row 400 invalid_product_id "/buy/{id}.0" POST "$B.0" "${J[@]}" --data-binary '{"amount": 1}'
row 409 insufficient_stock "/buy/%2F{id} (decoded, then merged, by nginx)" POST "/buy/%2F$P" \
    "${J[@]}" --data-binary '{"amount": 100000}'
row 404 not_found "/BUY/{id} (paths are case-sensitive)" POST "/BUY/$P" "${J[@]}" \
    --data-binary '{"amount": 1}'

# --- Every method --------------------------------------------------------------------
for m in GET HEAD PUT DELETE PATCH OPTIONS PROPFIND; do
    if [[ $m == HEAD ]]; then
        row 405 "" "$m /buy/{id}: 405" "$m" "$B" -I
    else
        row 405 method_not_allowed "$m /buy/{id}: 405" "$m" "$B" "${J[@]}" --data-binary '{"amount": 1}'
    fi
done
row 405 method_not_allowed "TRACE /buy/{id}: 405 (from nginx)" TRACE "$B"
same "TRACE /buy/{id}: Allow: POST" "$(header Allow)" POST
row 405 method_not_allowed "TRACE /products/{id}: 405 (from nginx)" TRACE "/products/$P"
same "TRACE /products/{id}: Allow: GET, HEAD" "$(header Allow)" "GET, HEAD"

# --- Headers -----------------------------------------------------------------------------
row 400 headers_too_large "a 16 KiB header" POST "$B" "${J[@]}" \
    -H "X-Long: $(head -c 16384 /dev/zero | tr '\0' x)" --data-binary '{"amount": 1}'
row 400 invalid_idempotency_key "a 300-byte Idempotency-Key" POST "$B" "${J[@]}" \
    -H "Idempotency-Key: $(head -c 300 /dev/zero | tr '\0' k)" --data-binary '{"amount": 1}'
row 400 invalid_idempotency_key "two Idempotency-Key headers (two intentions)" POST "$B" "${J[@]}" \
    -H "Idempotency-Key: first-$$" -H "Idempotency-Key: second-$$" --data-binary '{"amount": 1}'
check "its detail says to send one" grep -q 'one Idempotency-Key' <<<"$BODY"
row 414 uri_too_long "a 16 KiB URI" POST "$B?$(head -c 16384 /dev/zero | tr '\0' q)" "${J[@]}" \
    --data-binary '{"amount": 1}'

same "at least 40 hostile requests were tried" "$((T_N >= 40))" 1
same "none of them changed stock, orders or idempotency keys" \
    "$(snapshot)/$(sql "SELECT COUNT(*) FROM idempotency_keys")" "$before"
same "no lock key is left in Redis" "$(lock_keys)" 0
finish
