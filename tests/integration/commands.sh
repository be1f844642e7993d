#!/usr/bin/env bash
# commands.sh -- the commands a user types: make up, down, psql, prune, reset
# and run (with Ctrl-C), with the release build, on a stack of their own (its
# own directory and ports, so it cannot touch a `make run` in progress).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

# A directory with a space in its name, as a checkout under "My Projects" has.
export RUN_DIR PORT PGPORT REDIS_PORT
CMD_DIR=$(mktemp -d "/tmp/stock cmd.XXXXXX")
chmod 755 "$CMD_DIR"
RUN_DIR="$CMD_DIR/run dir"
read -r PORT PGPORT REDIS_PORT <<<"$("$ROOT/tests/stack/free-port.sh" 3 | tr '\n' ' ')"
export WORKERS=2 STOCK_BIN=$ROOT/build/stock-fcgi STACK=$ROOT/tests/stack/stack.sh
export BASE_URL=http://127.0.0.1:$PORT
# The sanitizer settings of the other suites do not apply to the release build.
unset ASAN_OPTIONS UBSAN_OPTIONS LOCK_WAIT_MS
. "$(dirname "$0")/lib.sh"
trap '"$STACK" down >/dev/null 2>&1; rm -rf "$CMD_DIR"; cleanup_suite' EXIT

mk() {
    make -s -C "$ROOT" "$@" 2>&1
}

# plain COMMAND: make COMMAND without the ports the stack was started with, as
# typed in another terminal: psql, prune and reset must find the stack.
plain() {
    env -u PORT -u PGPORT -u REDIS_PORT make -s -C "$ROOT" "$@" 2>&1
}

seed_buy() {
    curl -s -X POST "$BASE_URL/buy/1" -H "Content-Type: application/json" -d '{"amount": 1}' |
        jq -r .remaining
}

out=$(mk up)
check "make up: prints the ready line" grep -qx "ready: http://127.0.0.1:$PORT" <<<"$out"
same "make up: the seed's curl answers 200 with 4 remaining" "$(seed_buy)" 4
out=$(echo 'SELECT amount FROM products WHERE id = 1' | plain psql)
check "make psql without the stack's PGPORT: runs SQL on the stack's database ($out)" \
    grep -qxE ' +4' <<<"$out"

# Two keys and a token a day old, one of each just made.
sql "INSERT INTO idempotency_keys (key, product_id, amount, status, created_at) VALUES
    ('old-1', 1, 1, 404, now() - interval '25 hours'), ('old-2', 1, 1, 404, now() - interval '25 hours'),
    ('new', 1, 1, 404, now());
    INSERT INTO purchase_tokens (token, product_id, amount, status, created_at) VALUES
    (repeat('a', 32), 1, 1, 0, now() - interval '25 hours'), (repeat('b', 32), 1, 1, 0, now())"
out=$(plain prune)
same "make prune without the stack's PGPORT: says what it removed" "$out" \
    "stack: pruned what was older than 24 hours: idempotency keys 2, purchase tokens 1"
same "make prune: the day-old key and token are gone, the new ones kept" \
    "$(sql "SELECT (SELECT string_agg(key, ',') FROM idempotency_keys), (SELECT COUNT(*) FROM purchase_tokens)")" \
    "new|1"

mk down >/dev/null
same "make down: nothing is left running" "$("$STACK" status | grep -c running)" 0
check "make down: the port is free again" eval "! curl -s -o /dev/null $BASE_URL/healthz"
out=$(mk down)
same "make down: a second time is harmless" "$?" 0

mk up >/dev/null
same "make up again: the data is kept (3 remaining after one more)" "$(seed_buy)" 3

out=$(plain reset)
same "make reset without the stack's PGPORT: reseeds the running stack ($out)" "$?" 0
same "make reset: reseeds product 1 to 5 units" "$(sql 'SELECT amount FROM products WHERE id = 1')" 5
same "make reset: no order is left" "$(sql 'SELECT COUNT(*) FROM orders')" 0
same "make reset: purchases work right after" "$(seed_buy)" 4
mk down >/dev/null
# Stopped, reset starts PostgreSQL for a moment on the port the stack last
# ran on (5433 may be another stack's), and stops it again.
out=$(plain reset)
same "make reset of a stopped stack, without its PGPORT: reseeds ($out)" "$?" 0
check "... on the port it last ran on" grep -qx "port = $PGPORT" "$RUN_DIR/pgdata/stack.conf"
same "... and leaves nothing running" "$("$STACK" status | grep -c running)" 0

# A start that fails says so on its last line, and what to do; it leaves
# nothing running. Here the port is taken (by a Redis server of this test's).
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --unixsocket '' >/dev/null 2>&1 &
squatter=$!
for ((i = 0; i < 50; i++)); do
    redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
out=$(mk up)
rc=$?
kill "$squatter"
wait "$squatter" 2>/dev/null
check "make up on a taken port: fails" test "$rc" -ne 0
check "make up on a taken port: says which port" grep -q "stack: nginx did not start (is port $PORT free?)" <<<"$out"
# (make's own "*** [Makefile:N: up] Error 1" follows.)
same "make up on a taken port: its last line says what failed and what to do" \
    "$(tail -n 2 <<<"$out" | head -n 1)" \
    "stack: nginx did not start (is port $PORT free?): see $RUN_DIR/log/nginx-error.log"
same "... which make does not follow with its generic one" "$(grep -c '^make up: ' <<<"$out")" 0
same "make up on a taken port: nothing is left running" "$("$STACK" status | grep -c running)" 0

# A start that fails where no message was planned (here: a state directory
# that cannot be made) still names what failed.
out=$(RUN_DIR=/proc/no-such-dir/run mk up)
check "make up with an impossible RUN_DIR: fails" test "$?" -ne 0
check "... with a 'stack:' line naming what failed" grep -q "^stack: failed unexpectedly: mkdir" <<<"$out"
check "... and make's last line says what to do" grep -q "^make up: the stack failed" <<<"$out"

# A malformed setting: its line is the last word (but make's own "***" line,
# "make[1]: ***" under make test).
out=$(WORKERS=x mk up)
check "make up with WORKERS=x: fails" test "$?" -ne 0
same "... and its last line names the setting (no 'failed unexpectedly' after it)" \
    "$(grep -vE '^make(\[[0-9]+\])?: \*\*\*' <<<"$out" | tail -n 1)" \
    "stack: WORKERS must be a whole number from 1 to 256 (got 'x')"

# make run in the foreground, then Ctrl-C: SIGINT to its whole process group,
# as a terminal sends it. A background job starts with SIGINT ignored, and a
# shell cannot trap a signal ignored at its start: env restores the default.
setsid env --default-signal=INT make -s -C "$ROOT" run >"$TMP/run.out" 2>&1 &
runner=$!
for ((i = 0; i < 600; i++)); do
    grep -q '^ready: ' "$TMP/run.out" && break
    sleep 0.1
done
check "make run: prints the ready line" grep -qx "ready: http://127.0.0.1:$PORT" "$TMP/run.out"
same "make run: the seed's curl answers 200 (4 left after the reset)" "$(seed_buy)" 4
kill -INT -- "-$runner"
for ((i = 0; i < 300; i++)); do
    kill -0 "$runner" 2>/dev/null || break
    sleep 0.1
done
check "make run: Ctrl-C ends it" eval "! kill -0 $runner 2>/dev/null"
same "make run: Ctrl-C stops every service" "$("$STACK" status | grep -c running)" 0

finish
