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
hung_up=$(awk '$2 == "000" {printf "%s\x27%s\x27", (n++ ? "," : ""), $1}' "$TMP/answers")
made=$(sql "SELECT COUNT(*) FROM idempotency_keys WHERE status = 200 AND key IN ($hung_up)")
check "and some of those purchases were made all the same ($made)" test "$made" -gt 0
check_invariants "$P" 100000
finish
