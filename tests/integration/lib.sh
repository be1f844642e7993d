# lib.sh -- sourced by every integration test: TAP output, HTTP and state
# helpers. tests/run.sh provides the environment of the stack under test:
#   BASE_URL   http://127.0.0.1:<port> (nginx)
#   RUN_DIR    the stack's directory (sockets, logs, pids)
#   PGPORT     PostgreSQL's port (names its unix socket)
#   STACK      tests/stack/stack.sh, with the stack's settings in the environment
#   STOCK_BIN  the responder binary the stack runs
set -uo pipefail

: "${BASE_URL:?} ${RUN_DIR:?} ${PGPORT:?} ${STACK:?} ${STOCK_BIN:?}"
FCGI_REQUEST=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/fcgi-request
. "$(dirname "${BASH_SOURCE[0]}")/../tap.sh"
WORKER=
TMP=$(mktemp -d)
# Whatever a suite started outside the stack (its own worker, a psql holding
# a row lock) goes with it, even when the suite dies half-way.
cleanup_suite() {
    [[ -n $WORKER ]] && kill -KILL "$WORKER" 2>/dev/null
    local job
    for job in $(jobs -p); do kill -KILL "$job" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup_suite EXIT

# check NAME COMMAND...: passes when the command succeeds (its output is dropped).
check() {
    local name=$1
    shift
    if "$@" >/dev/null; then ok "$name"; else not_ok "$name" "failed: $*"; fi
}

# verify_unit NAME FILE: systemd's own check of a unit file (unknown keys,
# bad values, missing executables); skipped where systemd-analyze is not.
verify_unit() {
    local out rc
    if ! command -v systemd-analyze >/dev/null; then
        ok "systemd-analyze verify $1 # SKIP systemd-analyze is not installed"
        return
    fi
    out=$(systemd-analyze verify "$2" 2>&1)
    rc=$?
    check "systemd-analyze verify accepts $1 (rc $rc) $out" test "$rc" = 0 -a -z "$out"
}

# same NAME GOT WANT
same() {
    if [[ $2 == "$3" ]]; then ok "$1"; else not_ok "$1" "got '$2', want '$3'"; fi
}

finish() {
    echo "1..$T_N"
    exit $((T_FAIL > 0))
}

# http METHOD PATH [curl args...]: sets STATUS and BODY; headers in $TMP/headers.
http() {
    local method=$1 path=$2
    shift 2
    STATUS=$(curl -sS -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$method" "$@" \
        "$BASE_URL$path") || STATUS=000
    BODY=$(cat "$TMP/body")
}

# buy PATH BODY [curl args...]: a purchase as the demo's curl sends it.
buy() {
    local path=$1 body=$2
    shift 2
    http POST "$path" -H 'Content-Type: application/json' --data-binary "$body" "$@"
}

header() {
    grep -i "^$1:" "$TMP/headers" | head -n 1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'
}

# expect NAME STATUS [CODE]: the last answer had STATUS; with CODE, it is an
# RFC 9457 problem (application/problem+json, type, title, status, detail)
# with that code.
expect() {
    local name=$1 status=$2 code=${3:-} why=()
    [[ $STATUS == "$status" ]] || why+=("status $STATUS, want $status")
    if [[ -n $code ]]; then
        [[ $(header Content-Type) == application/problem+json ]] ||
            why+=("Content-Type '$(header Content-Type)'")
        jq -e --arg code "$code" --argjson status "$status" '
            .code == $code and .status == $status and .type == "tag:redisdistributedlock,2026:problem:" + $code
            and (.title | type == "string") and (.detail | type == "string")' \
            <<<"$BODY" >/dev/null 2>&1 || why+=("body: $BODY")
    fi
    if ((${#why[@]})); then not_ok "$name" "${why[@]}"; else ok "$name"; fi
}

# A libpq connection string for the stack's database; values are quoted, so
# a directory with spaces works.
conninfo() {
    local host=${RUN_DIR//\\/\\\\}/sock
    host=${host//\'/\\\'}
    printf "host='%s' port=%s user=postgres dbname=redisdistributedlock %s" "$host" "$PGPORT" "$*"
}

sql() {
    psql -X -qAt -v ON_ERROR_STOP=1 "$(conninfo)" -c "$1"
}

rcli() {
    redis-cli -s "$RUN_DIR/sock/redis.sock" "$@"
}

# new_product NAME STOCK: prints the new product's id.
new_product() {
    sql "INSERT INTO products (name, amount) VALUES ('$1', $2) RETURNING id"
}

stock() {
    sql "SELECT amount FROM products WHERE id = $1"
}

sold() {
    sql "SELECT COALESCE(SUM(amount), 0) FROM orders WHERE product_id = $1"
}

# Everything a purchase could change, as one line.
snapshot() {
    sql "SELECT (SELECT SUM(amount) FROM products) || '/' || (SELECT COUNT(*) FROM orders)"
}

lock_keys() {
    rcli --scan --pattern 'lock:*' | wc -l
}

# workers [POOL...]: the responder processes (multiwatch's children) of the
# pools named (app, overflow; both by default), read from /proc so no extra
# package is needed. Fails, rather than print nothing, if none runs.
workers() {
    local list pool pools=${*:-app overflow}
    list=$(for pool in $pools; do
        cat /proc/"$(cat "$RUN_DIR/$pool.pid")"/task/*/children 2>/dev/null
    done | tr ' ' '\n' | grep . | sort -n | tr '\n' ' ')
    [[ -n $list ]] || return 1
    echo "$list"
}

# start_worker: one responder of our own under spawn-fcgi -n, on $TMP/w.sock,
# as this shell's child (WORKER is its pid; `wait` gives its exit status),
# connected to the stack's PostgreSQL and Redis (or WORKER_REDIS_URL's).
# Settings come from the environment, like LOCK_WAIT_MS.
start_worker() {
    rm -f "$TMP/w.sock"
    DATABASE_URL=$(conninfo) REDIS_URL=${WORKER_REDIS_URL:-unix://$RUN_DIR/sock/redis.sock} \
        spawn-fcgi -n -s "$TMP/w.sock" -- "$STOCK_BIN" 2>>"$TMP/w.log" &
    WORKER=$!
    # spawn-fcgi binds the socket before the responder starts: wait for the
    # responder itself to say it is ready (10 s at most). Below info it says
    # nothing: then wait until spawn-fcgi has become the responder (requests
    # queue in the socket until it accepts them).
    local quiet=0 bin
    [[ ${LOG_LEVEL:-info} == @(warn|error) ]] && quiet=1
    bin=$(readlink -f "$STOCK_BIN")
    for ((i = 0; i < 200; i++)); do
        if ((quiet)); then
            [[ $(readlink "/proc/$WORKER/exe" 2>/dev/null) == "$bin" ]] && return 0
        else
            grep -q "\"pid\":$WORKER,\"msg\":\"worker ready" "$TMP/w.log" 2>/dev/null && return 0
        fi
        sleep 0.05
    done
    return 1
}

# stop_worker [SIG]: signals start_worker's responder (TERM by default) and
# waits for it, 10 s at most: a worker that ignores the signal is killed so
# the suite cannot hang. Its exit status is in STOPPED (137 when killed).
stop_worker() {
    kill "-${1:-TERM}" "$WORKER" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$WORKER" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$WORKER" 2>/dev/null
    wait "$WORKER"
    STOPPED=$?
    WORKER=
}

# fcgi_buy ID [KEY]: buys one unit from start_worker's responder over
# FastCGI, as nginx would ask (with an Idempotency-Key if KEY is given);
# prints the raw CGI answer ("Status: 200 OK" ...) and fails unless the
# responder ended the request properly (FCGI_END_REQUEST).
fcgi_buy() {
    printf '{"amount": 1}' | "$FCGI_REQUEST" "$TMP/w.sock" REQUEST_METHOD=POST \
        DOCUMENT_URI="/buy/$1" CONTENT_TYPE=application/json CONTENT_LENGTH=13 \
        ${2:+HTTP_IDEMPOTENCY_KEY="$2"}
}

# hold NAME SQL: a psql session named NAME runs SQL in a transaction it
# keeps open until release NAME; returns once the session holds what SQL
# took (10 s at most).
hold() {
    { echo "BEGIN;"; printf '%s\n' "$2"; echo "SELECT pg_sleep(60);"; } |
        psql -X -q "$(conninfo "application_name=$1")" >/dev/null 2>&1 &
    for ((i = 0; i < 200; i++)); do
        [[ -n $(sql "SELECT pid FROM pg_stat_activity WHERE application_name = '$1'
                     AND query LIKE '%pg_sleep%'") ]] && return 0
        sleep 0.05
    done
}
release() {
    sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '$1'" \
        >/dev/null
}

# hold_row ID: a transaction in psql locks the product's row, so a purchase
# of it waits inside PostgreSQL, provably in flight, until release_row.
hold_row() { hold row-holder "SELECT 1 FROM products WHERE id = $1 FOR UPDATE;"; }
release_row() { release row-holder; }

# waiting_purchase: prints the backend pid of a responder whose statement
# waits for a row lock (empty if none shows up within 10 s).
waiting_purchase() {
    local pid
    for ((i = 0; i < 200; i++)); do
        pid=$(sql "SELECT pid FROM pg_stat_activity WHERE application_name = 'stock-fcgi'
                   AND wait_event_type = 'Lock'")
        [[ -n $pid ]] && break
        sleep 0.05
    done
    echo "$pid"
}

# wait_stopped: waits (10 s at most) until start_worker's responder has
# stopped itself at its fault point (STOCK_FAULT; state T in /proc).
wait_stopped() {
    for ((i = 0; i < 200; i++)); do
        [[ $(sed 's/^.*) //' "/proc/$WORKER/stat" 2>/dev/null | cut -d' ' -f1) == T ]] && return 0
        sleep 0.05
    done
    return 1
}

# wait_gone KEY: waits (15 s at most) until the Redis key has expired.
wait_gone() {
    for ((i = 0; i < 300; i++)); do
        [[ $(rcli EXISTS "$1") == 0 ]] && return 0
        sleep 0.05
    done
    return 1
}
