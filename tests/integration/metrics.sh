#!/usr/bin/env bash
# metrics.sh -- GET /metrics: Prometheus text, the numbers of every worker
# of both pools, moving as requests are made; loopback only.
. "$(dirname "$0")/lib.sh"

# scrape: GET /metrics into $TMP/metrics.
scrape() {
    http GET /metrics
    cp "$TMP/body" "$TMP/metrics"
}
# metric SERIES: its value in the last scrape (0 if absent).
metric() {
    awk -v s="$1" '$1 == s {v = $2} END {print v + 0}' "$TMP/metrics"
}
# grew SERIES: how much it grew between the last two scrapes.
grew() {
    echo $(($(metric "$1") - $(awk -v s="$1" '$1 == s {v = $2} END {print v + 0}' "$TMP/before")))
}
# mark: the last scrape becomes the "before" of grew.
mark() { scrape && cp "$TMP/metrics" "$TMP/before"; }

scrape
same "GET /metrics answers 200" "$STATUS" 200
same "in the Prometheus text format" "$(header Content-Type)" "text/plain; version=0.0.4; charset=utf-8"
same "shared by every worker" "$(metric stock_metrics_shared)" 1
check "every worker of both pools counted its start ($(metric stock_workers_started_total))" \
    test "$(metric stock_workers_started_total)" -ge $((WORKERS + OVERFLOW_WORKERS))
check "each family has HELP and TYPE" eval \
    '[[ $(grep -c "^# TYPE " "$TMP/metrics") -ge 14 && $(grep -c "^# HELP " "$TMP/metrics") == $(grep -c "^# TYPE " "$TMP/metrics") ]]'

# Numbers move: 12 purchases (spread over many workers), a refusal, a replay.
P=$(new_product "Metered" 100)
mark
for ((i = 0; i < 12; i++)); do buy "/buy/$P" '{"amount": 2}' >/dev/null; done
# (Keyed, so it takes the lock whether or not a stock hint is fresh.)
buy "/buy/$P" '{"amount": 1000}' -H "Idempotency-Key: metrics-refused-$$"
buy "/buy/$P" '{"amount": 1}' -H "Idempotency-Key: metrics-$$"
buy "/buy/$P" '{"amount": 1}' -H "Idempotency-Key: metrics-$$"
buy "/buy/abc" '{"amount": 1}'
scrape
same "purchases{code=invalid_product_id} grew by the bad id" \
    "$(grew 'stock_purchases_total{code="invalid_product_id"}')" 1
same "purchases{code=ok} grew by the sales and the replay" "$(grew 'stock_purchases_total{code="ok"}')" 14
same "purchases{code=insufficient_stock} grew by the refusal" \
    "$(grew 'stock_purchases_total{code="insufficient_stock"}')" 1
same "units sold grew by what was sold (12 x 2 + 1, not the replay)" "$(grew stock_units_sold_total)" 25
same "replays grew by one" "$(grew stock_idempotent_replays_total)" 1
same "requests{buy,200} grew by 14" "$(grew 'stock_http_requests_total{route="buy",status="200"}')" 14
same "requests{buy,409} grew by 1" "$(grew 'stock_http_requests_total{route="buy",status="409"}')" 1
same "the lock wait histogram counted 14 waits (the replay takes no lock)" \
    "$(grew stock_lock_wait_seconds_count)" 14
same "the lock hold histogram counted the 14 locks held" "$(grew stock_lock_hold_seconds_count)" 14
same "the transaction histogram counted 14 transactions" \
    "$(grew stock_postgres_transaction_seconds_count)" 14
check "and its +Inf bucket equals its count" eval \
    '[[ $(metric "stock_postgres_transaction_seconds_bucket{le=\"+Inf\"}") == $(metric stock_postgres_transaction_seconds_count) ]]'
same "units sold agree with PostgreSQL" "$(sold "$P")" 25

# A lock timeout: the lock is held elsewhere for longer than LOCK_WAIT_MS.
mark
rcli SET "lock:product:$P" someone-else PX 60000 >/dev/null
buy "/buy/$P" '{"amount": 1}'
expect "a buyer waits in vain" 429 lock_timeout
rcli DEL "lock:product:$P" >/dev/null
scrape
same "lock timeouts grew by one" "$(grew stock_lock_timeouts_total)" 1
same "purchases{code=lock_timeout} too" "$(grew 'stock_purchases_total{code="lock_timeout"}')" 1

# Reconnects: Redis and PostgreSQL drop every worker's connection.
mark
rcli CLIENT KILL TYPE normal >/dev/null
sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'stock-fcgi'" \
    >/dev/null
for ((i = 0; i < 20; i++)); do buy "/buy/$P" '{"amount": 1}' >/dev/null; done
scrape
check "Redis reconnects grew ($(grew stock_redis_reconnects_total))" \
    test "$(grew stock_redis_reconnects_total)" -gt 0
check "PostgreSQL reconnects grew ($(grew stock_postgres_reconnects_total))" \
    test "$(grew stock_postgres_reconnects_total)" -gt 0

# Only loopback (and METRICS_ALLOW) may read them: 127.0.0.2 is loopback
# to the kernel but not an allowed address to nginx.
http GET /metrics --interface 127.0.0.2
expect "another address is refused with a problem" 403 forbidden
finish
