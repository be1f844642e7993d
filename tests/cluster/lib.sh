# lib.sh -- hosts as network namespaces, for cluster.sh, ha.sh and bench.sh.
#
# Each host is a namespace with one veth (eth0, its address in ADDR) to a
# bridge in a namespace of its own ($NS-br), and its own loopback. A host's
# services are a tests/stack/stack.sh of their own (SERVICES), with state in
# $CL/<host>. Nothing exists outside the namespaces but files under $CL:
# teardown kills every process in them, by PID, and deletes them.
#
# The caller sets ROOT and STOCK_BIN, may add hosts to ADDR before
# network_up, and calls teardown "$NS" on exit.

NET=10.77.0
declare -A ADDR=([edge]=$NET.1 [a]=$NET.2 [b]=$NET.3 [redis]=$NET.4 [pg]=$NET.5 [client]=$NET.10)
NS=stockcl$$ # namespaces: $NS-br (the bridge), $NS-edge, $NS-a, ...
CL=$(mktemp -d /tmp/stock-cluster.XXXXXX)
chmod 755 "$CL"
PG_PW=pg-$(od -An -tx8 -N8 /dev/urandom | tr -d ' ')
REDIS_PW=redis-$(od -An -tx8 -N8 /dev/urandom | tr -d ' ')
LOCK_TTL_MS=${LOCK_TTL_MS:-5000}
STACK=$ROOT/tests/stack/stack.sh

on() { # HOST COMMAND...: runs it on that host
    local host=$1
    shift
    ip netns exec "$NS-$host" "$@"
}

# teardown PREFIX: every process in the namespaces named PREFIX-*, by PID,
# until none is left (a supervisor such as pg_autoctl may start one as the
# others die), then the namespaces.
teardown() {
    local ns pid pass left
    for ((pass = 0; pass < 10; pass++)); do
        left=0
        for ns in $(ip netns list | awk -v p="$1-" 'index($1, p) == 1 {print $1}'); do
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                kill -KILL "$pid" 2>/dev/null
                left=1
            done
        done
        ((left)) || break
        sleep 0.1
    done
    for ns in $(ip netns list | awk -v p="$1-" 'index($1, p) == 1 {print $1}'); do
        ip netns del "$ns" 2>/dev/null
    done
}

# The prefixes of namespaces whose run is gone (killed before its cleanup).
leftovers() {
    ip netns list | awk '{print $1}' | grep -E '^stockcl[0-9]+-' | sed 's/-.*//' | sort -u |
        while read -r prefix; do
            kill -0 "${prefix#stockcl}" 2>/dev/null || echo "$prefix"
        done
}

network_up() {
    local host
    ip netns add "$NS-br" &&
        ip -n "$NS-br" link add br0 type bridge &&
        ip -n "$NS-br" link set br0 up || return 1
    for host in "${!ADDR[@]}"; do
        ip netns add "$NS-$host" &&
            ip -n "$NS-br" link add "v-$host" type veth peer name eth0 netns "$NS-$host" &&
            ip -n "$NS-br" link set "v-$host" master br0 up &&
            ip -n "$NS-$host" addr add "${ADDR[$host]}/24" dev eth0 &&
            ip -n "$NS-$host" link set eth0 up &&
            ip -n "$NS-$host" link set lo up || return 1
    done
}

# start HOST SETTINGS...: the stack of one host, in its namespace. On
# failure, its output and logs, as TAP comments.
start() {
    local host=$1
    shift
    on "$host" env RUN_DIR="$CL/$host" BIND="${ADDR[$host]}" PORT=3000 PGPORT=5432 \
        REDIS_PORT=6379 STOCK_BIN="$STOCK_BIN" LOCK_TTL_MS="$LOCK_TTL_MS" \
        ASAN_OPTIONS="detect_leaks=1:log_path=$CL/$host/log/sanitizer" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$CL/$host/log/sanitizer" \
        "$@" "$STACK" up >"$CL/$host.start" 2>&1 || {
        sed 's/^/#   /' "$CL/$host.start" "$CL/$host"/log/*.log 2>/dev/null | tail -n 40
        return 1
    }
}

# The database and Redis hosts: PostgreSQL for the hosts' network, with a
# password; Redis with requirepass.
backends() {
    start redis SERVICES=redis REDIS_PASSWORD="$REDIS_PW" &&
        start pg SERVICES=postgres PG_ALLOW="$NET.0/24" PG_PASSWORD="$PG_PW"
}

# responders HOST DB_HOST:PORT [SETTINGS...]: a responder host (nginx and both
# pools), trusting the edges' X-Real-IP and letting them read /metrics.
responders() {
    local host=$1 db=$2
    shift 2
    start "$host" SERVICES="app nginx" \
        DATABASE_URL="postgresql://postgres:$PG_PW@$db/redisdistributedlock" \
        REDIS_URL="redis://:$REDIS_PW@${ADDR[redis]}:6379" \
        REAL_IP_FROM="$NET.0/29" METRICS_ALLOW="$NET.0/29" "$@"
}

# host_cpu HOST: CPU seconds used so far by every process on the host.
host_cpu() {
    local pid ticks=0 t
    for pid in $(ip netns pids "$NS-$1" 2>/dev/null); do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) && ticks=$((ticks + t))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f\n", t / hz }'
}

# The time a fault began, and how long sales of its product stopped: from
# then to its first order, and the longest gap between orders around it.
stopped() {
    local product=$1 since=$2
    sql "SELECT round(extract(epoch FROM min(created_at) FILTER (WHERE created_at > to_timestamp($since)))
                      - $since, 2)::text || ' s to the first order after it, '
                || round(extract(epoch FROM max(gap)), 2)::text || ' s longest gap between orders'
           FROM (SELECT created_at, created_at - lag(created_at) OVER (ORDER BY id) AS gap
                   FROM orders WHERE product_id = $product) o
          WHERE created_at > to_timestamp($since - 1)"
}
# sold_since PRODUCT TIME: orders of the product begun after that time (s).
sold_since() {
    sql "SELECT COUNT(*) FROM orders WHERE product_id = $1 AND created_at > to_timestamp($2)"
}
nft_cut() { # HOST PEER: drops everything between them, in HOST's namespace
    on "$1" nft -f - <<NFT
table inet cut {
    chain in { type filter hook input priority 0; ip saddr $2 drop; }
    chain out { type filter hook output priority 0; ip daddr $2 drop; }
}
NFT
}
nft_heal() { on "$1" nft delete table inet cut; } # HOST: undoes nft_cut, nft_isolate
nft_isolate_but() { # HOST PEER: drops everything on its network link but PEER's
    on "$1" nft -f - <<NFT
table inet cut {
    chain in { type filter hook input priority 0; iifname "eth0" ip saddr != $2 drop; }
    chain out { type filter hook output priority 0; oifname "eth0" ip daddr != $2 drop; }
}
NFT
}
nft_isolate() { # HOST: drops everything on its network link (its loopback stays)
    on "$1" nft -f - <<NFT
table inet cut {
    chain in { type filter hook input priority 0; iifname "eth0" drop; }
    chain out { type filter hook output priority 0; oifname "eth0" drop; }
}
NFT
}
