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
# Each number's message names its unit.
same "COMBINE_MAX=65: its message counts purchases" "$(COMBINE_MAX=65 "$STOCK_BIN" 2>&1 </dev/null)" \
    "stock-fcgi: COMBINE_MAX must be a whole number of purchases from 0 to 64"

help=$("$STOCK_BIN" --help 2>&1)
same "--help exits 0" "$?" 0
# Every responder setting of nginx/README.md's Configuration table, in --help.
missing=()
for name in $(awk -F'|' '$4 ~ /responder/ { print $2 }' "$ROOT/nginx/README.md" | grep -oE '`[A-Z_]+`' | tr -d '`'); do
    grep -qE "^  $name " <<<"$help" || missing+=("$name")
done
same "--help lists every responder setting nginx/README.md lists" "${missing[*]}" ""
same "--version names the program" "$("$STOCK_BIN" --version)" "stock-fcgi 0.1.0"
"$STOCK_BIN" --bogus >/dev/null 2>&1
same "an unknown option exits 2" "$?" 2
err=$("$STOCK_BIN" 2>&1 </dev/null)
same "outside FastCGI (stdin not a socket) it prints usage and exits 2" "$?/${err:0:17}" \
    "2/usage: stock-fcgi"

out=$(DATABASE_URL=$STACK_DB REDIS_URL=$STACK_REDIS "$STOCK_BIN" --check-config 2>&1)
same "--check-config against the stack exits 0" "$?" 0
same "--check-config in the tests' environment warns of nothing ($out)" "$(grep -c warning <<<"$out")" 0
# A misspelt setting would be ignored: a warning says so, and what was meant.
out=$(LOCK_TIMEOUT_MS=100 LOCK_WIAT_MS=100 DATABASE_URL=$STACK_DB REDIS_URL=$STACK_REDIS \
    "$STOCK_BIN" --check-config 2>&1)
rc=$?
same "--check-config with misspelt settings still exits 0" "$rc" 0
check "... and warns of LOCK_WIAT_MS, naming LOCK_WAIT_MS ($out)" grep -qx \
    'stock-fcgi: warning: LOCK_WIAT_MS is not a setting (ignored): did you mean LOCK_WAIT_MS?' <<<"$out"
check "... and of LOCK_TIMEOUT_MS, naming the millisecond settings" grep -q \
    '^stock-fcgi: warning: LOCK_TIMEOUT_MS is not a setting (ignored); the ones in milliseconds are LOCK_TTL_MS, LOCK_WAIT_MS' <<<"$out"
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
check "--check-config with Redis down exits 1 and says why, with the address ($out)" \
    test "$rc" = 1 -a -n "$(grep -F "redis connect: 127.0.0.1:$dead: Connection refused" <<<"$out")"

for bad in WORKERS=0 WORKERS=many PORT=70000 PGPORT=-1 REDIS_PORT=6380x RATE_LIMIT=fast PER_PRODUCT=0; do
    out=$(env "$bad" RUN_DIR="$TMP/never" "$STACK" status 2>&1)
    rc=$?
    check "stack refuses $bad, naming ${bad%%=*}, in its last line alone ($out)" \
        test "$rc" = 1 -a -n "$(tail -n 1 <<<"$out" | grep "^stack: ${bad%%=*} must be")"
done
out=$(SENTINEL_DOWN_AFTER_MS=5 RUN_DIR="$TMP/never" "$STACK" status 2>&1)
same "stack refuses SENTINEL_DOWN_AFTER_MS=5, naming its unit" "$out" \
    "stack: SENTINEL_DOWN_AFTER_MS must be a whole number of milliseconds from 100 to 600000 (got '5')"
# The stack's own settings misspelt: a warning, not a refusal.
out=$(WORKRES=2 PG_PORT=5999 RUN_DIR="$TMP/never" "$STACK" status 2>&1)
rc=$?
same "stack with WORKRES and PG_PORT set: still runs" "$rc" 0
check "... and warns of WORKRES, naming WORKERS ($out)" grep -qx \
    'stack: warning: WORKRES is not a setting (ignored): did you mean WORKERS?' <<<"$out"
check "... and of PG_PORT, naming PGPORT" grep -qx \
    'stack: warning: PG_PORT is not a setting (ignored): did you mean PGPORT?' <<<"$out"
# The names it compares with are those its header documents.
documented=$(sed -n '2,/^set -/p' "$STACK" | grep -oE '^#   [A-Z][A-Z_]+' | cut -c5- | sort | tr '\n' ' ')
compared=$(sed -n '/^STACK_SETTINGS="/,/"$/p' "$STACK" | tr -d '"' | sed 's/^STACK_SETTINGS=//' |
    tr -s ' \n' '\n\n' | grep . | sort | tr '\n' ' ')
# (PG_PASSWORD is documented in PG_ALLOW's lines.)
same "stack: the settings it warns of misspelling are those its header lists" "$compared" \
    "$(printf '%s\n' $documented PG_PASSWORD | sort | tr '\n' ' ')"
out=$(RUN_DIR="$TMP/never" "$STACK" status 2>&1)
same "stack in the tests' environment warns of nothing ($out)" "$(grep -c warning <<<"$out")" 0

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
    (cd "$ROOT" && env -u PORT -u WORKERS -u OVERFLOW_WORKERS -u PER_PRODUCT -u RATE_LIMIT -u METRICS_ALLOW -u LOCK_WAIT_MS \
        -u HA_PORT -u AUTOCTL_NODE_PASSWORD -u REPLICATOR_PASSWORD -u STOCK_PASSWORD docker-compose "$@")
}
out=$(compose config -q 2>&1)
same "docker-compose config accepts docker-compose.yml ($out)" "$?" 0
# (`config` renders every service, the ha profile's too.)
same "docker-compose publishes two ports, nginx's and nginx-ha's, on loopback only" \
    "$(compose config | grep -E '^ +- .*:[0-9]+/tcp$' | tr -d ' ' | tr '\n' ' ')" \
    "-127.0.0.1:3000:3000/tcp -127.0.0.1:3001:3000/tcp "
