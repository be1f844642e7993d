#!/usr/bin/env bash
# concurrency.sh -- many buyers at once never oversell.
. "$(dirname "$0")/lib.sh"

# rush ID BUYERS AMOUNT: BUYERS concurrent purchases; prints "<status> <count> ..."
# (curl's parallel progress meter ignores -s, hence 2>/dev/null).
rush() {
    local id=$1 n=$2 amount=$3 urls=()
    for ((i = 0; i < n; i++)); do urls+=(-o /dev/null "$BASE_URL/buy/$id"); done
    curl -s --parallel --parallel-immediate --parallel-max "$n" -X POST \
        -H 'Content-Type: application/json' -d "{\"amount\": $amount}" -w '%{http_code}\n' \
        "${urls[@]}" 2>/dev/null | sort | uniq -c | awk '{print $2, $1}' | tr '\n' ' '
}

P=$(new_product "Flash sale" 50)
same "200 buyers of 1 unit against stock 50: 50 x 200, 150 x 409" "$(rush "$P" 200 1)" "200 50 409 150 "
same "stock ends at 0" "$(stock "$P")" 0
same "orders sum to 50" "$(sold "$P")" 50
same "50 orders of 1 unit" "$(sql "SELECT COUNT(*) FROM orders WHERE product_id = $P")" 50
same "no lock key is left in Redis" "$(lock_keys)" 0

# Amounts that do not divide the stock: 16 x 3 = 48 fit, 2 units stay.
P=$(new_product "Bundles" 50)
same "100 buyers of 3 units against stock 50: 16 x 200, 84 x 409" "$(rush "$P" 100 3)" "200 16 409 84 "
same "2 units remain" "$(stock "$P")" 2
same "orders sum to 48" "$(sold "$P")" 48

# Two hot products at once do not interfere.
A=$(new_product "Hot A" 20)
B=$(new_product "Hot B" 20)
rush "$A" 60 1 >"$TMP/a" &
rush "$B" 60 1 >"$TMP/b"
wait
same "two products in parallel: A sells exactly its 20" "$(cat "$TMP/a")" "200 20 409 40 "
same "two products in parallel: B sells exactly its 20" "$(cat "$TMP/b")" "200 20 409 40 "
same "no lock key is left in Redis" "$(lock_keys)" 0

finish
