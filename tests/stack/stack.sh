#!/usr/bin/env bash
# The private stack: PostgreSQL, Redis, the FastCGI responders (spawn-fcgi +
# multiwatch) and nginx, on loopback, with all state under one directory.
# `make run/up/down/psql/reset` and the test harnesses all go through here.
# It can also be one host of several (SERVICES, BIND): tests/cluster/ runs a
# database host, a Redis host, responder hosts and an edge with it.
#
#   stack.sh run      start, print "ready: URL", stop everything on Ctrl-C
#   stack.sh up       start and return
#   stack.sh down     stop (safe to repeat)
#   stack.sh status   what is running
#   stack.sh stop S   stop one service: nginx, app, redis, sentinel or postgres (up restarts it)
#   stack.sh psql     psql on the stack's database
#   stack.sh reset    empty the tables and seed them again
#   stack.sh prune    remove idempotency keys and purchase tokens older than
#                     24 hours (sql/prune.sql), and say how many
# psql, reset and prune find the stack's PostgreSQL where it runs, whatever
# PGPORT it was started with.
#
# Settings, from the environment:
#   RUN_DIR     state directory            (default: .run in the repository)
#   SERVICES    what this host runs        (default: postgres redis app nginx)
#               any of postgres, redis, app (both pools), nginx (in front of
#               app), edge (nginx in front of other hosts' nginx: UPSTREAMS),
#               sentinel (a Redis Sentinel: SENTINEL_MONITOR)
#   BIND        the address nginx listens on, and PostgreSQL and Redis too,
#               besides loopback (default 127.0.0.1)
#   PORT        nginx on BIND:PORT         (default 3000)
#   PGPORT      PostgreSQL's port          (default 5433)
#   REDIS_PORT  Redis's port               (default 6380)
#   WORKERS     responders in the main pool  (default 12)
#   OVERFLOW_WORKERS responders in the overflow pool (default 32)
#   PER_PRODUCT requests for one product the main pool takes at once;
#               the rest go to the overflow pool (default 2)
#   RATE_LIMIT  requests a second per client address, bursts of as many
#               again; beyond that 429 (default 0: no limit)
#   METRICS_ALLOW  an address or CIDR besides loopback that may read
#               /metrics (default 127.0.0.1)
#   STOCK_BIN   the responder binary       (default build/stock-fcgi)
# Several hosts (set only where they apply):
#   PG_ALLOW    a CIDR that may connect to PostgreSQL over TCP, with
#               PG_PASSWORD (scram-sha-256) as user postgres
#   REDIS_PASSWORD  Redis's requirepass (for any client, sockets too), and
#               what a replica or a sentinel gives its primary
#   REDIS_REPLICAOF  HOST:PORT: this Redis starts as that primary's replica
#   REDIS_MIN_REPLICAS  as a primary, this Redis refuses writes unless that
#               many replicas acknowledged lately (default 0: never refuses)
#   REDIS_MIN_REPLICAS_MAX_LAG  "lately": within that many seconds (default 2)
#   SENTINEL_MONITOR "NAME HOST:PORT QUORUM": the primary a sentinel watches
#   SENTINEL_PORT   the sentinel's port (default 26379)
#   SENTINEL_PASSWORD  the sentinel's own requirepass (the same on every
#               sentinel: they use it with each other); responders give it
#               as REDIS_SENTINEL_PASSWORD
#   SENTINEL_DOWN_AFTER_MS  how long a primary may not answer before the
#               sentinels fail it over (default 5000)
#   REAL_IP_FROM    the edges' addresses or CIDRs, space-separated: nginx
#               takes the client's address from their X-Real-IP (default
#               unix:, none)
#   UPSTREAMS   edge: the hosts' nginx, "ADDR:PORT ADDR:PORT..."
#   FAIL_TIMEOUT edge: how long a failed host stays out (default 5s)
# The responder's own settings (LOCK_TTL_MS, LOCK_WAIT_MS, LOG_LEVEL, ...)
# pass through to it. DATABASE_URL and REDIS_URL are set here to the stack's
# unix sockets when this stack runs PostgreSQL or Redis; otherwise they are
# required, and passed through.
#
# PostgreSQL refuses to run as root, so as root every daemon of the stack
# runs as the `postgres` account (created by Debian's postgresql package):
# one account keeps the FastCGI socket at mode 0660 with nginx as its only
# other user.
set -Eeuo pipefail
# A command that fails where no message was planned still gets a line that
# names it (make's own "Error 1" names nothing), and exit status 70; a
# failure this script foresaw (die) says what failed and what to do on its
# last line, and exits 1. The Makefile adds its own last line after 70 only.
trap 'echo "stack: failed unexpectedly: $BASH_COMMAND (line $LINENO of $0)" >&2; exit 70' ERR

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CALLER_DIR=$PWD
DB_NAME=redisdistributedlock

