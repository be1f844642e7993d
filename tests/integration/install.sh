#!/usr/bin/env bash
# install.sh -- make install: the binary, the nginx templates, the SQL,
# example settings and a systemd unit that systemd accepts, under PREFIX
# and DESTDIR; and nginx/README.md's database steps, as printed, against a
# PostgreSQL of the test's own: the role they make runs the responders and
# may do nothing more.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

P=$TMP/prefix
make -s -C "$ROOT" install PREFIX="$P" >"$TMP/install.log" 2>&1
check "make install PREFIX=... succeeds" test $? = 0
for f in bin/stock-fcgi share/stock-api/nginx/stock-api.conf.in share/stock-api/nginx/nginx.conf.in \
    share/stock-api/nginx/edge.conf.in share/stock-api/nginx/common.conf.in share/stock-api/nginx/problems.conf.in \
    share/stock-api/nginx/render.sh share/stock-api/nginx/setup-db.sh share/stock-api/sql/schema.sql \
    share/stock-api/sql/seed.sql share/stock-api/sql/prune.sql \
    share/stock-api/examples/stock-api.env share/stock-api/examples/app.env \
    share/stock-api/examples/overflow.env share/stock-api/README.md \
    share/stock-api/nginx/README.md share/stock-api/tests/README.md lib/systemd/system/stock-api@.service; do
    check "installs $f" test -s "$P/$f"
done
check "the installed binary runs" grep -q '^stock-fcgi ' <<<"$("$P/bin/stock-fcgi" --version)"
UNIT=$P/lib/systemd/system/stock-api@.service
same "the unit has every placeholder filled" "$(grep -c '@[A-Z]*@' "$UNIT")" 0
# A file (the unit, README.md) with its continued lines joined.
joined() { sed -e ':a' -e '/\\$/N; s/\\\n *//; ta' "$1"; }
check "the unit runs the installed binary" grep -q "^ExecStart=.* -- $P/bin/stock-fcgi$" \
    <<<"$(joined "$UNIT")"
# spawn-fcgi sets a socket's group only as root: the pool runs with nginx's.
check "the pool runs with nginx's group, which its socket gets" grep -qx 'Group=www-data' "$UNIT"
for key in Restart=on-failure NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes \
    PrivateTmp=yes CapabilityBoundingSet=; do
    check "the unit has $key" grep -qx "$key" "$UNIT"
done

# systemd's own check: unknown keys, bad values, missing executables.
verify_unit stock-api@app.service "$P/lib/systemd/system/stock-api@app.service"

# The installed templates render a configuration nginx accepts.
"$P/share/stock-api/nginx/render.sh" "$TMP/nginx" LISTEN=127.0.0.1:8080 \
    FCGI_SOCKET=/run/stock-api/app.sock FCGI_OVERFLOW_SOCKET=/run/stock-api/overflow.sock \
    PER_PRODUCT=2 RATE_LIMIT=20 METRICS_ALLOW=127.0.0.1 \
    RUN_DIR="$TMP/nginx" ERROR_LOG=stderr ACCESS_LOG="$TMP/nginx/access.log"
