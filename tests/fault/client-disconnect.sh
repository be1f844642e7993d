#!/usr/bin/env bash
# client-disconnect.sh -- clients that hang up mid-request (curl gives up
# after a few milliseconds): each purchase is committed whole or not at all,
# and the invariants hold.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/lib.sh"

P=$(new_product "Client disconnect" 100000)
# Half the buyers give up almost at once, the other half wait normally.
start_load "$P" 12 --max-time 0.005
sleep 4
stop_load
mv "$TMP/answers" "$TMP/answers.quick"
start_load "$P" 12
sleep 1
stop_load
cat "$TMP/answers.quick" >>"$TMP/answers"

check "clients hung up mid-request ($(answered 000) times)" test "$(answered 000)" -gt 0
check "and some of those purchases were made anyway ($(sql "SELECT COUNT(*) FROM idempotency_keys
    WHERE product_id = $P AND status = 200")) orders)" test "$(sold "$P")" -gt 0
check_invariants "$P" 100000
finish