# The last word of a failure: a start that fails half-way (ON_DIE) stops
# what it started first, so that this line comes last.
die() {
    if [[ -n ${ON_DIE:-} ]]; then
        local cleanup=$ON_DIE
        ON_DIE=
        trap - EXIT
        $cleanup
    fi
    echo "stack: $*" >&2
    exit 1
}

# The stack's own settings, as the header above lists them.
STACK_SETTINGS="RUN_DIR SERVICES BIND PORT PGPORT REDIS_PORT WORKERS OVERFLOW_WORKERS PER_PRODUCT
    RATE_LIMIT METRICS_ALLOW STOCK_BIN PG_ALLOW PG_PASSWORD REDIS_PASSWORD REDIS_REPLICAOF
    REDIS_MIN_REPLICAS REDIS_MIN_REPLICAS_MAX_LAG
    SENTINEL_MONITOR SENTINEL_PORT SENTINEL_PASSWORD SENTINEL_DOWN_AFTER_MS REAL_IP_FROM
    UPSTREAMS FAIL_TIMEOUT"

# A warning for each variable in the environment whose name looks like a
# misspelt setting of the stack's, which would be ignored without a word:
# within two slips of one (a letter wrong, missing or extra, two swapped;
# case ignored), one for a name shorter than 8. The responder warns of its
# own settings (stock-fcgi --check-config, which up runs).
warn_misspelt() {
    compgen -e | awk -v known="$STACK_SETTINGS" '
        # The optimal string alignment distance, case ignored.
        function distance(a, b,    la, lb, i, j, d, v) {
            a = toupper(a); b = toupper(b); la = length(a); lb = length(b)
            for (i = 0; i <= la; i++) d[i, 0] = i
            for (j = 0; j <= lb; j++) d[0, j] = j
            for (i = 1; i <= la; i++)
                for (j = 1; j <= lb; j++) {
                    v = d[i - 1, j - 1] + (substr(a, i, 1) != substr(b, j, 1))
                    if (d[i - 1, j] + 1 < v) v = d[i - 1, j] + 1
                    if (d[i, j - 1] + 1 < v) v = d[i, j - 1] + 1
                    if (i > 1 && j > 1 && substr(a, i, 1) == substr(b, j - 1, 1) &&
                        substr(a, i - 1, 1) == substr(b, j, 1) && d[i - 2, j - 2] + 1 < v)
                        v = d[i - 2, j - 2] + 1
                    d[i, j] = v
                }
            return d[la, lb]
        }
        BEGIN { n = split(known, k, /[ \n]+/); for (i = 1; i <= n; i++) is[k[i]] = 1 }
        !($0 in is) && length($0) <= 64 {
            best = 3
            for (i = 1; i <= n; i++) {
                d = distance($0, k[i])
                if (d < best && d <= (length(k[i]) >= 8 ? 2 : 1)) { best = d; near = k[i] }
            }
            if (best < 3)
                printf "stack: warning: %s is not a setting (ignored): did you mean %s?\n", $0, near
        }' >&2
}