# The optional Prometheus service, uncommented, is a valid compose file too.
sed -e 's/^  #\([^ ]\)/  \1/' -e 's/^  #  /    /' "$ROOT/docker-compose.yml" >"$TMP/compose.yml"
out=$(compose --project-directory "$ROOT" -f "$TMP/compose.yml" config 2>&1)
rc=$?
grep -q '^  prometheus:' <<<"$out" && grep -q '"nginx:3000"' <<<"$out"
found=$?
check "with the Prometheus service uncommented it is valid, and scrapes nginx ($rc)" \
    test "$rc$found" = 00

# The ha profile (docker-compose.yml): valid, started by nothing but
# --profile ha, and with the settings of its topology, as docker-compose
# renders them. Nothing here runs it (no Docker engine on the test machines).
out=$(compose --profile ha config -q 2>&1)
same "docker-compose --profile ha config accepts the ha profile ($out)" "$?" 0
ha=$(compose --profile ha config 2>/dev/null)
# block SERVICE: that service in the rendered configuration, its scripts
# (which YAML renders as quoted strings, folded over lines that end in "\",
# with \" and \\ for " and \) joined and unquoted enough to be searched.
block() {
    awk -v s="  $1:" '$0 == s { p = 1; next } /^[^ ]|^  [^ ]/ { p = 0 } p' <<<"$ha" |
        sed -z -e 's/\\\n *\\ / /g' -e 's/\\\n *//g' -e 's/\\\(["\\]\)/\1/g'
}
# has SERVICE WHAT STRING...: the service's rendered configuration has every
# string.
has() {
    local service=$1 what=$2 b want missing=()
    shift 2
    b=$(block "$service")
    for want in "$@"; do [[ $b == *"$want"* ]] || missing+=("$want"); done
    if ((${#missing[@]} == 0)); then
        ok "ha: $service: $what"
    else
        not_ok "ha: $service: $what" "missing:" "${missing[@]}"
    fi
}
HA_SERVICES="monitor pg1 pg2 redis1 redis2 sentinel1 sentinel2 sentinel3 app-ha overflow-ha nginx-ha"
in_ha=$(for s in $(compose config --services); do
    [[ $(block "$s") == *$'\n    profiles:\n    - ha\n'* ]] && echo "$s"
done | sort | tr '\n' ' ')
same "profile ha has the ha services and no other (a plain up starts the demo's alone)" \
    "$in_ha" "$(printf '%s\n' $HA_SERVICES | sort | tr '\n' ' ')"
has monitor "pg_autoctl create monitor (scram-sha-256, TLS), then pg_autoctl run" \
    'target: pgautofailover' 'pg_autoctl create monitor --pgdata' '--pgport 5432 --hostname monitor' \
    '--auth scram-sha-256 --ssl-self-signed' "ALTER ROLE autoctl_node PASSWORD" 'exec pg_autoctl run'
for n in pg1 pg2; do
    has "$n" "pg_autoctl create postgres (scram-sha-256, TLS, the monitor, the database), then pg_autoctl run" \
        'target: pgautofailover' "NODE: $n" 'pg_autoctl create postgres --pgdata' \
        '--pgport 5432 --hostname "$$NODE"' '--name "$$NODE" --auth scram-sha-256 --ssl-self-signed' \
        '--dbname redisdistributedlock' \
        '--monitor "postgres://autoctl_node@monitor:5432/pg_auto_failover?sslmode=require"' \
        '*:*:*:pgautofailover_replicator:' 'ALTER ROLE pgautofailover_replicator PASSWORD' \
        'stock-api/sql/schema.sql' 'stock-api/sql/seed.sql' 'exec pg_autoctl run' \
        "- $n-data:/var/lib/postgresql:rw"
done
has redis2 "a replica of redis1" $'- --replicaof\n    - redis1\n'
for s in sentinel1 sentinel2 sentinel3; do
    has "$s" "a sentinel watching redis1 as stock, quorum 2" \
        'sentinel monitor stock redis1 6379 2' 'redis-server /data/sentinel.conf --sentinel'
done
for s in app-ha overflow-ha; do
    has "$s" "both PostgreSQL nodes (read-write), the three sentinels" \
        'DATABASE_URL: postgresql://stock:demo-stock@pg1:5432,pg2:5432/redisdistributedlock?target_session_attrs=read-write' \
        'REDIS_SENTINELS: sentinel1:26379,sentinel2:26379,sentinel3:26379' 'REDIS_MASTER_NAME: stock' \
        '- fcgi-socket-ha:/run/stock:rw'
done
has nginx-ha "the ha responders' sockets, on port 3001" '- fcgi-socket-ha:/run/stock:rw' \
    '- 127.0.0.1:3001:3000/tcp'

# The example unit for pg_autoctl (nginx/README.md, High availability), as systemd
# reads it: keys, values, the executable.
verify_unit nginx/pgautofailover.service "$ROOT/nginx/pgautofailover.service"

check "the release build has no fault points" eval "! nm '$ROOT/build/stock-fcgi' | grep fault_point >/dev/null"
check "the test build has them" eval "nm '$STOCK_BIN' | grep fault_point >/dev/null"

out=$(cd "$ROOT" && make -s format-check 2>&1)
rc=$?
same "C sources match .clang-format ($(head -c 300 <<<"$out"))" "$rc" 0

finish
