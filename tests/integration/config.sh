#!/usr/bin/env bash
# config.sh -- bad settings fail the start with a message naming them; the
# nginx and docker-compose configurations are valid; sources are formatted.
. "$(dirname "$0")/lib.sh"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STACK_DB=$(conninfo)
STACK_REDIS="unix://$RUN_DIR/sock/redis.sock"

# rejects NAME=value: the responder refuses to start, naming NAME.
rejects() {
    local name=${1%%=*} err rc
    err=$(env "$1" "$STOCK_BIN" 2>&1 </dev/null)
    rc=$?
    if [[ $rc == 2 && $err == *"$name"* ]]; then
        ok "responder refuses $1"
    else
        not_ok "responder refuses $1" "exit $rc: $err"
    fi
}

rejects LOCK_TTL_MS=abc
rejects LOCK_TTL_MS=1000
rejects LOCK_WAIT_MS=-5
rejects STATEMENT_TIMEOUT_MS=10s
rejects REDIS_TIMEOUT_MS=0
rejects REDIS_URL=localhost:6379
rejects DATABASE_URL="postgresql://host/db?nosuchoption=1"
rejects LOG_LEVEL=loud
rejects METRICS_FILE=relative/metrics

"$STOCK_BIN" --help >/dev/null 2>&1
same "--help exits 0" "$?" 0
same "--version names the program" "$("$STOCK_BIN" --version)" "stock-fcgi 0.1.0"
"$STOCK_BIN" --bogus >/dev/null 2>&1
same "an unknown option exits 2" "$?" 2
err=$("$STOCK_BIN" 2>&1 </dev/null)
same "outside FastCGI (stdin not a socket) it prints usage and exits 2" "$?/${err:0:17}" \
    "2/usage: stock-fcgi"

out=$(DATABASE_URL=$STACK_DB REDIS_URL=$STACK_REDIS "$STOCK_BIN" --check-config 2>&1)
same "--check-config against the stack exits 0" "$?" 0
check "--check-config without a socket on fd 0 says so ($out)" grep -q 'listening on nothing' <<<"$out"
# Under spawn-fcgi, as a pool runs it: the address it will take requests on,
# and a TCP socket without FCGI_WEB_SERVER_ADDRS is called open to anyone.
out=$(DATABASE_URL=$STACK_DB REDIS_URL=$STACK_REDIS spawn-fcgi -n -s "$TMP/check.sock" -- \
    "$STOCK_BIN" --check-config 2>&1)
check "--check-config reports the pool's unix socket ($out)" \
    grep -q "listening on unix:$TMP/check.sock\$" <<<"$out"
port=$("$ROOT/tests/stack/free-port.sh" 1)
out=$(DATABASE_URL=$STACK_DB REDIS_URL=$STACK_REDIS spawn-fcgi -n -a 127.0.0.1 -p "$port" -- \
    "$STOCK_BIN" --check-config 2>&1)
check "--check-config reports a TCP address, and that nothing restricts it ($out)" \
    grep -q "listening on tcp:127.0.0.1:$port (no FCGI_WEB_SERVER_ADDRS" <<<"$out"
out=$(FCGI_WEB_SERVER_ADDRS=127.0.0.1 DATABASE_URL=$STACK_DB REDIS_URL=$STACK_REDIS \
    spawn-fcgi -n -a 127.0.0.1 -p "$port" -- "$STOCK_BIN" --check-config 2>&1)
check "--check-config with FCGI_WEB_SERVER_ADDRS reports just the address ($out)" \
    grep -q "listening on tcp:127.0.0.1:$port\$" <<<"$out"
dead=$("$ROOT/tests/stack/free-port.sh" 1)
out=$(DATABASE_URL=$STACK_DB REDIS_URL=redis://127.0.0.1:$dead "$STOCK_BIN" --check-config 2>&1)
rc=$?
check "--check-config with Redis down exits 1 and says why ($out)" \
    test "$rc" = 1 -a -n "$(grep -i 'redis connect' <<<"$out")"

for bad in WORKERS=0 WORKERS=many PORT=70000 PGPORT=-1 REDIS_PORT=6380x RATE_LIMIT=fast PER_PRODUCT=0; do
    out=$(env "$bad" RUN_DIR="$TMP/never" "$STACK" status 2>&1)
    rc=$?
    check "stack refuses $bad, naming ${bad%%=*}" test "$rc" != 0 -a -n "$(grep "${bad%%=*}" <<<"$out")"
done

# The docker-compose rendering of the nginx configuration, checked by nginx.
"$ROOT/nginx/render.sh" "$TMP/nginx" LISTEN=3000 FCGI_SOCKET=/run/stock/app.sock \
    FCGI_OVERFLOW_SOCKET=/run/stock/overflow.sock PER_PRODUCT=2 \
    RATE_LIMIT=0 METRICS_ALLOW=127.0.0.1 \
    RUN_DIR="$TMP/nginx" ERROR_LOG=stderr ACCESS_LOG=/dev/stdout
out=$(nginx -t -q -e stderr -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" 2>&1)
same "nginx -t accepts the docker-compose rendering ($out)" "$?" 0
out=$("$ROOT/nginx/render.sh" "$TMP/partial" LISTEN=1 2>&1)
check "render.sh refuses to leave a placeholder unfilled" test $? != 0

# Without the test stack's PORT, which compose would substitute.
compose() {
    (cd "$ROOT" && env -u PORT -u WORKERS -u OVERFLOW_WORKERS -u PER_PRODUCT -u RATE_LIMIT -u METRICS_ALLOW -u LOCK_WAIT_MS docker-compose "$@")
}
out=$(compose config -q 2>&1)
same "docker-compose config accepts docker-compose.yml ($out)" "$?" 0
same "docker-compose publishes one port, nginx's, on loopback only" \
    "$(compose config | grep -E '^ +- .*:[0-9]+/tcp$' | tr -d ' ')" "-127.0.0.1:3000:3000/tcp"
# The optional Prometheus service, uncommented, is a valid compose file too.
sed -e 's/^  #\([^ ]\)/  \1/' -e 's/^  #  /    /' "$ROOT/docker-compose.yml" >"$TMP/compose.yml"
out=$(compose --project-directory "$ROOT" -f "$TMP/compose.yml" config 2>&1)
rc=$?
grep -q '^  prometheus:' <<<"$out" && grep -q '"nginx:3000"' <<<"$out"
found=$?
check "with the Prometheus service uncommented it is valid, and scrapes nginx ($rc)" \
    test "$rc$found" = 00

check "the release build has no fault points" eval "! nm '$ROOT/build/stock-fcgi' | grep fault_point >/dev/null"
check "the test build has them" eval "nm '$STOCK_BIN' | grep fault_point >/dev/null"

out=$(cd "$ROOT" && make -s format-check 2>&1)
rc=$?
same "C sources match .clang-format ($(head -c 300 <<<"$out"))" "$rc" 0

finish
