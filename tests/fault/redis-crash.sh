#!/usr/bin/env bash
# redis-crash.sh -- Redis killed (SIGKILL, no persistence) under load:
# answers become 503 service_unavailable, nothing hangs and nothing is sold
# without a lock; Redis restarted, the same workers recover, and fences keep
# working although every counter started again at 1.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/lib.sh"

P=$(new_product "Redis crash" 100000)
pids=$(workers)
start_load "$P" 24
sleep 1
kill -KILL "$(cat "$RUN_DIR/redis.pid")"
sleep 2
sold_down=$(sold "$P")
sleep 1
same "Redis down: nothing is sold without a lock" "$(sold "$P")" "$sold_down"
"$STACK" up >/dev/null
sold_up=$(sold "$P")
sleep 2
stop_load

check "Redis down: buyers got 503 service_unavailable ($(answered service_unavailable))" \
    test "$(answered service_unavailable)" -gt 0
same "no request hung or went unanswered" "$(answered 000)" 0
check "Redis back: purchases resume ($sold_up, then $(sold "$P"))" test "$(sold "$P")" -gt "$sold_up"
same "Redis back: without restarting the workers" "$(workers)" "$pids"
check "Redis back: the product's fence counter started a new epoch" \
    grep -q "product $P: new fence epoch" "$RUN_DIR/log/app.log"
check_invariants "$P" 100000
finish
