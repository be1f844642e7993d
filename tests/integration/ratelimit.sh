#!/usr/bin/env bash
# ratelimit.sh -- per-address rate limiting in nginx: off by default in the
# stack; when set, requests beyond it get 429 problem+json with Retry-After,
# and one address's excess does not limit another's.
. "$(dirname "$0")/lib.sh"

codes=$(for ((i = 0; i < 30; i++)); do
    curl -s -o /dev/null -w '%{http_code}\n' "$BASE_URL/healthz"
done | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
same "the stack has no rate limit by default: 30 quick requests, no 429" "$codes" "30×200 "

# A second nginx, from the same templates and for the same pools, limited
# to 1 request a second per address (bursts of 1 more).
# It runs as the stack does (as root: as postgres, who owns the sockets),
# in a directory of its own, and goes with the suite however it ends.
as_stack_user() { if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi; }
port=$("$(dirname "$0")/../stack/free-port.sh" 1)
conf=$(mktemp -d /tmp/stock-rate.XXXXXX)
trap 'kill -QUIT "$(cat "$conf/nginx.pid" 2>/dev/null)" 2>/dev/null; rm -rf "$conf"; cleanup_suite' EXIT
"$(dirname "$0")/../../nginx/render.sh" "$conf" "LISTEN=127.0.0.1:$port" \
    "FCGI_SOCKET=$RUN_DIR/sock/app.sock" "FCGI_OVERFLOW_SOCKET=$RUN_DIR/sock/overflow.sock" \
    PER_PRODUCT=2 RATE_LIMIT=1 METRICS_ALLOW=127.0.0.1 \
    "RUN_DIR=$conf" "ERROR_LOG=$conf/error.log" "ACCESS_LOG=$conf/access.log"
((EUID == 0)) && chown -R postgres "$conf"
as_stack_user nginx -e "$conf/error.log" -p "$conf" -c "$conf/nginx.conf"
check "a rate-limited nginx starts" test $? = 0
for ((i = 0; i < 100; i++)); do
    curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
    sleep 0.05
done

BASE=$BASE_URL
BASE_URL=http://127.0.0.1:$port
for ((i = 0; i < 6; i++)); do
    http GET /healthz -H "X-Request-Id: rate-$i"
    echo "$STATUS" >>"$TMP/rate.codes"
    [[ $STATUS == 429 ]] && break
done
same "the first request is served" "$(head -n 1 "$TMP/rate.codes")" 200
expect "beyond the rate and its burst: 429 too_many_requests" 429 too_many_requests
same "with Retry-After" "$(header Retry-After)" 1
same "and its request id" "$(header X-Request-Id)" "rate-$((i < 6 ? i : 5))"
http GET /healthz --interface 127.0.0.2
same "another address is not limited by the first one's excess" "$STATUS" 200
BASE_URL=$BASE
finish
