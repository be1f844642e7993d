#!/usr/bin/env bash
# bench.sh -- make bench: the purchase path under load, measured side by side
# with its ceilings, in one run, on a stack of its own.
#
# Workloads (BENCH_SECONDS each, 10 by default):
#   hot     64 connections buying 1 unit of one product
#   spread  64 connections buying from 1000 products at random
#   storm   4 x all workers' connections on one product, while one connection
#           (the probe) buys cold products; the probe is reported apart
#   ceilings, measured in the same run:
#     pgbench hot     the service's purchase transaction, 1 client, one product
#     pgbench spread  the same, 64 clients over 1000 products
#     nginx static    nginx answering a static 200, same configuration
# Per workload: successful purchases/s, answers by status, p50/p90/p99
# latency, and Redis commands (INFO commandstats) per purchase made (counted
# in PostgreSQL, so requests still in flight at the end do not skew it). Then
# the ratios the targets are about, the workers' RSS, a JSON file and a PNG
# chart under tests/bench/results/.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
SECS=${BENCH_SECONDS:-10}
OUT=$ROOT/tests/bench/results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

export RUN_DIR PORT PGPORT REDIS_PORT
BENCH_DIR=$(mktemp -d /tmp/stock-bench.XXXXXX)
chmod 755 "$BENCH_DIR"
RUN_DIR=$BENCH_DIR/stack
read -r PORT PGPORT REDIS_PORT <<<"$(tests/stack/free-port.sh 3 | tr '\n' ' ')"
export STOCK_BIN=$ROOT/build/stock-fcgi
# The stack's defaults unless set (tests/stack/stack.sh checks them).
WORKERS=${WORKERS:-12} OVERFLOW_WORKERS=${OVERFLOW_WORKERS:-4} PER_PRODUCT=${PER_PRODUCT:-2}
export WORKERS OVERFLOW_WORKERS PER_PRODUCT
ALL_WORKERS=$((WORKERS + OVERFLOW_WORKERS))
POOLS="$WORKERS + $OVERFLOW_WORKERS workers, $PER_PRODUCT per product"
STACK=$ROOT/tests/stack/stack.sh
URL=http://127.0.0.1:$PORT
trap '"$STACK" down >/dev/null 2>&1; rm -rf "$BENCH_DIR"' EXIT

"$STACK" up >/dev/null || exit 1
SOCK=$RUN_DIR/sock
sql() {
    psql -X -qAt -v ON_ERROR_STOP=1 "host='$SOCK' port=$PGPORT user=postgres dbname=redisdistributedlock" \
        -c "$1"
}
# Products with stock that never runs out during a run: the service's hot
# one and 1000 spread ones, and the same again for pgbench.
new_products() { # NAME COUNT -> first id
    sql "INSERT INTO products (name, amount) SELECT '$1 ' || g, 1000000000
         FROM generate_series(1, $2) g RETURNING id" | head -n 1
}
HOT=$(new_products hot 1)
SPREAD=$(new_products spread 1000)
COLD=$(new_products cold 1000)
PG_HOT=$(new_products pg-hot 1)
PG_SPREAD=$(new_products pg-spread 1000)
printf 'location = /bench/static { default_type application/json; return 200 "{}\\n"; }\n' \
    >"$RUN_DIR/nginx/extra/static.conf"
nginx -s reload -p "$RUN_DIR/nginx" -c "$RUN_DIR/nginx/nginx.conf" -e "$RUN_DIR/log/nginx-error.log" \
    2>/dev/null || kill -HUP "$(cat "$RUN_DIR/nginx/nginx.pid")"
sleep 0.5

# Commands the service sends to Redis (a script counts once: commandstats
# also counts the commands a script runs inside Redis, which cost no round
# trip).
redis_calls() {
    redis-cli -s "$SOCK/redis.sock" INFO commandstats |
        awk -F'[:=,]' '$1 ~ /^cmdstat_(evalsha|eval|blpop|ping)$/ {n += $3} END {print n + 0}'
}

# Units sold so far from products FIRST..LAST: every purchase is of 1 unit.
sold() {
    sql "SELECT coalesce(sum(1000000000 - amount), 0) FROM products WHERE id BETWEEN $1 AND $2"
}

# Requests still in flight when wrk stops are finished by the service but not
# counted by wrk: wait for them, so that Redis commands are divided by the
# purchases that were really made (counted in PostgreSQL).
settle() {
    local last now
    last=$(redis_calls)
    while sleep 0.3 && now=$(redis_calls) && ((now != last)); do last=$now; done
}

