#!/usr/bin/env bash
# sentinel.sh -- Redis Sentinel: a worker given REDIS_SENTINELS asks them for
# the primary, and follows a failover without a restart. On loopback, with a
# primary, a replica and one sentinel of the test's own (the stack's Redis is
# left alone).
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

read -r P1 P2 PS <<<"$("$ROOT/tests/stack/free-port.sh" 3 | tr '\n' ' ')"
mkdir -p "$TMP/r1" "$TMP/r2" "$TMP/s"
# A server of the test's own: no persistence, in the foreground (a child of
# this shell: cleanup_suite ends it).
serve() { # DIR PORT [more settings...]
    local dir=$1 port=$2
    shift 2
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
        "$@" >"$dir/log" 2>&1 &
}
rc() { redis-cli -p "$1" "${@:2}"; }
serve "$TMP/r1" "$P1"
R1=$!
serve "$TMP/r2" "$P2" --replicaof 127.0.0.1 "$P1"
cat >"$TMP/s/sentinel.conf" <<CONF
port $PS
bind 127.0.0.1
dir "$TMP/s"
sentinel monitor stock 127.0.0.1 $P1 1
sentinel down-after-milliseconds stock 1000
sentinel failover-timeout stock 5000
CONF
redis-server "$TMP/s/sentinel.conf" --sentinel >"$TMP/s/log" 2>&1 &

