#!/usr/bin/env bash
# ha.sh -- no single point of failure: PostgreSQL under pg_auto_failover
# (a monitor, a primary and a synchronous standby) and Redis under Sentinel,
# each host a network namespace this test makes itself:
#
#   client 10.77.0.10 --> a 10.77.0.2 (nginx + both pools)
#   mon 10.77.0.8 (the pg_auto_failover monitor; a sentinel)
#   pg 10.77.0.5, pg2 10.77.0.9 (PostgreSQL, each under its pg_autoctl)
#   redis 10.77.0.4, redis2 10.77.0.7 (Redis primary and replica; sentinels)
#   redis3 10.77.0.11 (a second Redis replica, from scenario 6 on)
#
# The responders give a password to each service: PostgreSQL (scram), Redis
# and the sentinels (their own requirepass). pg_autoctl's own connections
# (replication, health checks) are trusted between the nodes' addresses
# only, as `--auth trust` writes them: nginx/README.md says what to use instead.
#
# The responders know both PostgreSQL nodes (DATABASE_URL lists them, with
# target_session_attrs=read-write) and the sentinels, never which is the
# primary. Under a load of buyers with idempotency keys (tests/fault/lib.sh),
# each fault followed by the invariants of tests/fault/ on the primary of
# the moment, among them "every 200 answered has its order":
#   1. the PostgreSQL primary's host killed (every process, kill -9, and its
#      link down: its address answers nothing);
#   2. that host back: it rejoins as the standby, while
#   3. the Redis primary's host is killed, and comes back as a replica;
#   4. the new PostgreSQL primary cut off from every host but the
#      responders' (from the monitor, its standby and the client): the
#      standby is promoted, the old primary sells nothing on its own, and
#      the responders, whose sessions it still takes, move to the new one;
#   5. healed, it rejoins, while the new Redis primary's host is killed;
#   6. a Redis split brain: the primary cut off from its two replicas and
#      the other sentinels, not from the responders: it refuses writes
#      (min-replicas-to-write), and the workers leave it for the promoted one.
# Each prints how long sales stopped. Everything is removed on exit,
# failure or interrupt.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ $(id -u) != 0 ]]; then
    echo "ok 1 - ha # SKIP network namespaces need root"
    echo "1..1"
    exit 0
fi
if ! command -v pg_autoctl >/dev/null; then
    echo "not ok 1 - ha: pg_autoctl is missing: run 'make deps'"
    echo "1..1"
    exit 1
fi

STOCK_BIN=$ROOT/build/asan/stock-fcgi
. "$ROOT/tests/cluster/lib.sh"
unset 'ADDR[edge]' 'ADDR[b]'
ADDR[mon]=$NET.8
ADDR[pg2]=$NET.9
ADDR[redis2]=$NET.7
ADDR[redis3]=$NET.11
PG_NODES="${ADDR[pg]}:5432,${ADDR[pg2]}:5432"
DB_URL="postgresql://postgres:$PG_PW@$PG_NODES/redisdistributedlock?target_session_attrs=read-write"
# The responders list pg2 first: when pg2 is the primary cut off but from
# them (4. below), libpq alone would keep choosing it, since it still says it
# takes writes. They must put it last themselves (include/hostlist.h).
RESPONDERS_DB_URL="postgresql://postgres:$PG_PW@${ADDR[pg2]}:5432,${ADDR[pg]}:5432/redisdistributedlock?target_session_attrs=read-write"
SENTINELS="${ADDR[redis]}:26379,${ADDR[redis2]}:26379,${ADDR[mon]}:26379"
SENTINEL_PW=sentinel-$(od -An -tx8 -N8 /dev/urandom | tr -d ' ')
MONITOR_URI="postgres://autoctl_node@${ADDR[mon]}:5432/pg_auto_failover?sslmode=disable"

export BASE_URL=http://${ADDR[a]}:3000 RUN_DIR=$CL/a PGPORT=5432 STACK STOCK_BIN
. "$ROOT/tests/integration/lib.sh"
. "$ROOT/tests/fault/lib.sh"
# The database is whichever node is the primary: the client host asks both,
# as the responders do. Every client command runs on the client host. A
# node whose host died answers nothing, not even a reset: without a
# connect timeout each of the test's queries waited for the kernel to give
# up on it (a minute and more in one run) before asking the other node.
conninfo() { echo "$DB_URL&connect_timeout=2"; }
psql() { on client psql "$@"; }
curl() { on client curl "$@"; }
REDIS_PRIMARY=redis
rcli() { REDISCLI_AUTH=$REDIS_PW redis-cli -s "$CL/$REDIS_PRIMARY/sock/redis.sock" "$@"; }