out=$(nginx -t -q -e stderr -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" 2>&1)
same "nginx -t accepts the installed templates' rendering ($out)" "$?" 0
# README's include, in Debian's own nginx.conf (its logs moved here, so that
# nginx -t writes nothing outside $TMP).
if [[ -r /etc/nginx/nginx.conf ]]; then
    sed -e "s|/var/log/nginx/|$TMP/nginx/|" -e '/sites-enabled/d' \
        -e "s|include /etc/nginx/conf.d/\*\.conf;|include $TMP/nginx/stock-api.conf;|" \
        /etc/nginx/nginx.conf >"$TMP/nginx/debian.conf"
    check "Debian's nginx.conf includes conf.d/*.conf, where README puts the include" \
        grep -qF "include $TMP/nginx/stock-api.conf;" "$TMP/nginx/debian.conf"
    out=$(nginx -t -q -e stderr -c "$TMP/nginx/debian.conf" 2>&1)
    same "nginx -t accepts stock-api.conf in Debian's http {} block ($out)" "$?" 0
fi
# A responder host behind edges, with only the required settings, and an edge.
"$P/share/stock-api/nginx/render.sh" "$TMP/host" FCGI_SOCKET=/run/stock-api/app.sock \
    FCGI_OVERFLOW_SOCKET=/run/stock-api/overflow.sock REAL_IP_FROM=10.0.0.0/29
out=$(nginx -t -q -e stderr -p "$TMP/host" -c "$TMP/host/nginx.conf" 2>&1)
same "nginx -t accepts a responder host with the defaults ($out)" "$?" 0
"$P/share/stock-api/nginx/render.sh" "$TMP/edge" SITE=edge LISTEN=127.0.0.1:8081 \
    UPSTREAMS="10.0.0.2:3000 10.0.0.3:3000" RATE_LIMIT=50
out=$(nginx -t -q -e stderr -p "$TMP/edge" -c "$TMP/edge/nginx.conf" 2>&1)
same "nginx -t accepts an edge ($out)" "$?" 0
same "the edge lists both hosts, each out for 5s after a failure" "$(cat "$TMP/edge/upstreams.conf")" \
    "server 10.0.0.2:3000 max_fails=1 fail_timeout=5s;
server 10.0.0.3:3000 max_fails=1 fail_timeout=5s;"
out=$("$P/share/stock-api/nginx/render.sh" "$TMP/bad" SITE=edge 2>&1)
check "an edge without UPSTREAMS is refused, naming it ($out)" grep -q UPSTREAMS <<<"$out"
out=$("$P/share/stock-api/nginx/render.sh" "$TMP/bad" SITE=edge UPSTREAMS='a;b' 2>&1)
check "an upstream that is not an address is refused ($out)" grep -q "is not an address" <<<"$out"
# Nothing a caller passes becomes nginx directives or sed commands.
for bad in 'X@|y|;e touch /tmp/x' 'RATE_LIMIT=5 nodelay; include /etc/passwd' 'FAIL_TIMEOUT=5s;' \
    'LISTEN=a\b' 'REAL_IP_FROM=10.0.0.1;allow' 'LISTEN' 'ACCESS_LOG=/tmp/$http_x.log' \
    'REAL_IP_FROM=*'; do
    out=$("$P/share/stock-api/nginx/render.sh" "$TMP/bad" SITE=edge UPSTREAMS=10.0.0.2:3000 "$bad" 2>&1)
    check "render.sh refuses '$bad' ($out)" test $? != 0
done
out=$("$P/share/stock-api/nginx/render.sh" "$TMP/bad" SITE=edge UPSTREAMS=10.0.0.2:3000 \
    RATE_LIMIT=0 RATE_LIMIT=5 2>&1)
check "render.sh refuses a setting given twice ($out)" grep -q "given twice" <<<"$out"

# DESTDIR stages the files; the unit still names the final paths.
make -s -C "$ROOT" install DESTDIR="$TMP/stage" PREFIX=/usr >"$TMP/install.log" 2>&1
check "make install DESTDIR=... PREFIX=/usr stages under DESTDIR" test -x "$TMP/stage/usr/bin/stock-fcgi"
check "and the staged unit names /usr/bin/stock-fcgi" \
    grep -q '^ExecStart=.* -- /usr/bin/stock-fcgi$' <<<"$(joined "$TMP/stage/usr/lib/systemd/system/stock-api@.service")"

# The examples' pool sizes are the stack's defaults.
for pool in app:WORKERS overflow:OVERFLOW_WORKERS; do
    same "examples/${pool%%:*}.env has the stack's ${pool#*:}" \
        "$(sed -n 's/^WORKERS=//p' "$P/share/stock-api/examples/${pool%%:*}.env")" \
        "$(sed -n "s/^setting ${pool#*:} \([0-9]*\) .*/\1/p" "$ROOT/tests/stack/stack.sh")"
done

# nginx/README.md's database steps: its lines that run setup-db.sh (Installing with
# systemd; the database host of Running several hosts), run as printed but
# with this install's prefix, the test's password file, and no runuser: the
# test's own PostgreSQL (a stack of postgres alone) takes this user as
# postgres. The responders then connect as the example stock-api.env says,
# as the unit's user (PGUSER: peer authentication would give that name).
readme_code() { awk '/^```sh$/ {c = 1; next} /^```$/ {c = 0} c' "$ROOT/nginx/README.md" | joined /dev/stdin; }
same "README runs setup-db.sh twice: one host, a database host with a password" \
    "$(readme_code | grep -v '^ *#' | grep -c 'setup-db\.sh')" 2
ONE_HOST=$(readme_code | grep -v '^ *#' | grep 'setup-db\.sh' | grep -v PASSWORD_FILE)
DB_HOST=$(readme_code | grep -v '^ *#' | grep 'setup-db\.sh.* PASSWORD_FILE=')
readme_db_step() { # LINE
    local line=$1
    if [[ $line != "runuser -u postgres -- /usr/local/share/stock-api/nginx/setup-db.sh"* ]]; then
        echo "not the installed setup-db.sh as postgres: $line"
        return 1
    fi
    line=${line#runuser -u postgres -- }
    line=${line//\/usr\/local\//$P/}
    line=${line//\/root\/stock-db.password/$TMP/stock-db.password}
    PGHOST=$PG_SOCK PGPORT=$PG_PORT PGUSER=postgres bash -c "$line"
}
PG_DIR=$(mktemp -d /tmp/stock-install.XXXXXX)
chmod 755 "$PG_DIR" # as root, the stack runs as postgres
PG_PORT=$("$ROOT/tests/stack/free-port.sh" 1)
PG_SOCK=$PG_DIR/stack/sock
pg_stack() { RUN_DIR=$PG_DIR/stack PGPORT=$PG_PORT SERVICES=postgres "$STACK" "$@"; }
cleanup_install() {
    [[ -n $WORKER ]] && stop_worker
    rcli -n 9 FLUSHDB >/dev/null 2>&1
    pg_stack down >/dev/null 2>&1
    rm -rf "$PG_DIR"
    cleanup_suite
}
trap cleanup_install EXIT
owner() { # SQL [DATABASE]
    psql -X -qAt -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres \
        -d "${2:-redisdistributedlock}" -c "$1"
}
pg_stack up >"$TMP/pg.log" 2>&1
check "a PostgreSQL of the test's own starts ($(tail -n 3 "$TMP/pg.log"))" test $? = 0
# The stack makes the database itself: setup-db.sh must.
owner "DROP DATABASE redisdistributedlock" postgres

out=$("$P/share/stock-api/nginx/setup-db.sh" "DB=x host=elsewhere" 2>&1)
check "setup-db.sh refuses a name psql would read as a connection string ($out)" \
    grep -q "DB must be a lower-case name" <<<"$out"
# All or nothing: a seed that fails leaves no schema, so a second run seeds.
cp -r "$P/share/stock-api" "$TMP/broken"
echo "SELECT 1 / 0;" >"$TMP/broken/sql/seed.sql"
PGHOST=$PG_SOCK PGPORT=$PG_PORT PGUSER=postgres "$TMP/broken/nginx/setup-db.sh" DB=broken \
    >"$TMP/broken.log" 2>&1
check "a failed seed fails setup-db.sh" test $? != 0
same "and leaves no table behind" "$(owner "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'" broken)" 0
out=$(readme_db_step "$ONE_HOST" 2>&1)
same "README's one-host setup-db.sh line succeeds ($out)" "$?" 0
same "it loads the schema and the seed's product" "$(owner "SELECT name, amount FROM products")" \
    "Sample Product|5"
same "the role can log in and nothing more: no superuser, no membership, no password" \
    "$(owner "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,
                     rolpassword IS NULL, (SELECT count(*) FROM pg_auth_members WHERE member = a.oid)
                FROM pg_authid a WHERE rolname = 'stock'")" "t|f|f|f|f|f|t|0"

EX_URL=$(sed -n 's/^DATABASE_URL=//p' "$P/share/stock-api/examples/stock-api.env")
ROLE_URL=${EX_URL//\/run\/postgresql/$PG_SOCK}
check "the example DATABASE_URL is the local socket's ($EX_URL)" test "$ROLE_URL" != "$EX_URL"
as_role() { PGUSER=stock PGPORT=$PG_PORT psql -X -qAt -v ON_ERROR_STOP=1 "$ROLE_URL" -c "$1"; }
same "the role connects with the example DATABASE_URL" "$(as_role "SELECT current_user" 2>&1)" stock
denied() { # WHAT SQL: the role may not
    local out
    out=$(as_role "$2" 2>&1)
    check "the role may not $1 ($out)" grep -Eq 'permission denied|must be owner' <<<"$out"
}
denied "prune (sql/prune.sql: the owner does)" "$(cat "$P/share/stock-api/sql/prune.sql")"
denied "delete an order" "DELETE FROM orders"
denied "truncate" "TRUNCATE orders"
denied "rename a product" "UPDATE products SET name = 'x'"
denied "add a product" "INSERT INTO products (name, amount) VALUES ('x', 1)"
denied "alter a table" "ALTER TABLE products ADD COLUMN x int"
denied "create a table" "CREATE TABLE x (x int)"
denied "create a temporary table" "CREATE TEMP TABLE x (x int)"
denied "set the orders' sequence" "SELECT setval(pg_get_serial_sequence('orders', 'id'), 1)"
denied "create a database" "CREATE DATABASE x"
denied "create a role" "CREATE ROLE x"
denied "read the server's files" "SELECT pg_read_file('postgresql.conf')"
check "the owner may prune" owner "$(cat "$P/share/stock-api/sql/prune.sql")"

# Every statement of app/store.c, run by the responders as the role: four
# workers (Redis: the stack's, in a database of its own), so that buyers
# queue behind a holder and the next holder makes them in one batch.
# Timeouts long enough that a held row never turns into a lock_timeout.
start_pool() {
    rm -f "$TMP/w.sock"
    DATABASE_URL=$ROLE_URL PGUSER=stock PGPORT=$PG_PORT REDIS_URL=redis://127.0.0.1:${REDIS_PORT:?}/9 \
        STATEMENT_TIMEOUT_MS=20000 LOCK_TTL_MS=65000 LOCK_WAIT_MS=30000 \
        spawn-fcgi -n -s "$TMP/w.sock" -- "$(command -v multiwatch)" -f 4 -- "$STOCK_BIN" \
        2>>"$TMP/w.log" &
    WORKER=$!
    for ((i = 0; i < 400; i++)); do
        (($(cat "$TMP/w.log" 2>/dev/null | grep -c '"msg":"worker ready') >= 4)) && return 0
        sleep 0.05
    done
    return 1
}
req() { # METHOD PATH [BODY [KEY]]: prints the CGI answer
    local body=${3:-}
    printf '%s' "$body" | "$FCGI_REQUEST" "$TMP/w.sock" REQUEST_METHOD="$1" DOCUMENT_URI="$2" \
        CONTENT_TYPE=application/json CONTENT_LENGTH=${#body} ${4:+HTTP_IDEMPOTENCY_KEY="$4"}
}
answer() { tr -d '\r' | sed -n '1s/^Status: \([0-9]*\).*/\1/p; $p' | paste -sd ' '; }
check "four responders start as the role ($(tail -n 2 "$TMP/w.log" 2>/dev/null))" start_pool
same "/healthz: the role reaches both" "$(req GET /healthz | answer)" \
    '200 {"status":"ok","postgres":"ok","redis":"ok"}'
same "GET /products/1" "$(req GET /products/1 | answer)" '200 {"id":1,"name":"Sample Product","amount":5}'
same "a purchase" "$(req POST /buy/1 '{"amount": 1}' | answer)" \
    '200 {"order_id":1,"product_id":1,"amount":1,"remaining":4}'
same "a keyed purchase" "$(req POST /buy/1 '{"amount": 1}' "inst-$$" | answer)" \
    '200 {"order_id":2,"product_id":1,"amount":1,"remaining":3}'
same "its replay" "$(req POST /buy/1 '{"amount": 1}' "inst-$$" | answer)" \
    '200 {"order_id":2,"product_id":1,"amount":1,"remaining":3}'
out=$(req POST /buy/1 '{"amount": 9}' "inst-$$-2" | answer)
check "a keyed purchase of more than the stock: 409 ($out)" grep -q '^409 .*"available":3' <<<"$out"
# A batch: one buyer holds the lock and waits on the product's row (held
# here), three queue behind it in Redis; the row let go, the next holder
# makes the other two with its own.
R=$(owner "INSERT INTO products (name, amount) VALUES ('rush', 100) RETURNING id")
psql -X -q -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d "application_name=row-holder dbname=redisdistributedlock" \
    -c "BEGIN; SELECT 1 FROM products WHERE id = $R FOR UPDATE; SELECT pg_sleep(60)" >/dev/null 2>&1 &
for ((i = 0; i < 200; i++)); do
    [[ $(owner "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'row-holder'
                AND query LIKE '%pg_sleep%'") == 1 ]] && break
    sleep 0.05
done
buyers=()
for b in 1 2 3 4; do
    req POST "/buy/$R" '{"amount": 1}' "rush-$$-$b" >"$TMP/rush.$b" 2>&1 &
    buyers+=($!)
done
for ((i = 0; i < 400; i++)); do
    [[ $(owner "SELECT count(*) FROM pg_stat_activity WHERE usename = 'stock' AND wait_event_type = 'Lock'") == 1 &&
        $(rcli CLIENT LIST | grep 'db=9 ' | grep -c 'cmd=blpop') == 3 ]] && break
    sleep 0.05
done
owner "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'row-holder'" >/dev/null
wait "${buyers[@]}"
same "the four buyers are sold one each" "$(grep -l '^Status: 200' "$TMP"/rush.* | wc -l)" 4
same "two of them in a batch, for the buyers waiting: purchase tokens" \
    "$(owner "SELECT count(*) FROM purchase_tokens WHERE product_id = $R")" 2
same "and the stock is right" "$(owner "SELECT amount FROM products WHERE id = $R")" 96
stop_worker
same "the responders stop cleanly" "$STOPPED" 0
# The one statement of app/store.c those requests do not make: a waiting
# buyer that gives up closes its token; here as the role, a new one, then
# one a batch wrote.
CLOSE=$(awk '/^static const char sql_close_token\[\] =/ {on = 1} on {print} on && /;$/ {exit}' \
    "$ROOT/app/store.c" | grep -o '"[^"]*"' | sed 's/^"//; s/"$//' | tr -d '\n')
tok=$(owner "SELECT token FROM purchase_tokens WHERE product_id = $R LIMIT 1")
out=$(as_role "PREPARE close_token (text, int, int) AS $CLOSE;
               EXECUTE close_token ('$(printf '%032d' $$)', $R, 1); EXECUTE close_token ('$tok', $R, 1)" 2>&1)
same "the role closes a token, and one a batch wrote (${CLOSE:0:40}...)" "$(cut -d'|' -f1 <<<"$out" | paste -sd ' ')" \
    "0 200"

# The database host's line: the same database (no second seed), and the
# role's password, from a file on standard input, now required over TCP.
(umask 077 && printf 'pw-%s-%s\n' "$$" "$RANDOM" >"$TMP/stock-db.password")
# A wider grant from before (docker-compose's profile grants DELETE): narrowed.
owner "GRANT DELETE ON ALL TABLES IN SCHEMA public TO stock"
out=$(readme_db_step "$DB_HOST" 2>&1)
same "README's database-host setup-db.sh line succeeds ($out)" "$?" 0
same "run again, it seeds nothing more" "$(owner "SELECT count(*) FROM products WHERE name = 'Sample Product'")" 1
denied "delete any more after a run" "DELETE FROM orders"
# scram-sha-256 for the role on loopback, before the stack's trust.
hba=$PG_DIR/stack/pgdata/stack_hba.conf
{ echo "host all stock 127.0.0.1/32 scram-sha-256" && cat "$hba"; } >"$TMP/hba" && cat "$TMP/hba" >"$hba"
owner "SELECT pg_reload_conf()" >/dev/null
tcp_role() { # PASSWORD: the password through libpq's environment, on no command line
    PGPASSWORD=$1 psql -X -qAt -h 127.0.0.1 -p "$PG_PORT" -U stock -d redisdistributedlock \
        -c "SELECT current_user" 2>&1
}
same "the role logs in over TCP with its password" "$(tcp_role "$(cat "$TMP/stock-db.password")")" stock
out=$(tcp_role wrong)
check "and not without it ($out)" grep -q 'password authentication failed' <<<"$out"
finish