# wrk_run NAME CONNECTIONS FIRST LAST: one workload; its JSON into $BENCH_DIR/NAME.json
wrk_run() {
    local name=$1 conns=$2 first=$3 last=$4 threads=2 calls sold
    ((conns < threads)) && threads=$conns
    calls=$(redis_calls)
    sold=$(sold "$first" "$last")
    wrk -t "$threads" -c "$conns" -d "${SECS}s" --timeout 30s -s tests/bench/buy.lua "$URL" \
        -- "$first" "$last" | tail -n 1 >"$BENCH_DIR/$name.json"
    settle
    jq -c --argjson redis $(($(redis_calls) - calls)) --argjson sold $(($(sold "$first" "$last") - sold)) \
        '. + {redis_calls: $redis, purchases_made: $sold}' "$BENCH_DIR/$name.json" \
        >"$BENCH_DIR/$name.tmp" && mv "$BENCH_DIR/$name.tmp" "$BENCH_DIR/$name.json"
}

# pgbench_run NAME CLIENTS FIRST LAST
pgbench_run() {
    local name=$1 clients=$2 first=$3 last=$4 out
    out=$(pgbench -n -M prepared -c "$clients" -j 2 -T "$SECS" -h "$SOCK" -p "$PGPORT" -U postgres \
        -D first="$first" -D last="$last" -f tests/bench/buy.sql redisdistributedlock 2>&1)
    jq -n --arg tps "$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")" \
        --arg lat "$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")" \
        '{tps: ($tps | tonumber), latency_avg_ms: ($lat | tonumber)}' >"$BENCH_DIR/$name.json"
}

echo "bench: $POOLS, ${SECS}s per workload, $(nproc) cores"
echo "bench: hot";            wrk_run hot 64 "$HOT" "$HOT"
echo "bench: spread";         wrk_run spread 64 "$SPREAD" $((SPREAD + 999))
echo "bench: storm + probe"
wrk_run storm $((4 * ALL_WORKERS)) "$HOT" "$HOT" &
storm=$!
wrk_run probe 1 "$COLD" $((COLD + 999))
wait "$storm"
echo "bench: uncontended";    wrk_run single 1 "$SPREAD" $((SPREAD + 999))
echo "bench: pgbench hot";    pgbench_run pg_hot 1 "$PG_HOT" "$PG_HOT"
echo "bench: pgbench spread"; pgbench_run pg_spread 64 "$PG_SPREAD" $((PG_SPREAD + 999))
echo "bench: nginx static"
wrk -t 2 -c 64 -d "${SECS}s" "$URL/bench/static" | sed -n 's/^Requests\/sec: *//p' |
    jq -R '{rps: tonumber}' >"$BENCH_DIR/static.json"