# The test's own jobs first (the load, a keeper starting), so that none
# enters a namespace as it goes.
cleanup() {
    cleanup_suite
    teardown "$NS"
    [[ -n ${KEEP:-} ]] || rm -rf "$CL"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

leftover=$(leftovers)
same "no namespaces left by an earlier run" "$(echo $leftover)" ""
for prefix in $leftover; do teardown "$prefix"; done
network_up || not_ok "the network namespaces could be made"

# --- PostgreSQL under pg_auto_failover ---------------------------------------
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
# autoctl HOST ARGS...: pg_autoctl on that host as postgres, its files under
# $CL/pgaf-HOST, with a /run/postgresql of its own (a mount namespace): two
# servers on one port would otherwise share that socket directory.
autoctl() {
    local host=$1 dir=$CL/pgaf-$1
    shift
    install -d -o postgres "$dir"
    on "$host" unshare -m --propagation private sh -c \
        'mount -t tmpfs -o mode=2775,uid=postgres,gid=postgres tmpfs /run/postgresql && exec "$@"' sh \
        setpriv --reuid=postgres --regid=postgres --init-groups -- \
        env PATH="$PG_BIN:$PATH" HOME="$dir" XDG_CONFIG_HOME="$dir/config" XDG_DATA_HOME="$dir/data" \
        pg_autoctl "$@"
}
# keeper HOST: the node's pg_autoctl, running in the background (its log in
# $CL/pgaf-HOST.log), as a service manager would keep it.
keeper() {
    autoctl "$1" run --pgdata "$CL/pgaf-$1/pgdata" >>"$CL/pgaf-$1.log" 2>&1 &
}
# on_node HOST SQL: as the node's superuser, over its own loopback.
on_node() {
    on "$1" psql -X -qAt -h 127.0.0.1 -U postgres -d redisdistributedlock -c "$2"
}
# writable HOST: the node takes writes: what target_session_attrs=read-write
# asks. A standby just promoted stays read-only (default_transaction_read_only)
# until the monitor is sure the old primary stopped: pg_auto_failover's
# guard against two primaries.
writable() { [[ $(on_node "$1" "SHOW transaction_read_only" 2>/dev/null) == off ]]; }
# state HOST: the node's state as the monitor knows it (primary, secondary...).
state() {
    on mon psql -X -qAt "$MONITOR_URI" -c "SELECT reportedstate FROM pgautofailover.node
                                           WHERE nodename = '$1'" 2>/dev/null
}
# wait_for SECONDS COMMAND...: polls every 0.1 s until the command succeeds.
wait_for() {
    local tries=$(($1 * 10))
    shift
    for ((i = 0; i < tries; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}
in_state() { [[ $(state "$1") == "$2" ]]; }
pair_ready() { in_state "$1" primary && in_state "$2" secondary; }

# Failover in seconds, not the defaults' minute: the monitor calls a node
# unhealthy after 2 s without news, and lets the promoted standby take
# writes 5 s after that at the earliest (primary_demote_timeout). A primary
# cut off is meant to stop itself after network_partition_timeout (3 s
# here), but pg_autoctl 2.0 does so only if it saw its standby still
# connected after it lost the monitor: in this test it never did. What
# keeps it from selling is synchronous replication (lone_commit below).
monitor_up() {
    autoctl mon create monitor --pgdata "$CL/pgaf-mon/pgdata" --pgport 5432 \
        --hostname "${ADDR[mon]}" --auth trust --no-ssl --run >>"$CL/pgaf-mon.log" 2>&1 &
    wait_for 30 on mon "$PG_BIN/pg_isready" -q -h 127.0.0.1 || return 1
    wait_for 30 on mon psql -X -qAt "$MONITOR_URI" -c "SELECT 1" >/dev/null 2>&1 || return 1
    on mon psql -X -q -h 127.0.0.1 -U postgres -d postgres >/dev/null <<SQL
ALTER SYSTEM SET pgautofailover.health_check_period = 1000;
ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000;
ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1;
ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500;
ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 2000;
ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 5000;
SELECT pg_reload_conf();
SQL
}
# node_create HOST: registers a data node: the first becomes the primary
# (initdb), the next its standby (pg_basebackup).
node_create() {
    autoctl "$1" create postgres --pgdata "$CL/pgaf-$1/pgdata" --pgport 5432 \
        --hostname "${ADDR[$1]}" --name "$1" --auth trust --no-ssl \
        --dbname redisdistributedlock --monitor "$MONITOR_URI" >>"$CL/pgaf-$1.log" 2>&1 &&
        autoctl "$1" config set --pgdata "$CL/pgaf-$1/pgdata" \
            timeout.network_partition_timeout 3 >/dev/null
}
# The schema, the password of the responders' role, and who may connect
# with it: the hosts' network, with scram (pg_autoctl's own rules trust
# only the nodes' and the monitor's addresses, for replication and health
# checks). The standby copies it all from the primary.
schema() {
    on pg psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d redisdistributedlock \
        -f "$ROOT/sql/schema.sql" -f "$ROOT/sql/seed.sql" >/dev/null &&
        printf '%s\n' "SET password_encryption = 'scram-sha-256';" \
            "ALTER ROLE postgres PASSWORD '$PG_PW';" |
        on pg psql -X -q -h 127.0.0.1 -U postgres -d postgres >/dev/null &&
        echo "host redisdistributedlock postgres $NET.0/24 scram-sha-256" \
            >>"$CL/pgaf-pg/pgdata/pg_hba.conf" &&
        echo "host all pgautofailover_replicator $NET.0/24 trust" \
            >>"$CL/pgaf-pg/pgdata/pg_hba.conf" &&
        on_node pg "SELECT pg_reload_conf()" >/dev/null
}
# The standby's pg_basebackup waits for a checkpoint, which a fresh primary
# spreads over minutes: ask for one at once, until the copy has begun.
standby_create() {
    node_create pg2 &
    local create=$!
    while kill -0 "$create" 2>/dev/null; do
        on_node pg "CHECKPOINT" >/dev/null 2>&1
        sleep 0.5
    done
    wait "$create"
}
postgres_up() {
    monitor_up && node_create pg && keeper pg && wait_for 30 writable pg && schema &&
        standby_create && keeper pg2 && wait_for 60 pair_ready pg pg2
}

# --- Redis under Sentinel, and the responders --------------------------------
# start() is lib.sh's: a stack.sh of the host's own, under $CL/HOST.
redis_up() {
    local watch=(SENTINEL_MONITOR="stock ${ADDR[redis]}:6379 2" SENTINEL_DOWN_AFTER_MS=2000
        REDIS_PASSWORD="$REDIS_PW" SENTINEL_PASSWORD="$SENTINEL_PW")
    start redis SERVICES="redis sentinel" "${watch[@]}" &&
        start redis2 SERVICES="redis sentinel" REDIS_REPLICAOF="${ADDR[redis]}:6379" "${watch[@]}" &&
        start mon SERVICES=sentinel "${watch[@]}"
}
responders_up() {
    start a SERVICES="app nginx" WORKERS=3 OVERFLOW_WORKERS=2 DATABASE_URL="$RESPONDERS_DB_URL" \
        REDIS_SENTINELS="$SENTINELS" REDIS_MASTER_NAME=stock REDIS_SENTINEL_PASSWORD="$SENTINEL_PW" \
        REDIS_URL="redis://:$REDIS_PW@${ADDR[redis]}:6379"
}

# PostgreSQL's pair forms (a minute's work for pg_autoctl, mostly waiting)
# while Redis and the sentinels start.
started=0
postgres_up &
pg_job=$!
redis_up && wait "$pg_job" && responders_up && started=1
echo "# hosts started in $SECONDS s"
t_start=$SECONDS
same "the hosts start: a monitor, a primary and its standby, Redis and its replica, sentinels, responders" \
    "$started" 1
if ((!started)); then
    tail -n 20 "$CL"/pgaf-*.log 2>/dev/null | sed 's/^/#   /'
    finish
fi
same "the standby is synchronous" "$(on_node pg "SHOW synchronous_standby_names")" \
    "ANY 1 (pgautofailover_standby_2)"
buy /buy/1 '{"amount": 1}'
expect "a purchase through the pair" 200

# How long from T0 until the primary of the moment answered T1 (seconds).
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# kill_host HOST: every process in it, at once, and its link down: a
# machine that died (its address answers nothing, not even a reset).
# revive HOST: its link up again, nothing running.
kill_host() {
    local pid
    ip -n "$NS-$1" link set eth0 down
    for pid in $(ip netns pids "$NS-$1"); do kill -KILL "$pid" 2>/dev/null; done
}
revive() { ip -n "$NS-$1" link set eth0 up; }

# pg_failover NAME OLD NEW HOW: under load, OLD (the primary) dies or is cut
# off (HOW: kill_host or nft_isolate); NEW must be promoted, and sales go on
# through it with no responder restarted.
pg_failover() {
    local name=$1 old=$2 new=$3 how=$4 pids
    P=$(new_product "HA: $name" 100000)
    pids=$(RUN_DIR=$CL/a workers)
    start_load "$P" 8
    sleep 1
    t0=$(date +%s.%N)
    $how "$old"
    if [[ $how != kill_host ]]; then
        lone_commit "$old" &
        lone=$!
    fi
    wait_for 60 writable "$new"
    t1=$(date +%s.%N)
    sleep 3
    stop_load
    echo "# $name: $(stopped "$P" "$t0"); $new writable after $(since "$t0" "$t1") s," \
        "sold through it $(sql "SELECT round(extract(epoch FROM min(created_at)) - $t1, 2)
                                  FROM orders WHERE product_id = $P AND created_at > to_timestamp($t1)") s later"
    check "$name: $new was promoted" in_state "$new" wait_primary
    check "$name: selling goes on through $new" test "$(sold_since "$P" "$t1")" -gt 0
    same "$name: the same responders sell (none restarted)" "$(RUN_DIR=$CL/a workers)" "$pids"
    check_invariants "$P" 100000
}

# lone_commit HOST: a write on HOST from its own loopback (a client on its
# side of a cut); exits with psql's status, 124 if still waiting after 3 s.
lone_commit() {
    timeout 3 ip netns exec "$NS-$1" psql -X -qAt -h 127.0.0.1 -U postgres -d redisdistributedlock \
        -c "UPDATE products SET amount = amount WHERE id = 1" >/dev/null 2>&1
}
# The Redis primary of the moment, as the sentinels name it (asked from the
# client host, of the monitor's sentinel).
sentinel_names() {
    [[ $(on client env REDISCLI_AUTH="$SENTINEL_PW" redis-cli -h "${ADDR[mon]}" -p 26379 \
        SENTINEL get-master-addr-by-name stock \
        2>/dev/null | head -n 1) == "${ADDR[$1]}" ]]
}
# redis_failover NAME OLD NEW: under load, OLD (the Redis primary's host,
# its sentinel too) dies (no persistence: its lock keys are lost, and NEW's
# fence counters may lag;
# fencing makes that safe, as check_invariants' "fences grow with order
# ids" shows); the sentinels must promote NEW, and sales go on through it.
redis_failover() {
    local name=$1 old=$2 new=$3
    P=$(new_product "HA: $name" 100000)
    start_load "$P" 8
    sleep 1
    t0=$(date +%s.%N)
    kill_host "$old"
    wait_for 30 sentinel_names "$new"
    t1=$(date +%s.%N)
    REDIS_PRIMARY=$new
    sleep 3
    stop_load
    echo "# $name: $(stopped "$P" "$t0"); promoted after $(since "$t0" "$t1") s"
    check "$name: the sentinels promoted $new" sentinel_names "$new"
    check "$name: selling goes on through $new" test "$(sold_since "$P" "$t1")" -gt 0
    check_invariants "$P" 100000
}
# rejoined NEW OLD: waits until OLD is NEW's standby again, and says when.
rejoined() {
    check "$2 rejoins as the standby of $1" wait_for 60 pair_ready "$1" "$2"
    echo "# $2 rejoined as the standby $((SECONDS - rejoin)) s after it came back"
}

# 1. The PostgreSQL primary's machine dies: pg_autoctl and PostgreSQL, kill
# -9. The standby was synchronous, so every sale answered 200 before the
# kill is on it (check_invariants: "every 200 answered has its order").
pg_failover "PostgreSQL primary killed" pg pg2 kill_host

# 2. The old primary comes back, and rejoins as the standby of the new one
# (pg_autoctl rewinds what it had that the new primary has not, if
# anything: nothing that was answered 200). That takes a while, in which
# 3. the Redis primary's host is killed, and brought back as a replica.
revive pg
keeper pg
rejoin=$SECONDS
redis_failover "Redis primary host killed" redis redis2
revive redis
start redis SERVICES="redis sentinel" REDIS_PASSWORD="$REDIS_PW" SENTINEL_PASSWORD="$SENTINEL_PW" \
    REDIS_REPLICAOF="${ADDR[redis2]}:6379" SENTINEL_MONITOR="stock ${ADDR[redis2]}:6379 2" \
    SENTINEL_DOWN_AFTER_MS=2000
replica_synced() {
    REDISCLI_AUTH=$REDIS_PW redis-cli -s "$CL/redis/sock/redis.sock" INFO replication |
        grep -q master_link_status:up
}
check "the old Redis primary is back, as a replica in sync" wait_for 30 replica_synced
rejoined pg2 pg
same "and the new primary waits for it again" "$(on_node pg2 "SHOW synchronous_standby_names")" \
    "ANY 1 (pgautofailover_standby_1)"

# 4. The PostgreSQL primary (pg2 now) is cut off from every host but the
# responders': the monitor promotes pg. pg2 goes on taking sessions (see
# monitor_up), from the responders too, and says it takes writes, but a
# COMMIT there waits for its standby forever and is never answered 200: the
# purchases it held are outcome_unknown, their local commits are discarded
# when it rejoins, and their keys, retried, are bought on the new primary.
# The responders must leave it by themselves: a worker that saw it unable
# to commit opens its next session with pg2 last (include/hostlist.h), and
# lands on pg once pg takes writes.
isolate_but_responders() { nft_isolate_but "$1" "${ADDR[a]}"; }
a_log_from=$(($(wc -l <"$CL/a/log/app.log") + 1))
pg_failover "PostgreSQL primary cut off but from the responders" pg2 pg isolate_but_responders
echo "# answers meanwhile: $(awk '{print $2}' "$TMP/answers" | sort | uniq -c |
    awk '{printf "%s×%s ", $1, $2}')($(grep -o '"code":"[a-z_]*"' "$TMP/answers" | cut -d'"' -f4 |
    sort | uniq -c | awk '{printf "%s×%s ", $1, $2}'))"
check "the cut-off primary still runs (it did not stop itself, so only the responders could leave it)" \
    on_node pg2 "SELECT 1"
check "a responder saw pg2 unable to commit, and opened its next session on pg" \
    grep -q "new session on ${ADDR[pg]}:5432, not on ${ADDR[pg2]}:5432, which could not commit" \
    <(tail -n "+$a_log_from" "$CL/a/log/app.log")
# Its standby cannot acknowledge a COMMIT, so none is ever confirmed there:
# the write is still waiting when timeout(1) ends it (124).
wait "$lone"
same "a write on the cut-off primary, from its side of the cut, is never confirmed" "$?" 124
unknown=$(awk '/"code":"outcome_unknown"/ {print $1}' "$TMP/answers")
definite=0
for key in $unknown; do
    buy "/buy/$P" '{"amount": 1}' -H "Idempotency-Key: $key"
    [[ $STATUS == 200 ]] && definite=$((definite + 1))
done
same "its purchases in doubt ($(wc -w <<<"$unknown")), retried with their keys, are bought on pg" \
    "$definite" "$(wc -w <<<"$unknown")"

# 5. Healed, pg2 rejoins (its local commits rewound); meanwhile the new Redis
# primary is killed: the old one, its replica now, is promoted.
nft_heal pg2
rejoin=$SECONDS
redis_failover "Redis primary host killed again" redis2 redis
rejoined pg pg2

# 6. Split brain: the Redis primary (redis) cut off from its replicas and
# from the other sentinels, but not from the responders. Those sentinels
# promote a replica, and the old primary goes on taking locks for the
# workers still on it, each grant a fence from a counter that is not the
# new primary's: each costs lock_lost answers and new fence epochs, and
# went on, without a bound, until the heal. With min-replicas-to-write 1
# the old primary refuses writes (NOREPLICAS) once no replica acknowledged
# within min-replicas-max-lag; a worker refused so asks the sentinels again,
# another first, and finds the new primary. Two replicas: with one, the
# promoted replica, alone, would refuse writes too (README, High
# availability). The workers are first made to ask the old primary's own
# sentinel first (the one cut off with it, which would name it again), as
# a freshly started host does: the list's first.
rcli_on() { # HOST ARGS...: redis-cli to that host's Redis, over its socket
    local host=$1
    shift
    REDISCLI_AUTH=$REDIS_PW redis-cli -s "$CL/$host/sock/redis.sock" "$@"
}
sentinel_on() { # HOST ARGS...: redis-cli to that host's sentinel, from the client
    local host=$1
    shift
    on client env REDISCLI_AUTH="$SENTINEL_PW" redis-cli -h "${ADDR[$host]}" -p 26379 "$@" 2>/dev/null
}
# replicas_known HOST N: HOST's sentinel knows N replicas, none down.
replicas_known() {
    [[ $(sentinel_on "$1" SENTINEL replicas stock | grep -A1 -x flags | grep -cx slave) == "$2" ]]
}
# from_a: the responders' connections to the old primary.
from_a() { rcli_on redis CLIENT LIST TYPE normal | grep -c "addr=${ADDR[a]}:"; }
all_back() { [[ $(from_a) == "$(RUN_DIR=$CL/a workers | wc -w)" ]]; }
refuses_writes() { [[ $(rcli_on redis SET probe:split 1) == NOREPLICAS* ]]; }
# old_quiet: no responder connected to the old primary, and none refused
# there for a second (a worker that keeps asking its sentinel would be told
# the old primary, and refused, on every purchase).
refusals() { rcli_on redis INFO stats | awk -F: '/^total_error_replies:/ {print $2 + 0}'; }
old_quiet() {
    local before
    before=$(refusals)
    sleep 1
    [[ $(refusals) == "$before" && $(from_a) == 0 ]]
}
demoted() { [[ $(rcli_on redis ROLE | head -n 1) == slave ]]; }
epochs() { cat "$CL"/a/log/*.log | grep -c "product $P: new fence epoch"; }
# orders_per_s FROM TO: the product's orders a second, between those times.
orders_per_s() {
    sql "SELECT round(COUNT(*) / ($2 - $1)::numeric, 1) FROM orders WHERE product_id = $P
           AND created_at >= to_timestamp($1) AND created_at < to_timestamp($2)"
}
MIN_REPLICAS=(REDIS_MIN_REPLICAS=1 REDIS_MIN_REPLICAS_MAX_LAG=2)
SPLIT_S=15
revive redis2
start redis2 SERVICES="redis sentinel" REDIS_PASSWORD="$REDIS_PW" SENTINEL_PASSWORD="$SENTINEL_PW" \
    REDIS_REPLICAOF="${ADDR[redis]}:6379" SENTINEL_MONITOR="stock ${ADDR[redis]}:6379 2" \
    SENTINEL_DOWN_AFTER_MS=2000 "${MIN_REPLICAS[@]}"
start redis3 SERVICES=redis REDIS_PASSWORD="$REDIS_PW" REDIS_REPLICAOF="${ADDR[redis]}:6379" \
    "${MIN_REPLICAS[@]}"
# The running primary is given the stack's setting by CONFIG SET.
rcli_on redis CONFIG SET min-replicas-to-write 1 >/dev/null
rcli_on redis CONFIG SET min-replicas-max-lag 2 >/dev/null
same "split brain: the replicas have REDIS_MIN_REPLICAS's min-replicas-to-write and max-lag" \
    "$(rcli_on redis3 CONFIG GET min-replicas-to-write | tail -n 1)/$(rcli_on redis3 CONFIG GET min-replicas-max-lag | tail -n 1)" \
    1/2
check "split brain: the sentinels know both replicas" \
    wait_for 60 eval 'replicas_known mon 2 && replicas_known redis2 2'
P=$(new_product "HA: split brain" 100000)
start_load "$P" 8
nft_cut a "${ADDR[mon]}"
for id in $(rcli_on redis CLIENT LIST TYPE normal |
    awk -v a="addr=${ADDR[a]}:" 'index($0, a) {sub("id=", "", $1); print $1}'); do
    rcli_on redis CLIENT KILL ID "$id" >/dev/null
done
check "split brain: every worker connected again, through the old primary's sentinel" \
    wait_for 30 all_back
nft_heal a
sleep 3
epochs0=$(epochs)
t0=$(date +%s.%N)
nft_isolate_but redis "${ADDR[a]}"
# The old primary's fence counter, sampled while it is a primary (a value
# read before ROLE still said so): when it last moved is when the last lock
# was granted there. Demoted, it takes the new primary's.
(
    for ((i = 0; i < 1200; i++)); do
        now=$(date +%s.%N)
        fence=$(rcli_on redis GET "fence:product:$P")
        [[ $(rcli_on redis ROLE | head -n 1) == master ]] || break
        echo "$now $fence"
        sleep 0.1
    done
) >"$TMP/old-fence" &
sampler=$!
check "split brain: the old primary refuses writes (NOREPLICAS) while cut off from its replicas" \
    wait_for 30 refuses_writes
t_refused=$(date +%s.%N)
fence_refused=$(rcli_on redis GET "fence:product:$P")
new=
for ((i = 0; i < 300; i++)); do
    [[ -z $new ]] || break
    case $(sentinel_on mon SENTINEL get-master-addr-by-name stock | head -n 1) in
    "${ADDR[redis2]}") new=redis2 ;;
    "${ADDR[redis3]}") new=redis3 ;;
    *) sleep 0.1 ;;
    esac
done
t1=$(date +%s.%N)
check "split brain: the other sentinels promote a replica" test -n "$new"
check "split brain: selling goes on before the heal, through ${new:-the new primary}" \
    wait_for 30 eval 'test "$(sold_since "$P" "$t_refused")" -gt 0'
# Each old_quiet takes a second: 30 tries.
check "split brain: every worker left the old primary before the heal" wait_for 3 old_quiet
t_left=$(date +%s.%N)
same "split brain: no lock granted by the old primary after it refused writes" \
    "$(rcli_on redis GET "fence:product:$P")" "$fence_refused"
# The cut lasts SPLIT_S at least, so that its figures compare from run to run.
sleep "$(awk -v t0="$t0" -v now="$(date +%s.%N)" -v s="$SPLIT_S" 'BEGIN { d = t0 + s - now; print (d > 0 ? d : 0) }')"
t_heal=$(date +%s.%N)
nft_heal redis
check "split brain: healed, the old primary is made a replica" wait_for 60 demoted
t_demoted=$(date +%s.%N)
wait "$sampler"
REDIS_PRIMARY=${new:-redis2}
sleep 2
stop_load
last=$(awk 'NR > 1 && $2 != prev {t = $1} {prev = $2} END {print t}' "$TMP/old-fence")
echo "# split brain: the old primary granted locks for $(since "$t0" "${last:-$t0}") s after the cut" \
    "(refused writes after $(since "$t0" "$t_refused") s; $new named after $(since "$t0" "$t1") s;" \
    "no worker on the old primary after $(since "$t0" "$t_left") s); healed after" \
    "$(since "$t0" "$t_heal") s, the old primary a replica $(since "$t_heal" "$t_demoted") s later"
echo "# split brain: $(answered lock_lost) x 503 lock_lost of $(wc -l <"$TMP/answers") answers;" \
    "$(($(epochs) - epochs0)) new fence epochs; $(orders_per_s "$t0" "$t_heal") orders/s during" \
    "the cut ($(orders_per_s "$t_left" "$t_heal") once no worker was on the old primary)," \
    "$(orders_per_s "$(since 3 "$t0")" "$t0") in the 3 s before; $(stopped "$P" "$t0")"
check_invariants "$P" 100000

echo "# faults: $((SECONDS - t_start)) s"
reports=$(ls "$CL"/a/log/sanitizer.* 2>/dev/null)
same "sanitizers: no report from the responders" "$reports" ""
[[ -z $reports ]] || sed 's/^/#   /' $reports | head -n 40

finish
