#!/usr/bin/env bash
# outages.sh -- Redis or PostgreSQL down: a clear 503, nothing sold, and the
# same workers recover on their own once the service is back.
. "$(dirname "$0")/lib.sh"

P=$(new_product "Outage" 10)
pids=$(workers)

# outage SERVICE NAME: stop SERVICE, check the answers, start it again.
outage() {
    local service=$1 name=$2 other before sold_before
    [[ $service == redis ]] && other=postgres || other=redis
    sold_before=$(sold "$P")
    "$STACK" stop "$service"

    buy "/buy/$P" '{"amount": 1}'
    expect "$name down: purchase answers 503 service_unavailable" 503 service_unavailable
    APP_503=$(jq -cS . <<<"$BODY")
    same "$name down: Retry-After is sent" "$(header Retry-After)" 1
    http GET /healthz
    expect "$name down: /healthz answers 503" 503 service_unavailable
    check "$name down: /healthz names $service as down" jq -e \
        ".$service == \"down\" and .$other == \"ok\"" <<<"$BODY"
    http GET "/products/$P"
    if [[ $service == postgres ]]; then
        expect "$name down: GET /products/{id} answers 503" 503 service_unavailable
    else
        expect "$name down: GET /products/{id} still answers from PostgreSQL" 200
    fi

    "$STACK" up >/dev/null
    same "$name down: nothing was sold" "$(sold "$P")" "$sold_before"
    buy "/buy/$P" '{"amount": 1}'
    expect "$name back: the next purchase succeeds" 200
    same "$name back: exactly that unit was sold" "$(stock "$P")/$(sold "$P")" \
        "$((9 - sold_before))/$((sold_before + 1))"
    same "$name back: the same workers reconnected (no restart)" "$(workers)" "$pids"
}

outage redis Redis
outage postgres PostgreSQL
same "after both outages: 2 units sold in all" "$(sold "$P")" 2

# The responders themselves down: nginx answers for them, in the same format.
"$STACK" stop app
buy "/buy/$P" '{"amount": 1}'
expect "responders down: nginx answers 503 service_unavailable" 503 service_unavailable
same "responders down: nginx's answer is the responder's own 503" "$(jq -cS . <<<"$BODY")" "$APP_503"
same "responders down: Retry-After is sent" "$(header Retry-After)" 1
"$STACK" up >/dev/null
buy "/buy/$P" '{"amount": 1}'
expect "responders back: purchases succeed" 200
same "after all outages: 3 units sold in all" "$(sold "$P")" 3
same "no lock key is left in Redis" "$(lock_keys)" 0

# Redis out of memory (maxmemory, noeviction): it refuses the acquire
# script's first write, so the script left nothing, no lock and no queued
# purchase. 503, and nothing to ask PostgreSQL about: no purchase token is
# closed for it (a PostgreSQL down as well would have made that close, and
# the answer, "unknown").
M=$(new_product "Redis out of memory" 10)
tokens=$(sql "SELECT COUNT(*) FROM purchase_tokens")
policy=$(rcli CONFIG GET maxmemory-policy | tail -n 1)
maxmemory=$(rcli CONFIG GET maxmemory | tail -n 1)
rcli CONFIG SET maxmemory-policy noeviction >/dev/null
rcli CONFIG SET maxmemory 1 >/dev/null
buy "/buy/$M" '{"amount": 1}'
expect "Redis out of memory: 503 service_unavailable" 503 service_unavailable
same "Redis out of memory: no purchase token was closed for it" \
    "$(sql "SELECT COUNT(*) FROM purchase_tokens")" "$tokens"
rcli CONFIG SET maxmemory "$maxmemory" >/dev/null
rcli CONFIG SET maxmemory-policy "$policy" >/dev/null
same "Redis out of memory: nothing was sold" "$(sold "$M")" 0
buy "/buy/$M" '{"amount": 1}'
expect "Redis with memory again: the next purchase succeeds" 200