# A whole number within bounds into the variable NAME, or a clear message
# naming it (and its unit, if any).
setting() {
    local name=$1 def=$2 min=$3 max=$4 unit=${5:+ of $5} value
    value=${!name:-$def}
    [[ $value =~ ^[0-9]{1,6}$ ]] && ((10#$value >= min && 10#$value <= max)) ||
        die "$name must be a whole number$unit from $min to $max (got '$value')"
    printf -v "$name" '%d' "$((10#$value))"
}

# (Not before the usage text.)
[[ ${1:-} == @(run|up|down|status|stop|psql|reset|prune) ]] && warn_misspelt
# Whether PGPORT was given: psql, reset and prune follow the running stack's.
PGPORT_GIVEN=${PGPORT:+yes}
setting PORT 3000 1 65535
setting PGPORT 5433 1 65535
setting REDIS_PORT 6380 1 65535
setting WORKERS 12 1 256
setting OVERFLOW_WORKERS 32 1 256
setting PER_PRODUCT 2 1 256
setting RATE_LIMIT 0 0 100000
METRICS_ALLOW=${METRICS_ALLOW:-127.0.0.1}
SERVICES=${SERVICES:-postgres redis app nginx}
BIND=${BIND:-127.0.0.1}
[[ $BIND =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "BIND must be an IPv4 address (got '$BIND')"
for s in $SERVICES; do
    [[ $s =~ ^(postgres|redis|app|nginx|edge|sentinel)$ ]] ||
        die "SERVICES: '$s' is not one of postgres, redis, app, nginx, edge, sentinel"
done
# "runs S": whether this stack runs service S.
runs() { [[ " $SERVICES " == *" $1 "* ]]; }
! runs nginx || ! runs edge || die "SERVICES: nginx and edge are two roles of one nginx; choose one"
if runs app; then
    runs postgres || [[ -n ${DATABASE_URL:-} ]] || die "SERVICES has app without postgres: set DATABASE_URL"
    runs redis || [[ -n ${REDIS_URL:-} ]] || die "SERVICES has app without redis: set REDIS_URL"
fi
! runs edge || [[ -n ${UPSTREAMS:-} ]] || die "SERVICES has edge: set UPSTREAMS"
[[ -z ${REDIS_REPLICAOF:-} || $REDIS_REPLICAOF =~ ^[0-9.]+:[0-9]{1,5}$ ]] ||
    die "REDIS_REPLICAOF must be HOST:PORT (got '$REDIS_REPLICAOF')"
! runs sentinel || [[ ${SENTINEL_MONITOR:-} =~ ^[A-Za-z0-9._-]+\ [0-9.]+:[0-9]{1,5}\ [0-9]{1,2}$ ]] ||
    die "SERVICES has sentinel: set SENTINEL_MONITOR to \"NAME HOST:PORT QUORUM\""
setting REDIS_MIN_REPLICAS 0 0 16
setting REDIS_MIN_REPLICAS_MAX_LAG 2 1 3600 seconds
setting SENTINEL_PORT 26379 1 65535
setting SENTINEL_DOWN_AFTER_MS 5000 100 600000 milliseconds
[[ -z ${PG_ALLOW:-} || -n ${PG_PASSWORD:-} ]] || die "PG_ALLOW needs PG_PASSWORD"
# Passwords go into URLs and configuration files as they are: characters
# that need no quoting or escaping anywhere.
for name in PG_PASSWORD REDIS_PASSWORD SENTINEL_PASSWORD; do
    [[ -z ${!name:-} || ${!name} =~ ^[A-Za-z0-9._~-]{12,128}$ ]] ||
        die "$name must be 12 to 128 letters, digits or . _ ~ -"
done
# redis-cli reads the password from here, not from its command line.
[[ -z ${REDIS_PASSWORD:-} ]] || export REDISCLI_AUTH=$REDIS_PASSWORD
STOCK_BIN=$(realpath -m "${STOCK_BIN:-$ROOT/build/stock-fcgi}")

if [[ $(id -u) -eq 0 ]]; then
    STACK_USER=postgres
    id "$STACK_USER" >/dev/null 2>&1 || die "user '$STACK_USER' is missing: run 'make deps' first"
    AS_USER=(setpriv --reuid="$STACK_USER" --regid="$STACK_USER" --init-groups --)
else
    STACK_USER=$(id -un)
    AS_USER=()
fi
as_user() { "${AS_USER[@]}" "$@"; }

# The state directory. Only the commands that start something create it (and,
# as root, hand what they create to the stack's user); the others just look.
# When root uses the default .run in a checkout the stack's account cannot
# enter (under /root, say), .run becomes a link to a directory under /var/tmp.
prepare_run_dir() {
    local create=$1 dir=${RUN_DIR:-$ROOT/.run} d
    if [[ ! -e $dir ]]; then
        [[ $create == yes ]] || return 1
        mkdir -p "$dir"
        [[ $(id -u) -eq 0 ]] && chown "$STACK_USER:" "$dir"
        if ! as_user test -w "$dir" && [[ -z ${RUN_DIR:-} ]]; then
            local alt
            alt=/var/tmp/redisdistributedlock-$(printf '%s' "$ROOT" | md5sum | cut -c1-12)
            [[ -d $alt ]] || install -d -o "$STACK_USER" "$alt"
            rmdir "$dir"
            ln -s "$alt" "$dir"
        fi
    fi
    RUN=$(cd "$dir" && pwd -P)
    SOCK=$RUN/sock
    LOG=$RUN/log
    PGDATA=$RUN/pgdata
    # The daemons start from here: the stack's user may not enter the caller's
    # directory (initdb and pg_ctl complain if they cannot).
    cd "$RUN"
    [[ $create == yes ]] || return 0
    as_user test -w "$RUN" || die "$STACK_USER cannot write to $RUN (as root, the stack runs as $STACK_USER)"
    # sun_path holds 108 bytes; the longest socket is .s.PGSQL.<port>.lock.
    ((${#SOCK} <= 80)) || die "$SOCK is too long for a unix socket path: set RUN_DIR to a shorter path"
    for d in "$SOCK" "$LOG" "$RUN/redis" "$RUN/nginx" "$RUN/bin"; do
        [[ -d $d ]] || install -d -o "$STACK_USER" "$d"
    done
    chmod 700 "$SOCK"
}

# A libpq connection string for the stack's database; values are quoted, so
# a directory with spaces works.
conninfo() {
    local host=${SOCK//\\/\\\\}
    host=${host//\'/\\\'}
    printf "host='%s' port=%s user=postgres dbname=%s" "$host" "$PGPORT" "$1"
}

# PostgreSQL's server binaries (the newest installed) in PG_BIN; 1 if none.
# Not a command substitution: its die would be a subshell's, followed by a
# "failed unexpectedly" line.
find_pg_bin() {
    [[ -n ${PG_BIN:-} ]] && return 0
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1) || true
    [[ -x $PG_BIN/pg_ctl ]] || { PG_BIN= && return 1; }
}

need_pg_bin() {
    find_pg_bin || die "PostgreSQL server binaries not found: run 'make deps'"
}

# True while pid runs (a zombie, already exited, does not count).
alive() {
    local pid=$1 state
    [[ -n $pid && -r /proc/$pid/stat ]] || return 1
    state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
    [[ -n $state && $state != Z ]]
}

pid_of() {
    [[ -r $1 ]] && head -n 1 "$1" || true
}

# Sends sig to the process in pidfile and waits up to secs for it to go.
stop_pid() {
    local pidfile=$1 sig=$2 secs=$3 name=$4 pid i
    pid=$(pid_of "$pidfile")
    alive "$pid" || { rm -f "$pidfile"; return 0; }
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        alive "$pid" || { rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    echo "stack: $name did not stop within ${secs}s; killing it" >&2
    # Its children first (multiwatch's workers), or they would outlive it.
    local child
    for child in $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
        kill -KILL "$child" 2>/dev/null || true
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

psql_stack() {
    PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "$(conninfo "$1")" "${@:2}"
}

pg_running() {
    find_pg_bin || return 1
    as_user "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

# The port of the stack's PostgreSQL, for psql, reset and prune: the running
# server's (its postmaster.pid records it, line 4), so that a stack started
# with another PGPORT is found without it; when none runs, PGPORT if given,
# else the port it last ran on (stack.conf, written at every start).
find_pgport() {
    local port=
    if pg_running && [[ -r $PGDATA/postmaster.pid ]]; then
        port=$(sed -n 4p "$PGDATA/postmaster.pid")
    elif [[ -z $PGPORT_GIVEN && -r $PGDATA/stack.conf ]]; then
        port=$(sed -n 's/^port = //p' "$PGDATA/stack.conf")
    fi
    if [[ $port =~ ^[0-9]{1,5}$ ]]; then PGPORT=$port; fi
}

start_postgres() {
    pg_running && return 0
    need_pg_bin
    local fresh=no
    if [[ ! -f $PGDATA/PG_VERSION ]]; then
        fresh=yes
        echo "stack: creating the database cluster in $PGDATA"
        as_user "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C \
            --no-sync >"$LOG/initdb.log" 2>&1 || die "initdb failed: see $LOG/initdb.log"
        echo "include_if_exists = 'stack.conf'" >>"$PGDATA/postgresql.conf"
    fi
    # Rewritten on every start, so changing PGPORT just works.
    local listen=127.0.0.1
    [[ $BIND == 127.0.0.1 ]] || listen+=",$BIND"
    cat >"$PGDATA/stack.conf" <<CONF
listen_addresses = '$listen'
port = $PGPORT
unix_socket_directories = '$SOCK'
max_connections = 200
hba_file = '$PGDATA/stack_hba.conf'
CONF
    # initdb's rules (trust on the socket and loopback), and PG_ALLOW with a
    # password: another host's responders.
    grep -v '^#' "$PGDATA/pg_hba.conf" | grep . >"$PGDATA/stack_hba.conf"
    [[ -z ${PG_ALLOW:-} ]] || echo "host all postgres $PG_ALLOW scram-sha-256" >>"$PGDATA/stack_hba.conf"
    [[ $(id -u) -eq 0 ]] && chown "$STACK_USER:" "$PGDATA/stack.conf" "$PGDATA/stack_hba.conf"
    as_user "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOG/postgres.log" -w -t 60 start >/dev/null ||
        die "PostgreSQL did not start: see $LOG/postgres.log"
    STARTED+=(postgres)
    if [[ $fresh == yes ]]; then
        psql_stack postgres -c "CREATE DATABASE $DB_NAME"
        psql_stack "$DB_NAME" -f "$ROOT/sql/schema.sql"
        psql_stack "$DB_NAME" -f "$ROOT/sql/seed.sql"
    else
        psql_stack "$DB_NAME" -f "$ROOT/sql/schema.sql" # adds whatever a newer schema has
    fi
    if [[ -n ${PG_PASSWORD:-} ]]; then
        # On stdin, so the password is in no process list (it has no quote:
        # checked above).
        printf '%s\n' "SET password_encryption = 'scram-sha-256';" \
            "ALTER ROLE postgres PASSWORD '$PG_PASSWORD';" | psql_stack postgres >/dev/null
    fi
}

stop_postgres() {
    [[ -f $PGDATA/PG_VERSION ]] && pg_running || return 0
    as_user "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null || true
}

redis_cli() {
    redis-cli -s "$SOCK/redis.sock" "$@"
}

start_redis() {
    local i
    alive "$(pid_of "$RUN/redis.pid")" && return 0
    # Locks are leases that must not outlive a restart: no persistence.
    local bind=127.0.0.1
    [[ $BIND == 127.0.0.1 ]] || bind+=" $BIND"
    # Made unreadable before the password goes in.
    install -m 600 /dev/null "$RUN/redis/redis.conf"
    cat >"$RUN/redis/redis.conf" <<CONF
bind $bind
port $REDIS_PORT
unixsocket "$SOCK/redis.sock"
unixsocketperm 700
save ""
appendonly no
dir "$RUN/redis"
daemonize yes
pidfile "$RUN/redis.pid"
logfile "$LOG/redis.log"
min-replicas-to-write $REDIS_MIN_REPLICAS
min-replicas-max-lag $REDIS_MIN_REPLICAS_MAX_LAG
CONF
    # The password stays out of the process list, in the 0600 config file;
    # a replica gives it to its primary (and any Redis may become a replica
    # after a failover).
    [[ -z ${REDIS_PASSWORD:-} ]] ||
        printf 'requirepass "%s"\nmasterauth "%s"\n' "$REDIS_PASSWORD" "$REDIS_PASSWORD" \
            >>"$RUN/redis/redis.conf"
    [[ -z ${REDIS_REPLICAOF:-} ]] ||
        echo "replicaof ${REDIS_REPLICAOF%:*} ${REDIS_REPLICAOF##*:}" >>"$RUN/redis/redis.conf"
    [[ $(id -u) -eq 0 ]] && chown "$STACK_USER:" "$RUN/redis/redis.conf"
    as_user redis-server "$RUN/redis/redis.conf" || die "Redis did not start: see $LOG/redis.log"
    STARTED+=(redis)
    for ((i = 0; i < 100; i++)); do
        [[ $(redis_cli ping 2>/dev/null) == PONG ]] && return 0
        sleep 0.1
    done
    die "Redis did not answer: see $LOG/redis.log"
}

# A Redis Sentinel watching SENTINEL_MONITOR's primary. Its configuration
# file is its own to rewrite (it records what it learns there), 0600.
start_sentinel() {
    local i name addr quorum
    alive "$(pid_of "$RUN/sentinel.pid")" && return 0
    read -r name addr quorum <<<"$SENTINEL_MONITOR"
    install -d -o "$STACK_USER" "$RUN/sentinel"
    install -m 600 -o "$STACK_USER" /dev/null "$RUN/sentinel/sentinel.conf"
    cat >"$RUN/sentinel/sentinel.conf" <<CONF
bind 127.0.0.1 $BIND
port $SENTINEL_PORT
dir "$RUN/sentinel"
daemonize yes
pidfile "$RUN/sentinel.pid"
logfile "$LOG/sentinel.log"
sentinel monitor $name ${addr%:*} ${addr##*:} $quorum
sentinel down-after-milliseconds $name $SENTINEL_DOWN_AFTER_MS
sentinel failover-timeout $name $((SENTINEL_DOWN_AFTER_MS * 10))
CONF
    [[ -z ${REDIS_PASSWORD:-} ]] ||
        printf 'sentinel auth-pass %s "%s"\n' "$name" "$REDIS_PASSWORD" >>"$RUN/sentinel/sentinel.conf"
    [[ -z ${SENTINEL_PASSWORD:-} ]] ||
        printf 'requirepass "%s"\n' "$SENTINEL_PASSWORD" >>"$RUN/sentinel/sentinel.conf"
    as_user redis-server "$RUN/sentinel/sentinel.conf" --sentinel ||
        die "the sentinel did not start: see $LOG/sentinel.log"
    STARTED+=(sentinel)
    for ((i = 0; i < 100; i++)); do
        [[ $(REDISCLI_AUTH=${SENTINEL_PASSWORD:-} redis-cli -h 127.0.0.1 -p "$SENTINEL_PORT" ping \
            2>/dev/null) == PONG ]] && return 0
        sleep 0.1
    done
    die "the sentinel did not answer: see $LOG/sentinel.log"
}

# One pool of responders: spawn-fcgi binds the socket (0660, the stack
# user's) and execs multiwatch, which forks the responders and replaces any
# that dies (a worker dying within 1 s of its start counts as a failed start;
# after 3 of those in a row multiwatch gives up on that slot instead of
# crash-looping). A first SIGTERM to multiwatch becomes SIGUSR1 to each
# responder: finish, then exit.
start_pool() {
    local name=$1 count=$2 i
    alive "$(pid_of "$RUN/$name.pid")" && return 0
    rm -f "$SOCK/$name.sock"
    setsid "${AS_USER[@]}" spawn-fcgi -n -s "$SOCK/$name.sock" -M 0660 -- \
        "$(command -v multiwatch)" -f "$count" -r 3 -t 1000 -- "$RUN/bin/stock-fcgi" \
        </dev/null >>"$LOG/app.log" 2>&1 &
    echo $! >"$RUN/$name.pid"
    STARTED+=("pool:$name")
    for ((i = 0; i < 100; i++)); do
        [[ -S $SOCK/$name.sock ]] && return 0
        alive "$!" || break
        sleep 0.1
    done
    tail -n 20 "$LOG/app.log" >&2
    die "the $name pool did not start: see $LOG/app.log"
}

# The main pool (app) and the overflow pool (see nginx/stock-api.conf.in),
# both logging to app.log.
start_app() {
    alive "$(pid_of "$RUN/app.pid")" && alive "$(pid_of "$RUN/overflow.pid")" && return 0
    install -m 755 "$STOCK_BIN" "$RUN/bin/stock-fcgi"
    if runs postgres; then
        DATABASE_URL=$(conninfo "$DB_NAME")
    fi
    if runs redis; then
        REDIS_URL="unix://$SOCK/redis.sock"
        # A unix:// URL has no place for a password.
        [[ -z ${REDIS_PASSWORD:-} ]] || REDIS_URL="redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT"
    fi
    export DATABASE_URL REDIS_URL
    # A bad setting fails here with its message, not as a crash loop.
    as_user "$RUN/bin/stock-fcgi" --check-config >/dev/null ||
        die "the responder cannot start: its 'stock-fcgi:' line above says why"
    # Fresh counters for fresh pools (see include/metrics.h), unless one
    # pool still runs and counts in the file.
    alive "$(pid_of "$RUN/app.pid")" || alive "$(pid_of "$RUN/overflow.pid")" ||
        rm -f "$SOCK"/metrics.*
    start_pool app "$WORKERS"
    start_pool overflow "$OVERFLOW_WORKERS"
}

# nginx in front of this host's pools, or (SERVICES has edge) of UPSTREAMS.
start_nginx() {
    alive "$(pid_of "$RUN/nginx/nginx.pid")" && return 0
    local site=(SITE=stock-api "FCGI_SOCKET=$SOCK/app.sock" "FCGI_OVERFLOW_SOCKET=$SOCK/overflow.sock")
    runs edge && site=(SITE=edge "UPSTREAMS=$UPSTREAMS" "FAIL_TIMEOUT=${FAIL_TIMEOUT:-5s}")
    "$ROOT/nginx/render.sh" "$RUN/nginx" "${site[@]}" "LISTEN=$BIND:$PORT" \
        "PER_PRODUCT=$PER_PRODUCT" "RATE_LIMIT=$RATE_LIMIT" "METRICS_ALLOW=$METRICS_ALLOW" \
        "REAL_IP_FROM=${REAL_IP_FROM:-unix:}" \
        "RUN_DIR=$RUN/nginx" "ERROR_LOG=$LOG/nginx-error.log" "ACCESS_LOG=$LOG/nginx-access.log"
    as_user nginx -e "$LOG/nginx-error.log" -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" ||
        die "nginx did not start (is port $PORT free?): see $LOG/nginx-error.log"
    STARTED+=(nginx)
}

wait_ready() {
    local url=http://$BIND:$PORT/healthz i
    for ((i = 0; i < 300; i++)); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null) == 200 ]]; then
            echo "ready: http://$BIND:$PORT"
            return 0
        fi
        sleep 0.1
    done
    curl -s "$url" >&2 || true
    die "$url did not answer 200 within 30s: see the logs in $LOG"
}

# Starts whatever is not running yet. A start that fails half-way stops what
# this call started, and leaves alone what was running before.
up() {
    STARTED=()
    ON_DIE=start_failed
    trap start_failed EXIT
    runs postgres && start_postgres
    runs redis && start_redis
    runs sentinel && start_sentinel
    runs app && start_app
    if runs nginx || runs edge; then
        start_nginx
        wait_ready
    fi
    trap - EXIT
    ON_DIE=
}

start_failed() {
    echo "stack: start failed; stopping what was started" >&2
    stop_started
}

stop_started() {
    local i
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        case ${STARTED[i]} in
        pool:*) stop_pool "${STARTED[i]#pool:}" ;;
        *) stop "${STARTED[i]}" ;;
        esac
    done
}

# The socket goes first: a request arriving now gets a definite
# "unavailable" from nginx, not one left queued when the pool exits.
stop_pool() {
    rm -f "$SOCK/$1.sock"
    stop_pid "$RUN/$1.pid" TERM 15 "the $1 pool"
}

stop() {
    case ${1:-} in
    nginx) stop_pid "$RUN/nginx/nginx.pid" QUIT 10 nginx ;;
    app) # both pools, side by side
        stop_pool app &
        stop_pool overflow
        wait
        ;;
    redis) stop_pid "$RUN/redis.pid" TERM 10 redis ;;
    sentinel) stop_pid "$RUN/sentinel.pid" TERM 10 sentinel ;;
    postgres) stop_postgres ;;
    *) die "stop what? nginx, app, redis, sentinel or postgres" ;;
    esac
}

down() {
    local s
    for s in nginx app sentinel redis postgres; do stop "$s"; done
}

status() {
    local name pidfile
    for name in nginx app overflow redis sentinel; do
        case $name in
        nginx) pidfile=$RUN/nginx/nginx.pid ;;
        *) pidfile=$RUN/$name.pid ;;
        esac
        if alive "$(pid_of "$pidfile")"; then echo "$name: running"; else echo "$name: stopped"; fi
    done
    if pg_running; then echo "postgres: running"; else echo "postgres: stopped"; fi
}

