#!/usr/bin/env bash
# sigterm-pool.sh -- SIGTERM to both worker pools under load: the requests
# the workers had accepted complete, no lock is left behind, new requests
# get a clear 503, and the invariants hold.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/lib.sh"

P=$(new_product "SIGTERM the pool" 100000)
log_from=$(($(wc -l <"$RUN_DIR/log/app.log") + 1))
start_load "$P" 24
sleep 1.5
pools="$(cat "$RUN_DIR/app.pid") $(cat "$RUN_DIR/overflow.pid")"
kill -TERM $pools # multiwatch: SIGUSR1 to every worker
for pool in $pools; do
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pool" 2>/dev/null || break
        sleep 0.1
    done
    check "the pool ($pool) has stopped" eval "! kill -0 $pool 2>/dev/null"
done
sleep 0.5
stop_load
"$STACK" up >/dev/null

same "no request went unanswered" "$(answered 000)" 0
check "after the pool stopped, buyers got 503 service_unavailable ($(answered service_unavailable))" \
    test "$(answered service_unavailable)" -gt 0
check "every worker finished and said so" \
    test "$(tail -n "+$log_from" "$RUN_DIR/log/app.log" | grep -c 'worker stopped')" -ge $((WORKERS + OVERFLOW_WORKERS))
buy "/buy/$P" '{"amount": 1}' -H "Idempotency-Key: fault-$$-after"
expect "the pool restarted: purchases succeed" 200
check_invariants "$P" 100000
# Requests still queued in the socket when the pool exited get
# outcome_unknown from nginx; none of them may have bought anything.
same "every purchase made was answered 200: the pool finished what it accepted" \
    "$SALES_NOT_ANSWERED" 0
finish
