#!/usr/bin/env bash
# terminate-backends.sh -- every responder's PostgreSQL session ended
# (pg_terminate_backend), 15 times 0.2 s apart, under load: each answer is
# exact. A session that ends just after its COMMIT was answered still sold
# (200), one that ends before gives a definite 503; a termination notice
# carries a SQLSTATE, so no answer here needs to be outcome_unknown.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/lib.sh"

P=$(new_product "Terminated sessions" 100000)
pids=$(workers)
start_load "$P" 24
sleep 1
for ((i = 0; i < 15; i++)); do
    sql "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = 'stock-fcgi'" >/dev/null
    sleep 0.2
done
sleep 1
stop_load

same "no request hung or went unanswered" "$(answered 000)" 0
same "no answer was outcome_unknown" "$(answered outcome_unknown)" 0
last=$(tail -n 1 "$TMP/load.0" | cut -d' ' -f2)
same "purchases succeed after the last termination" "$last" 200
same "without restarting the workers" "$(workers)" "$pids"
check_invariants "$P" 100000
finish