# until_true COMMAND...: up to 20 s for it to succeed.
until_true() {
    for ((i = 0; i < 200; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
in_sync() { rc "$P2" INFO replication | grep -q 'master_link_status:up'; }
check "the replica is in sync" until_true in_sync
# The sentinel learns of replicas from the primary's INFO, every 10 s.
knows_replica() { rc "$PS" SENTINEL replicas stock | grep -qx "127.0.0.1:$P2"; }
check "the sentinel knows the replica" until_true knows_replica

# The worker is told where the sentinels are, not where Redis is; the first
# sentinel listed is dead, and skipped.
export REDIS_SENTINELS=127.0.0.1:1,127.0.0.1:$PS REDIS_MASTER_NAME=stock
WORKER_REDIS_URL=redis://127.0.0.1:1 start_worker
P=$(new_product "Sentinel" 1000)
body=$(fcgi_buy "$P")
check "a purchase through the primary the sentinel named ($body)" grep -q '"order_id"' <<<"$body"
check "the worker connected to the primary" grep -q "redis connected: 127.0.0.1:$P1 (the primary" "$TMP/w.log"

# The primary dies: the sentinel promotes the replica, and the same worker
# follows without a restart (503s meanwhile, nothing bought by them).
kill -KILL "$R1"
wait "$R1" 2>/dev/null
t0=$(date +%s%N)
sold_before=$(sold "$P")
body=$(fcgi_buy "$P")
check "the primary gone, not yet replaced: 503 ($body)" grep -q '"code":"service_unavailable"' <<<"$body"
same "and nothing was sold" "$(sold "$P")" "$sold_before"
promoted() { test "$(rc "$PS" SENTINEL get-master-addr-by-name stock | tail -n 1)" = "$P2"; }
check "the sentinel promotes the replica" until_true promoted
bought=0
for ((i = 0; i < 50 && bought == 0; i++)); do
    fcgi_buy "$P" | grep -q '"order_id"' && bought=1
    sleep 0.1
done
same "after the failover, the same worker buys again" "$bought" 1
echo "# sales stopped for $((($(date +%s%N) - t0) / 1000000)) ms (kill -9 of the primary to the next 200)"
check "through the new primary" grep -q "redis connected: 127.0.0.1:$P2 (the primary" "$TMP/w.log"
same "exactly the purchases answered 200 were sold" "$(sold "$P")" $((sold_before + 1))
same "the worker was not restarted" "$(kill -0 "$WORKER" && echo alive)" alive

# A name no sentinel knows: a definite 503, and the reason in the log.
stop_worker
REDIS_MASTER_NAME=nosuch WORKER_REDIS_URL=redis://127.0.0.1:1 start_worker
body=$(fcgi_buy "$P")
check "a name the sentinels do not know: 503, nothing bought ($body)" \
    grep -q '"code":"service_unavailable"' <<<"$body"
check "and the log says why" grep -q "knows no primary named nosuch" "$TMP/w.log"
stop_worker

# A sentinel that names a replica (a stale one, right after a failover) is
# not believed: ROLE says so, and the next sentinel is asked. Here a fake
# sentinel, listed first, names a replica of the new primary.
read -r P4 PF <<<"$("$ROOT/tests/stack/free-port.sh" 2 | tr '\n' ' ')"
mkdir -p "$TMP/r4"
serve "$TMP/r4" "$P4" --replicaof 127.0.0.1 "$P2"
synced4() { rc "$P4" INFO replication | grep -q 'master_link_status:up'; }
check "a second replica is in sync" until_true synced4
# Its whole answer, to whatever it is asked: the replica's address.
printf '*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n' "${#P4}" "$P4" >"$TMP/fake-answer"
socat "TCP-LISTEN:$PF,bind=127.0.0.1,reuseaddr,fork" "SYSTEM:cat $TMP/fake-answer; sleep 1" \
    2>/dev/null &
REDIS_SENTINELS=127.0.0.1:$PF,127.0.0.1:$PS WORKER_REDIS_URL=redis://127.0.0.1:1 start_worker
body=$(fcgi_buy "$P")
check "a sentinel naming a replica is passed over: the purchase goes through ($body)" \
    grep -q '"order_id"' <<<"$body"
check "and the log says the named server was not the primary" \
    grep -q "127.0.0.1:$P4, named by the sentinels, is not the primary" "$TMP/w.log"
stop_worker

# A sentinel with a password of its own (requirepass): asked without it, it
# answers NOAUTH, a 503 whose reason is in the log; with
# REDIS_SENTINEL_PASSWORD it names the primary. The password is never logged.
PA=$("$ROOT/tests/stack/free-port.sh" 1)
mkdir -p "$TMP/sa"
cat >"$TMP/sa/sentinel.conf" <<CONF
port $PA
bind 127.0.0.1
dir "$TMP/sa"
requirepass "sentinel-secret-$$"
sentinel monitor stock 127.0.0.1 $P2 1
CONF
redis-server "$TMP/sa/sentinel.conf" --sentinel >"$TMP/sa/log" 2>&1 &
guarded_up() { REDISCLI_AUTH=sentinel-secret-$$ rc "$PA" SENTINEL get-master-addr-by-name stock | grep -qx "$P2"; }
check "a sentinel with a password knows the primary" until_true guarded_up
REDIS_SENTINELS=127.0.0.1:$PA WORKER_REDIS_URL=redis://127.0.0.1:1 start_worker
body=$(fcgi_buy "$P")
check "asked without its password: 503, nothing bought ($body)" \
    grep -q '"code":"service_unavailable"' <<<"$body"
check "and the log says it wants one" grep -q "redis sentinel 127.0.0.1:$PA: .*NOAUTH" "$TMP/w.log"
stop_worker
REDIS_SENTINEL_PASSWORD=sentinel-secret-$$ REDIS_SENTINELS=127.0.0.1:$PA \
    WORKER_REDIS_URL=redis://127.0.0.1:1 start_worker
body=$(fcgi_buy "$P")
check "with REDIS_SENTINEL_PASSWORD: the purchase goes through ($body)" grep -q '"order_id"' <<<"$body"
check "and the password is in no log line" eval "! grep -q sentinel-secret '$TMP/w.log'"
stop_worker

# Without sentinels, a REDIS_URL that names a replica: READONLY is a failed
# call (503, nothing bought), and the connection is dropped, not reused.
unset REDIS_SENTINELS REDIS_MASTER_NAME
WORKER_REDIS_URL=redis://127.0.0.1:$P4 start_worker
sold_before=$(sold "$P")
body=$(fcgi_buy "$P")
check "a replica refuses the lock: 503 ($body)" grep -q '"code":"service_unavailable"' <<<"$body"
same "and nothing was sold" "$(sold "$P")" "$sold_before"
fcgi_buy "$P" >/dev/null
check "the connection is dropped after READONLY: later calls connect again" \
    test "$(grep -c "redis connected: 127.0.0.1:$P4" "$TMP/w.log")" -ge 2
stop_worker
finish