# nginx out of file descriptors: accepted requests it cannot open a
# connection to a pool for ("socket() failed (24: Too many open files)
# while connecting to upstream") never reached a responder. 503, which an
# edge retries on another host and counts against this one; not 500, which
# it does neither with. A lock held for 1.5 s keeps 100 buyers' connections
# open at once, two descriptors each; nginx may have 64.
D=$(new_product "nginx out of file descriptors" 1000)
"$STACK" stop nginx
(ulimit -n 64 && "$STACK" up >/dev/null)
errors_from=$(($(wc -l <"$RUN_DIR/log/nginx-error.log") + 1))
rcli SET "lock:product:$D" fake PX 1500 >/dev/null
args=()
for ((i = 0; i < 100; i++)); do
    args+=(-o "$TMP/fd.$i" -w "%{http_code} $i\n" -X POST -H 'Content-Type: application/json'
        -d '{"amount": 1}' "$BASE_URL/buy/$D")
    ((i < 99)) && args+=(--next)
done
curl -s --max-time 20 --parallel --parallel-immediate --parallel-max 100 "${args[@]}" \
    >"$TMP/fd.statuses" 2>/dev/null
statuses=$(cut -d' ' -f1 "$TMP/fd.statuses" | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
check "nginx ran out of descriptors connecting to a pool ($statuses)" \
    grep -q "socket() failed (24: Too many open files) while connecting to upstream" \
    <(tail -n "+$errors_from" "$RUN_DIR/log/nginx-error.log")
same "out of descriptors: no 500" "$(grep -c '^500 ' "$TMP/fd.statuses")" 0
unavailable=$(grep '^503 ' "$TMP/fd.statuses" | head -n 1 | cut -d' ' -f2)
check "out of descriptors: 503 service_unavailable" \
    jq -e '.code == "service_unavailable"' "$TMP/fd.${unavailable:-none}"
same "out of descriptors: every 200 was sold, and nothing else" \
    "$(sold "$D")" "$(grep -c '^200 ' "$TMP/fd.statuses")"
"$STACK" stop nginx
"$STACK" up >/dev/null

# A server that hangs (SIGSTOP: accepts connections, never answers) must not
# hang a worker: every Redis command and every PostgreSQL statement has a
# client-side deadline. curl's --max-time is the liveness bound of the test.
pause() { kill -STOP "$@"; }
resume() { kill -CONT "$@"; }
pg_pids() {
    local pm
    pm=$(head -n 1 "$RUN_DIR/pgdata/postmaster.pid")
    echo "$pm" $(cat "/proc/$pm/task/"*/children)
}

R=$(new_product "Hung Redis" 10)
pause "$(cat "$RUN_DIR/redis.pid")"
buy "/buy/$R" '{"amount": 1}' --max-time 20
expect "Redis hung: purchase answers 503 service_unavailable, no hang" 503 service_unavailable
http GET /healthz --max-time 20
check "Redis hung: /healthz names redis as down" jq -e '.redis == "down"' <<<"$BODY"
resume "$(cat "$RUN_DIR/redis.pid")"
same "Redis hung: nothing was sold" "$(sold "$R")" 0
# The SET that timed out ran when Redis woke up: a lock nobody was told
# about. It expires by its TTL at the latest; the worker that set it gives
# it back as soon as it reaches Redis again.
for ((i = 0; i < 50; i++)); do
    buy "/buy/$R" '{"amount": 1}' --max-time 20
    [[ $STATUS == 200 ]] && break
done
expect "Redis back: the product sells again" 200

# Deterministically, with a worker of our own: its SET times out, Redis
# wakes up and applies it; the worker's next request releases it.
W=$(new_product "Hung Redis, own worker" 10)
LOCK_WAIT_MS=0 start_worker
pause "$(cat "$RUN_DIR/redis.pid")"
fcgi_buy "$W" >"$TMP/answer"
check "Redis hung: the worker answers 503" grep -q '^Status: 503' "$TMP/answer"
resume "$(cat "$RUN_DIR/redis.pid")"
for ((i = 0; i < 100; i++)); do
    [[ $(rcli EXISTS "lock:product:$W") == 1 ]] && break
    sleep 0.05
done
same "Redis woke up and applied the timed-out SET" "$(rcli EXISTS "lock:product:$W")" 1
fcgi_buy "$W" >"$TMP/answer"
check "the worker's next request succeeds" grep -q '^Status: 200' "$TMP/answer"
check "it gave the left-over lock back first (with LOCK_WAIT_MS=0 it could not have waited)" \
    grep -q "released lock:product:$W, left over" "$TMP/w.log"
stop_worker

# The same behind a TCP relay (spiped, stunnel, a proxy), which no reset can
# reach: the relay has read the SET, and delivers it when its own link to
# Redis comes back, after the worker's release of that token (on a new
# connection) has found nothing. Two socats: the relay the worker talks to
# over TCP, and the far end of the relay's link to Redis, whose process for
# the worker's connection is paused (SIGSTOP) to hold what the relay sent
# it. The worker keeps releasing that token on every call until a TTL has
# passed since it sent the SET (30 s here), so its next request finds the
# lock, gives it back and buys; before, it released once, found nothing,
# and forgot it: the lock blocked the product for the whole TTL.
L=$(new_product "Relay delivers late" 10)
relay_port=$("$(dirname "$0")/../stack/free-port.sh" 1)
socat UNIX-LISTEN:"$TMP/far.sock",fork UNIX-CONNECT:"$RUN_DIR/sock/redis.sock" 2>/dev/null &
far=$!
socat TCP-LISTEN:"$relay_port",bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:"$TMP/far.sock" \
    2>/dev/null &
relay=$!
# Ready once a connection crosses both; then wait until that one's link is
# gone, so the worker's is the only one.
for ((i = 0; i < 100; i++)); do
    [[ -S $TMP/far.sock ]] && (exec 3<>"/dev/tcp/127.0.0.1/$relay_port") 2>/dev/null && break
    sleep 0.05
done
for ((i = 0; i < 100; i++)); do
    [[ -z $(cat /proc/"$far"/task/*/children 2>/dev/null) ]] && break
    sleep 0.05
done
LOCK_WAIT_MS=0 LOCK_TTL_MS=30000 WORKER_REDIS_URL=redis://127.0.0.1:$relay_port start_worker
link=$(cat /proc/"$far"/task/*/children 2>/dev/null)
check "relay: the worker's connection crosses one link" test "$(wc -w <<<"$link")" = 1
kill -STOP "$link"
fcgi_buy "$L" >"$TMP/answer"
check "relay: the link is down: the worker answers 503" grep -q '^Status: 503' "$TMP/answer"
same "relay: the SET has not reached Redis (it waits on the relay's link)" \
    "$(rcli EXISTS "lock:product:$L")" 0
kill -CONT "$link"
for ((i = 0; i < 100; i++)); do
    [[ $(rcli EXISTS "lock:product:$L") == 1 ]] && break
    sleep 0.05
done
same "relay: the link is back: the relay delivered the SET after the release" \
    "$(rcli EXISTS "lock:product:$L")" 1
fcgi_buy "$L" >"$TMP/answer"
check "relay: the worker's next request succeeds (LOCK_WAIT_MS=0: it could not have waited)" \
    grep -q '^Status: 200' "$TMP/answer"
check "relay: it gave the late lock back first" \
    grep -q "released lock:product:$L, left over" "$TMP/w.log"
same "relay: no lock is left" "$(rcli EXISTS "lock:product:$L")" 0
stop_worker
kill "$relay" "$far" 2>/dev/null
wait "$relay" "$far" 2>/dev/null

H=$(new_product "Hung PostgreSQL" 10)
pids=$(pg_pids)
# shellcheck disable=SC2086
pause $pids
buy "/buy/$H" '{"amount": 1}' --max-time 20
expect "PostgreSQL hung: purchase answers 503 service_unavailable, no hang" 503 service_unavailable
check "PostgreSQL hung: the answer is definite: no COMMIT was ever sent" jq -e \
    '.code == "service_unavailable"' <<<"$BODY"
http GET /healthz --max-time 20
check "PostgreSQL hung: /healthz names postgres as down" jq -e '.postgres == "down"' <<<"$BODY"
# shellcheck disable=SC2086
resume $pids
# The statement was already in the server's socket and runs on waking, but
# in a transaction whose COMMIT never comes: the worker dropped the
# connection, so the server rolls it back.
for ((i = 0; i < 50; i++)); do
    buy "/buy/$H" '{"amount": 1}' --max-time 20
    [[ $STATUS == 200 ]] && break
    sleep 0.1
done
expect "PostgreSQL back: the product sells again" 200
same "PostgreSQL back: only that purchase was sold, the refused one never" "$(sold "$H")" 1
same "PostgreSQL back: stock + orders = 10" "$(($(stock "$H") + $(sold "$H")))" 10

# end_sessions: ends every responder's PostgreSQL session, and waits (5 s at
# most) until they are gone.
end_sessions() {
    sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'stock-fcgi'" \
        >/dev/null
    for ((i = 0; i < 100; i++)); do
        [[ $(sql "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'stock-fcgi'") == 0 ]] &&
            break
        sleep 0.05
    done
}

# A backend ended while its worker was idle (pg_terminate_backend, a restart):
# the worker notices before its next purchase and reconnects; the purchase
# succeeds instead of failing on the dead connection.
T=$(new_product "Terminated backend" 10)
start_worker
fcgi_buy "$T" >"$TMP/answer"
check "a worker of our own buys" grep -q '^Status: 200' "$TMP/answer"
end_sessions
fcgi_buy "$T" >"$TMP/answer"
check "after its backend was terminated, its next purchase succeeds" grep -q '^Status: 200' "$TMP/answer"
stop_worker

# The session ends right after its COMMIT ran: the worker stops itself once
# the COMMIT is sent, before its Sync (fault point commit_unsynced); the
# backend commits and is then terminated, so the COMMIT's answer is followed
# by the termination notice, not by the Sync's (as when pg_terminate_backend
# lands there by chance under load). The COMMIT's success is read: that is a sale, answered 200, and
# not outcome_unknown (a client without a key would buy twice on a retry).
K=$(new_product "Terminated after COMMIT" 10)
STOCK_FAULT=commit_unsynced start_worker
fcgi_buy "$K" "after-commit-$$" >"$TMP/answer" &
buyer=$!
check "ended after COMMIT: the worker stops once its COMMIT is sent" wait_stopped
for ((i = 0; i < 100; i++)); do
    [[ $(sold "$K") == 1 ]] && break
    sleep 0.05
done
same "ended after COMMIT: PostgreSQL committed the purchase" "$(sold "$K")" 1
end_sessions
kill -CONT "$WORKER"
wait "$buyer"
check "ended after COMMIT: the answer is 200" grep -q '^Status: 200' "$TMP/answer"
grep -q '^Status: 200' "$TMP/answer" || sed 's/^/#   /' "$TMP/answer" "$TMP/w.log" | tail -n 12
same "ended after COMMIT: its key says 200 too" \
    "$(sql "SELECT status FROM idempotency_keys WHERE key = 'after-commit-$$'")" 200
stop_worker

# The connection breaks while the purchase statement runs, before its
# COMMIT was sent: nothing can have been bought, and the answer is a plain
# 503. The statement waits on a row lock (hold_row), so it is provably in
# flight; a worker of our own with a long statement_timeout keeps this free
# of timing.
Q=$(new_product "Lost connection" 10)
hold_row "$Q"
STATEMENT_TIMEOUT_MS=30000 LOCK_TTL_MS=100000 start_worker
fcgi_buy "$Q" >"$TMP/answer" &
buyer=$!
backend=$(waiting_purchase)
check "lost before COMMIT: the purchase is waiting inside PostgreSQL" test -n "$backend"
kill -KILL "$backend" # no goodbye: the client sees the socket close
wait "$buyer"
check "lost before COMMIT: the answer is 503 service_unavailable" grep -q '^Status: 503' "$TMP/answer"
check "lost before COMMIT: the answer is definite" grep -q '"code":"service_unavailable"' "$TMP/answer"
stop_worker
wait_for_postgres() { # it restarts every backend after one is killed
    for ((i = 0; i < 100; i++)); do
        sql "SELECT 1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
}
wait_for_postgres
same "lost before COMMIT: nothing was sold" "$(sold "$Q")/$(stock "$Q")" "0/10"
buy "/buy/$Q" '{"amount": 1}'
expect "lost before COMMIT: the stack's workers recover by themselves" 200

# The connection breaks during the COMMIT itself: only then is the outcome
# unknown to the worker, and the answer says so. A deferred trigger that
# sleeps holds the COMMIT open; the backend is killed while it sleeps.
U=$(new_product "Lost during COMMIT" 10)
sql "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql
         AS 'BEGIN PERFORM pg_sleep(60); RETURN NULL; END';
     CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON orders
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.product_id = $U)
         EXECUTE FUNCTION slow_commit()"
STATEMENT_TIMEOUT_MS=30000 LOCK_TTL_MS=100000 start_worker
fcgi_buy "$U" >"$TMP/answer" &
buyer=$!
for ((i = 0; i < 200; i++)); do
    backend=$(sql "SELECT pid FROM pg_stat_activity WHERE application_name = 'stock-fcgi'
                   AND query = 'COMMIT' AND wait_event = 'PgSleep'")
    [[ -n $backend ]] && break
    sleep 0.05
done
check "lost during COMMIT: the purchase is inside its COMMIT" test -n "$backend"
kill -KILL "$backend"
wait "$buyer"
check "lost during COMMIT: the answer is 504" grep -q '^Status: 504' "$TMP/answer"
check "lost during COMMIT: code outcome_unknown" grep -q '"code":"outcome_unknown"' "$TMP/answer"
stop_worker
wait_for_postgres
sql "DROP TRIGGER slow_commit ON orders; DROP FUNCTION slow_commit()"
same "lost during COMMIT: stock + orders = 10 (here it did not commit)" \
    "$(($(stock "$U") + $(sold "$U")))/$(sold "$U")" "10/0"

# A worker stalled between its purchase and its COMMIT (its link to
# PostgreSQL stopped, its VM paused) holds the product's row, and every
# other host's purchase of the product waits on it. PostgreSQL ends such a
# transaction once it is idle for statement_timeout + 500 ms, the longest
# any worker waits for an answer, not after the lock's TTL (30 s here).
# STATEMENT_TIMEOUT_MS=2000: 2.5 s, long enough to see the row held first.
I=$(new_product "Idle in transaction" 10)
row_free() {
    sql "SET lock_timeout = 100; SELECT 1 FROM products WHERE id = $I FOR UPDATE" >/dev/null 2>&1
}
STOCK_FAULT=before_commit STATEMENT_TIMEOUT_MS=2000 LOCK_TTL_MS=30000 start_worker
fcgi_buy "$I" >"$TMP/answer" &
buyer=$!
check "idle in transaction: the worker is frozen before its COMMIT" wait_stopped
frozen=$(date +%s%3N)
check "idle in transaction: meanwhile it holds the product's row" eval '! row_free'
for ((i = 0; i < 100; i++)); do
    row_free && break
    sleep 0.1
done
freed=$(($(date +%s%3N) - frozen))
check "idle in transaction: PostgreSQL ended it and freed the row after ${freed} ms (< 10 s, TTL 30 s)" \
    test "$freed" -lt 10000
kill -CONT "$WORKER"
wait "$buyer"
check "idle in transaction: woken, its COMMIT fails: a definite 503" \
    grep -q '"code":"service_unavailable"' "$TMP/answer"
grep -q '"code":"service_unavailable"' "$TMP/answer" || sed 's/^/#   /' "$TMP/answer" | tail -n 3
same "idle in transaction: nothing was sold" "$(sold "$I")/$(stock "$I")" "0/10"
stop_worker

# A COMMIT waits for a synchronous standby with no deadline of its own
# (statement_timeout is off by then): the worker's deadline makes a standby
# that never answers an outcome_unknown. An operator who cancels the wait
# (pg_cancel_backend, the usual advice) makes PostgreSQL answer the COMMIT
# with success and a warning: "committed locally, but might not have been
# replicated". A failover would lose it, so that is no 200 either: its
# outcome is unknown. Its key's replay must not make a 200 of it while the
# standby still lacks it (the replay waits for the standby too), and finds
# its order once the standby has it (here: once none is required). A worker
# of our own, with time to find and cancel the waits.
no_standby() {
    sql "ALTER SYSTEM RESET synchronous_standby_names" && sql "SELECT pg_reload_conf()" >/dev/null
}
trap 'no_standby; cleanup_suite' EXIT # the stack's other suites must not wait for "nobody"
# sync_cancelled NAME KEY: buys one unit of U with KEY while PostgreSQL
# waits for a standby named "nobody", cancels that wait, and checks the
# answer is outcome_unknown.
sync_cancelled() {
    local name=$1 key=$2 waiting buyer
    fcgi_buy "$U" "$key" >"$TMP/answer" &
    buyer=$!
    for ((i = 0; i < 80; i++)); do
        waiting=$(sql "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'
                       AND application_name = 'stock-fcgi' LIMIT 1")
        [[ -n $waiting ]] && break
        sleep 0.05
    done
    check "$name: it waits for the standby" test -n "$waiting"
    [[ -n $waiting ]] && sql "SELECT pg_cancel_backend($waiting)" >/dev/null
    wait "$buyer"
    check "$name: 504 outcome_unknown, not 200" grep -q '"code":"outcome_unknown"' "$TMP/answer"
    grep -q '"code":"outcome_unknown"' "$TMP/answer" || sed 's/^/#   /' "$TMP/answer" | tail -n 3
}
U=$(new_product "Unreplicated COMMIT" 10)
STATEMENT_TIMEOUT_MS=5000 LOCK_TTL_MS=30000 start_worker
fcgi_buy "$U" >/dev/null # the product's first sale draws its fence epoch
sql "ALTER SYSTEM SET synchronous_standby_names = 'nobody'" && sql "SELECT pg_reload_conf()" >/dev/null
sync_cancelled "a COMMIT cancelled before a standby confirmed it" "unreplicated-$$"
check "and the worker logs PostgreSQL's warning, and why it answered so" \
    grep -q "answered with a warning" "$TMP/w.log"
sync_cancelled "its key's replay, the standby still lacking it" "unreplicated-$$"
no_standby
trap cleanup_suite EXIT
fcgi_buy "$U" "unreplicated-$$" >"$TMP/answer"
check "its key's replay, once the standby has it, finds its order" grep -q '^Status: 200' "$TMP/answer"
same "unreplicated COMMIT: two units sold in all" "$(sold "$U")/$(stock "$U")" "2/8"
stop_worker

# A primary made read-only under its sessions (pg_auto_failover's guard
# while it fails over; default_transaction_read_only): a purchase is 503,
# nothing bought, and the worker opens a new session for the next one
# (target_session_attrs=read-write would send it to the new primary). Even
# when that session broke in between, the next purchase on a writable
# server is not refused for the old mark.
read_only() {
    sql "ALTER SYSTEM ${1:-RESET default_transaction_read_only}" && sql "SELECT pg_reload_conf()" >/dev/null
    sleep 0.2 # the backends apply a reload when they next wait for a command
}
O=$(new_product "Read-only primary" 10)
start_worker
fcgi_buy "$O" >/dev/null
trap 'read_only; cleanup_suite' EXIT
read_only "SET default_transaction_read_only = on"
fcgi_buy "$O" >"$TMP/answer"
check "a read-only primary: 503, nothing bought" grep -q '"code":"service_unavailable"' "$TMP/answer"
http GET /healthz
expect "a read-only primary: /healthz answers 503" 503 service_unavailable
check "and names postgres as down" jq -e '.postgres == "down" and .redis == "ok"' <<<"$BODY"
same "read-only primary: one unit sold in all" "$(sold "$O")" 1
end_sessions
read_only
trap cleanup_suite EXIT
fcgi_buy "$O" >"$TMP/answer"
check "writable again (its session broken meanwhile): the same worker buys" \
    grep -q '^Status: 200' "$TMP/answer"
http GET /healthz
expect "writable again: /healthz answers 200" 200
check "and it had opened a new session, not repaired the read-only one" \
    test "$(grep -c '"pid":'"$WORKER"',"msg":"postgres connected' "$TMP/w.log")" -ge 2
stop_worker

finish
