#!/usr/bin/env bash
# leaks.sh -- one worker (the ASan build, so LeakSanitizer checks it when it
# exits) serves 1 000 mixed requests: purchases, refusals, replays, bad
# input, reads, health checks. It must then exit 0 with no leak reported.
# LeakSanitizer reports a leak that happened once as surely as one that
# happened a thousand times: each kind runs 100 times here, which is about
# repetition (state that carries over between requests), not detection.
# LEAK_REQUESTS=10000 for a longer run.
. "$(dirname "$0")/lib.sh"

N=${LEAK_REQUESTS:-1000}
P=$(new_product "Leaks" 1000000)
export LSAN_OPTIONS=exitcode=23
start_worker

req() { # METHOD PATH BODY [NAME=VALUE...]
    local method=$1 path=$2 body=$3
    shift 3
    printf '%s' "$body" | "$FCGI_REQUEST" "$TMP/w.sock" REQUEST_METHOD="$method" DOCUMENT_URI="$path" \
        CONTENT_TYPE=application/json CONTENT_LENGTH=${#body} "$@" >/dev/null
}

failed=0
for ((i = 0; i < N; i++)); do
    case $((i % 10)) in
    0) req POST "/buy/$P" '{"amount": 1}' ;;
    1) req POST "/buy/$P" '{"amount": 1}' HTTP_IDEMPOTENCY_KEY="leak-$$-$((i % 100))" ;;
    2) req POST "/buy/$P" '{"amount": 99999999}' ;;
    3) req POST /buy/2147483640 '{"amount": 1}' ;;
    4) req POST "/buy/$P" '{"amount": 1, "amount": 2}' ;;
    5) req POST "/buy/$P" '{"amount": [1, {"x": "\ud83d\ude00"}]}' ;;
    6) req GET "/products/$P" '' ;;
    7) req GET /healthz '' ;;
    8) req PUT "/buy/$P" '{"amount": 1}' ;;
    9) req POST /nope 'not json' ;;
    esac || failed=$((failed + 1))
done
same "$N requests got a complete answer" "$failed" 0
stop_worker
same "the worker exits 0: LeakSanitizer found no leak" "$STOPPED" 0
check "and nothing was reported in its log" eval "! grep -q -E 'LeakSanitizer|AddressSanitizer|runtime error' $TMP/w.log"
finish