# Whether every service this stack runs is still running.
all_running() {
    { runs nginx || runs edge; } && ! alive "$(pid_of "$RUN/nginx/nginx.pid")" && return 1
    runs app && ! { alive "$(pid_of "$RUN/app.pid")" && alive "$(pid_of "$RUN/overflow.pid")"; } && return 1
    runs redis && ! alive "$(pid_of "$RUN/redis.pid")" && return 1
    runs sentinel && ! alive "$(pid_of "$RUN/sentinel.pid")" && return 1
    runs postgres && ! pg_running && return 1
    return 0
}

# Foreground: serve until Ctrl-C (or until a daemon dies), then stop all.
run() {
    if alive "$(pid_of "$RUN/nginx/nginx.pid")"; then
        die "already running on port $PORT (make down stops it)"
    fi
    up
    trap 'echo; echo "stack: stopping"; down; exit 0' INT TERM
    echo "Try: curl -X POST http://$BIND:$PORT/buy/1 -H 'Content-Type: application/json' -d '{\"amount\": 1}'"
    echo "Ctrl-C stops everything. Logs: $LOG"
    while sleep 1; do
        if ! all_running; then
            echo "stack: a service stopped unexpectedly; stopping the rest (logs: $LOG)" >&2
            down
            exit 1
        fi
    done
}

