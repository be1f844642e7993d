#!/usr/bin/env bash
# install.sh -- make install: the binary, the nginx templates, the SQL,
# example settings and a systemd unit that systemd accepts, under PREFIX
# and DESTDIR.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

P=$TMP/prefix
make -s -C "$ROOT" install PREFIX="$P" >"$TMP/install.log" 2>&1
check "make install PREFIX=... succeeds" test $? = 0
for f in bin/stock-fcgi share/stock-api/nginx/stock-api.conf.in share/stock-api/nginx/nginx.conf.in \
    share/stock-api/nginx/edge.conf.in share/stock-api/nginx/common.conf.in share/stock-api/nginx/problems.conf.in \
    share/stock-api/nginx/render.sh share/stock-api/sql/schema.sql share/stock-api/sql/seed.sql \
    share/stock-api/examples/stock-api.env share/stock-api/examples/app.env \
    share/stock-api/examples/overflow.env lib/systemd/system/stock-api@.service; do
    check "installs $f" test -s "$P/$f"
done
check "the installed binary runs" grep -q '^stock-fcgi ' <<<"$("$P/bin/stock-fcgi" --version)"
UNIT=$P/lib/systemd/system/stock-api@.service
same "the unit has every placeholder filled" "$(grep -c '@[A-Z]*@' "$UNIT")" 0
# The unit with its continued lines joined.
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
finish
