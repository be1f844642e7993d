#!/usr/bin/env bash
# postgres-crash.sh -- PostgreSQL stopped with "pg_ctl stop -m immediate"
# (a crash) under load: answers become 503; restarted, the workers reconnect
# and re-prepare on their own, and the invariants hold.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/lib.sh"

P=$(new_product "PostgreSQL crash" 100000)
pids=$(workers)
start_load "$P" 24
sleep 1
as_pg() { if [[ $(id -u) == 0 ]]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi; }
as_pg "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/pg_ctl" -D "$RUN_DIR/pgdata" \
    -m immediate -w stop >/dev/null
sleep 2
"$STACK" up >/dev/null
sleep 2
stop_load

check "PostgreSQL down: buyers got 503 ($(answered service_unavailable) unavailable, $(answered outcome_unknown) unknown)" \
    test "$(($(answered service_unavailable) + $(answered outcome_unknown)))" -gt 0
same "no request hung or went unanswered" "$(answered 000)" 0
last=$(tail -n 1 "$TMP/load.0" | cut -d' ' -f2)
same "PostgreSQL back: purchases succeed again" "$last" 200
same "PostgreSQL back: without restarting the workers" "$(workers)" "$pids"
check_invariants "$P" 100000
finish