reset() {
    local was_running=no
    pg_running && was_running=yes
    start_postgres
    psql_stack "$DB_NAME" -f "$ROOT/sql/reset.sql" -f "$ROOT/sql/seed.sql"
    # Any lock left by a crashed purchase refers to the old rows.
    if alive "$(pid_of "$RUN/redis.pid")"; then redis_cli flushall >/dev/null; fi
    [[ $was_running == yes ]] || stop_postgres
    echo "stack: database reseeded"
}

# sql/prune.sql, and how many rows it removed from each table: psql echoes
# each statement (-e) before its command tag ("DELETE 3").
prune() {
    local out
    out=$(PGOPTIONS='-c client_min_messages=warning' psql -X -e -v ON_ERROR_STOP=1 \
        "$(conninfo "$DB_NAME")" -f "$ROOT/sql/prune.sql")
    awk '/^DELETE FROM [a-z_]+/ { table = $3; gsub(/_/, " ", table) }
        /^DELETE [0-9]+$/ { done = done sep table " " $2; sep = ", " }
        END { print "stack: pruned what was older than 24 hours: " done }' <<<"$out"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
run | up) prepare_run_dir yes ;;
reset)
    prepare_run_dir yes
    find_pgport
    ;;
down | status | stop | psql | prune)
    if ! prepare_run_dir no; then # no state directory: nothing was ever started here
        [[ $cmd == psql || $cmd == prune ]] && die "the stack is not running: start it with make up"
        [[ $cmd == status ]] && echo "not running (no ${RUN_DIR:-.run} yet)"
        exit 0
    fi
    ;;
esac
case $cmd in
run) run ;;
up) up ;;
down) down ;;
status) status ;;
stop) stop "$@" ;;
psql | prune)
    pg_running || die "the stack is not running: start it with make up"
    find_pgport
    if [[ $cmd == prune ]]; then
        prune
    else
        cd "$CALLER_DIR" # so \i and \o paths mean what the user expects
        psql "$(conninfo "$DB_NAME")" "$@"
    fi
    ;;
reset) reset ;;
*)
    sed -n '2,/^set -/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