rss=$(for pool in app overflow; do
    for p in $(cat /proc/"$(cat "$RUN_DIR/$pool.pid")"/task/*/children); do
        awk '/^VmRSS/ {print $2}' "/proc/$p/status"
    done
done | sort -n | tail -n 1)

jq -n --arg stamp "$STAMP" --arg pools "$POOLS" --argjson workers "$ALL_WORKERS" --argjson secs "$SECS" \
    --argjson cores "$(nproc)" --argjson rss_kib "${rss:-0}" \
    --slurpfile hot "$BENCH_DIR/hot.json" --slurpfile spread "$BENCH_DIR/spread.json" \
    --slurpfile storm "$BENCH_DIR/storm.json" --slurpfile probe "$BENCH_DIR/probe.json" \
    --slurpfile single "$BENCH_DIR/single.json" --slurpfile pg_hot "$BENCH_DIR/pg_hot.json" \
    --slurpfile pg_spread "$BENCH_DIR/pg_spread.json" --slurpfile static "$BENCH_DIR/static.json" '
    def ok($w): ($w.statuses["200"] // 0);
    def per_s($w): (ok($w) / ($w.duration_us / 1e6));
    def cmds($w): (if $w.purchases_made > 0 then $w.redis_calls / $w.purchases_made else null end);
    {stamp: $stamp, pools: $pools, workers: $workers, seconds: $secs, cores: $cores,
     workloads: {hot: $hot[0], spread: $spread[0], storm: $storm[0], probe: $probe[0],
                 uncontended: $single[0]},
     ceilings: {pgbench_hot_tps: $pg_hot[0].tps, pgbench_spread_tps: $pg_spread[0].tps,
                nginx_static_rps: $static[0].rps},
     purchases_per_s: {hot: per_s($hot[0]), spread: per_s($spread[0]), storm: per_s($storm[0]),
                       probe: per_s($probe[0]), uncontended: per_s($single[0])},
     redis_commands_per_purchase: {hot: cmds($hot[0]), spread: cmds($spread[0]),
                                   uncontended: cmds($single[0])},
     ratios: {hot_vs_pgbench_hot: (per_s($hot[0]) / $pg_hot[0].tps),
              spread_vs_pgbench_spread: (per_s($spread[0]) / $pg_spread[0].tps),
              hot_p99_vs_p50: ($hot[0].latency_us.p99 / $hot[0].latency_us.p50)},
     worker_rss_max_kib: $rss_kib}' >"$OUT/bench-$STAMP.json"

# The table.
jq -r '
    def r2: (. * 100 | round) / 100;
    def row($n; $w; $ps; $c): [$n, ($ps | floor | tostring),
        ($w.statuses | to_entries | map("\(.value) \(.key)") | join(", ")),
        (($w.latency_us.p50 / 1000 * 100 | round) / 100 | tostring),
        (($w.latency_us.p90 / 1000 * 100 | round) / 100 | tostring),
        (($w.latency_us.p99 / 1000 * 100 | round) / 100 | tostring),
        (if $c == null then "-" else ($c | r2 | tostring) end)] | @tsv;
    "workload\tpurchases/s\tanswers\tp50 ms\tp90 ms\tp99 ms\tredis cmds/purchase",
    row("hot (64 conns)"; .workloads.hot; .purchases_per_s.hot; .redis_commands_per_purchase.hot),
    row("spread (64 conns, 1000 products)"; .workloads.spread; .purchases_per_s.spread;
        .redis_commands_per_purchase.spread),
    row("storm (\(.workers * 4) conns, hot)"; .workloads.storm; .purchases_per_s.storm; null),
    row("probe (1 conn, cold, during storm)"; .workloads.probe; .purchases_per_s.probe; null),
    row("uncontended (1 conn)"; .workloads.uncontended; .purchases_per_s.uncontended;
        .redis_commands_per_purchase.uncontended),
    "",
    "ceiling\trate/s",
    "pgbench hot (1 client)\t\(.ceilings.pgbench_hot_tps | floor)",
    "pgbench spread (64 clients)\t\(.ceilings.pgbench_spread_tps | floor)",
    "nginx static 200\t\(.ceilings.nginx_static_rps | floor)",
    "",
    "ratio\tvalue\ttarget",
    "hot / pgbench hot\t\((.ratios.hot_vs_pgbench_hot * 100 | round) / 100)\t>= 0.5",
    "spread / pgbench spread\t\((.ratios.spread_vs_pgbench_spread * 100 | round) / 100)\t>= 0.4",
    "hot p99 / p50\t\((.ratios.hot_p99_vs_p50 * 10 | round) / 10)\t<= 64",
    "hot lock_timeout answers\t\(.workloads.hot.statuses["503 lock_timeout"] // 0)\t0",
    "redis cmds/purchase uncontended\t\(.redis_commands_per_purchase.uncontended | r2)\t<= 3",
    "redis cmds/purchase hot\t\(.redis_commands_per_purchase.hot | r2)\t<= 4",
    "probe failures\t\(.workloads.probe.requests - (.workloads.probe.statuses["200"] // 0))\t0",
    "probe p99 ms\t\(.workloads.probe.latency_us.p99 / 1000)\t< 50",
    "worker RSS max MiB\t\((.worker_rss_max_kib / 1024 * 10 | round) / 10)\t<= 8"
    ' "$OUT/bench-$STAMP.json" | column -t -s $'\t'

# The chart: p50/p90/p99 per workload, log scale.
jq -r '.workloads | to_entries[] |
    "\(.key) \(.value.latency_us.p50 / 1000) \(.value.latency_us.p90 / 1000) \(.value.latency_us.p99 / 1000)"' \
    "$OUT/bench-$STAMP.json" >"$BENCH_DIR/latency.dat"
gnuplot <<GP
set terminal pngcairo size 900,500 noenhanced
set output "$OUT/latency-$STAMP.png"
set title "Purchase latency by workload ($POOLS, ${SECS}s each, $(nproc) cores)"
set ylabel "ms (log scale)"
set logscale y
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key top left
set grid ytics
plot "$BENCH_DIR/latency.dat" using 2:xtic(1) title "p50", '' using 3 title "p90", '' using 4 title "p99"
GP
echo
echo "bench: results in tests/bench/results/bench-$STAMP.json and latency-$STAMP.png"
