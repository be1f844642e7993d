#!/usr/bin/env bash
# bench.sh -- make bench: the purchase path under load, measured side by side
# with its ceilings, in one run, on a stack of its own.
#
# Each workload runs BENCH_SECONDS (10 by default). A single pass decides
# nothing on a shared machine (CPU steal moved one ratio 5x within an hour),
# so the workloads whose ratios are the targets run in BENCH_ROUNDS rounds
# (3 by default), alternating with their ceilings, and the table reports
# each ratio's median with its range:
#   hot off     64 connections buying 1 unit of one product, combining off
#               (COMBINE_MAX=0: one purchase per lock grant)
#   hot on      the same, combining on (COMBINE_MAX, include/combine.h)
#   hot keyed   hot on, every purchase with an Idempotency-Key of its own
#   poisoned    the same, while 40 keys are held by an open transaction (as
#               by a host whose link to PostgreSQL stalled) and their
#               retries come in, one every 0.25 s: a batch that takes one
#               must neither stall nor fail for it (include/combine.h)
#   spread      64 connections buying from 1000 products at random
#   ceilings    pgbench hot (the purchase transaction, 1 client, one
#               product), pgbench spread (64 clients, 1000 products), the
#               responders' round trip (64 connections asking a path the
#               responder answers 404 without Redis or PostgreSQL), and
#               nginx answering a static 200
# Once per run: uncontended (1 connection, cold products) with combining
# off and on, and the storm (4 x all workers' connections on one product)
# with a probe buying cold products beside it.
# Per workload: purchases/s, answers by status, p50/p90/p99, Redis commands
# per purchase made (counted in PostgreSQL), and the CPU steal while it ran
# (from /proc/stat; a warning above 10 %). With combining on, the batch
# sizes (stock_batch_size). Then the workers' RSS, a JSON file and a PNG
# chart under tests/bench/results/.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
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
WORKERS=${WORKERS:-12} OVERFLOW_WORKERS=${OVERFLOW_WORKERS:-32} PER_PRODUCT=${PER_PRODUCT:-2}
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

# wrk_run NAME CONNECTIONS FIRST LAST [keyed]: one workload; its JSON into
# $BENCH_DIR/NAME.json
wrk_run() {
    local name=$1 conns=$2 first=$3 last=$4 keyed=${5:-} threads=2 calls sold
    ((conns < threads)) && threads=$conns
    calls=$(redis_calls)
    sold=$(sold "$first" "$last")
    cpu_begin
    wrk -t "$threads" -c "$conns" -d "${SECS}s" --timeout 30s -s tests/bench/buy.lua "$URL" \
        -- "$first" "$last" $keyed | tail -n 1 >"$BENCH_DIR/$name.json"
    local steal
    steal=$(cpu_steal)
    settle
    jq -c --argjson redis $(($(redis_calls) - calls)) --argjson sold $(($(sold "$first" "$last") - sold)) \
        --argjson steal "$steal" '. + {redis_calls: $redis, purchases_made: $sold, steal_pct: $steal}' \
        "$BENCH_DIR/$name.json" >"$BENCH_DIR/$name.tmp" && mv "$BENCH_DIR/$name.tmp" "$BENCH_DIR/$name.json"
}

# CPU steal while a workload ran, in percent of all CPU time, from the
# "cpu" line of /proc/stat (user nice system idle iowait irq softirq steal).
cpu_begin() { CPU_BEGIN=$(head -n 1 /proc/stat); }
cpu_steal() {
    awk -v a="$CPU_BEGIN" -v b="$(head -n 1 /proc/stat)" 'BEGIN {
        n = split(a, x); split(b, y)
        for (i = 2; i <= 9 && i <= n; i++) total += y[i] - x[i]
        printf "%.1f", (total > 0 ? 100 * (y[9] - x[9]) / total : 0) }'
}

# rps_run NAME PATH: requests/s of 64 connections asking PATH (GET).
rps_run() {
    local steal rps
    cpu_begin
    rps=$(wrk -t 2 -c 64 -d "${SECS}s" "$URL$2" | sed -n 's/^Requests\/sec: *//p')
    steal=$(cpu_steal)
    jq -n --argjson rps "${rps:-0}" --argjson steal "$steal" '{rps: $rps, steal_pct: $steal}' \
        >"$BENCH_DIR/$1.json"
}

# combining MAX: the pools run with COMBINE_MAX=MAX (restarted if they ran
# with another). Their metrics start again from zero with them.
COMBINING=
combining() {
    [[ $COMBINING == "$1" ]] && return 0
    "$STACK" stop app >/dev/null 2>&1
    COMBINE_MAX=$1 "$STACK" up >/dev/null || exit 1
    COMBINING=$1
}

# warm_up: 2 s of cold purchases, not measured, on pools just restarted:
# without it, whichever mode's first workload follows a restart pays for
# 44 processes starting (uncontended p50 1.3 ms off, 2.3 ms on, in one run).
warm_up() {
    wrk -t 2 -c 64 -d 2s -s tests/bench/buy.lua "$URL" -- "$COLD" $((COLD + 999)) >/dev/null
}

# batch_sizes: the stock_batch_size buckets so far, as a JSON object
# {"1": n, "2": n, ..., "+Inf": n} (cumulative, as Prometheus has them).
batch_sizes() {
    curl -s "$URL/metrics" | sed -n 's/^stock_batch_size_bucket{le="\([^"]*\)"} \([0-9]*\)$/\1 \2/p' |
        jq -Rn '[inputs | split(" ") | {(.[0]): (.[1] | tonumber)}] | add // {}'
}

# pgbench_run NAME CLIENTS FIRST LAST
pgbench_run() {
    local name=$1 clients=$2 first=$3 last=$4 out
    cpu_begin
    out=$(pgbench -n -M prepared -c "$clients" -j 2 -T "$SECS" -h "$SOCK" -p "$PGPORT" -U postgres \
        -D first="$first" -D last="$last" -f tests/bench/buy.sql redisdistributedlock 2>&1)
    jq -n --arg tps "$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")" \
        --arg lat "$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")" \
        --argjson steal "$(cpu_steal)" \
        '{tps: ($tps | tonumber), latency_avg_ms: ($lat | tonumber), steal_pct: $steal}' \
        >"$BENCH_DIR/$name.json"
}

# poisoned NAME: wrk_run of the hot product, keyed, while an open
# transaction holds 40 keys and a loop sends their retries, one every
# 0.25 s for the workload's length; those answers in NAME-poison.codes.
poisoned() {
    local name=$1 holder retries i
    {
        echo "BEGIN;"
        for ((i = 0; i < 40; i++)); do
            echo "INSERT INTO idempotency_keys (key, product_id, amount, status)
                  VALUES ('poison-$STAMP-$name-$i', $HOT, 1, 0);"
        done
        echo "SELECT pg_sleep($((SECS + 60)));"
    } | psql -X -q "host='$SOCK' port=$PGPORT user=postgres dbname=redisdistributedlock application_name=bench-poison" \
        >/dev/null 2>&1 &
    holder=$!
    for ((i = 0; i < 100; i++)); do
        [[ -n $(sql "SELECT 1 FROM pg_stat_activity WHERE application_name = 'bench-poison'
                     AND query LIKE '%pg_sleep%'") ]] && break
        sleep 0.05
    done
    (
        for ((i = 0; i < SECS * 4; i++)); do
            curl -s -o /dev/null -w '%{http_code}\n' --max-time 10 -X POST "$URL/buy/$HOT" \
                -H 'Content-Type: application/json' -H "Idempotency-Key: poison-$STAMP-$name-$((i % 40))" \
                -d '{"amount": 1}' &
            sleep 0.25
        done
        wait
    ) >"$BENCH_DIR/$name-poison.codes" &
    retries=$!
    wrk_run "$name" 64 "$HOT" "$HOT" keyed
    wait "$retries"
    sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bench-poison'" \
        >/dev/null
    wait "$holder"
    jq -c --arg codes "$(sort "$BENCH_DIR/$name-poison.codes" | uniq -c | awk '{printf "%s %s, ", $1, $2}')" \
        '. + {poison_answers: $codes}' "$BENCH_DIR/$name.json" >"$BENCH_DIR/$name.tmp" &&
        mv "$BENCH_DIR/$name.tmp" "$BENCH_DIR/$name.json"
}

COMBINE_ON=${COMBINE_MAX:-$(sed -n 's/^#define COMBINE_MAX_DEFAULT *//p' include/combine.h)}
echo "bench: $POOLS, COMBINE_MAX $COMBINE_ON, ${SECS}s per workload, $ROUNDS rounds, $(nproc) cores"
for ((r = 1; r <= ROUNDS; r++)); do
    echo "bench: round $r of $ROUNDS: uncontended and hot with combining off, then on; ceilings"
    combining 0
    warm_up
    wrk_run "r$r-single_off" 1 "$SPREAD" $((SPREAD + 999))
    wrk_run "r$r-hot_off" 64 "$HOT" "$HOT"
    combining "$COMBINE_ON"
    warm_up
    wrk_run "r$r-single_on" 1 "$SPREAD" $((SPREAD + 999))
    before=$(batch_sizes)
    wrk_run "r$r-hot_on" 64 "$HOT" "$HOT"
    jq -n --argjson a "$before" --argjson b "$(batch_sizes)" \
        '$b | with_entries(.value -= ($a[.key] // 0))' >"$BENCH_DIR/r$r-batch.json"
    wrk_run "r$r-hot_keyed" 64 "$HOT" "$HOT" keyed
    poisoned "r$r-poisoned"
    pgbench_run "r$r-pg_hot" 1 "$PG_HOT" "$PG_HOT"
    wrk_run "r$r-spread" 64 "$SPREAD" $((SPREAD + 999))
    pgbench_run "r$r-pg_spread" 64 "$PG_SPREAD" $((PG_SPREAD + 999))
    rps_run "r$r-responders" /bench/none
    rps_run "r$r-static" /bench/static
    jq -n --slurpfile w <(for n in hot_off single_off single_on hot_on hot_keyed poisoned batch \
        pg_hot spread pg_spread responders static; do jq -c --arg n "$n" '{($n): .}' "$BENCH_DIR/r$r-$n.json"; done) \
        '$w | add' >"$BENCH_DIR/round-$r.json"
done
echo "bench: storm + probe (combining on)"
wrk_run storm $((4 * ALL_WORKERS)) "$HOT" "$HOT" &
storm=$!
wrk_run probe 1 "$COLD" $((COLD + 999))
wait "$storm"

# Memory: every responder's RSS (the largest), and all of them together as
# PSS (RSS counts the pages they share, the libraries, once per process).
responders() {
    for pool in app overflow; do cat /proc/"$(cat "$RUN_DIR/$pool.pid")"/task/*/children; done
}
rss=$(for p in $(responders); do awk '/^VmRSS/ {print $2}' "/proc/$p/status"; done | sort -n)
pss=$(for p in $(responders); do awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup"; done |
    awk '{s += $1} END {print s + 0}')

jq -n --arg stamp "$STAMP" --arg pools "$POOLS" --argjson workers "$ALL_WORKERS" --argjson secs "$SECS" \
    --argjson cores "$(nproc)" --argjson combine_max "$COMBINE_ON" \
    --argjson rss_kib "$(tail -n 1 <<<"$rss")" --argjson rss_total_kib "$(awk '{s += $1} END {print s + 0}' <<<"$rss")" --argjson pss_kib "$pss" \
    --slurpfile rounds <(cat "$BENCH_DIR"/round-*.json) \
    --slurpfile storm "$BENCH_DIR/storm.json" --slurpfile probe "$BENCH_DIR/probe.json" '
    def ok($w): ($w.statuses["200"] // 0);
    def per_s($w): (ok($w) / ($w.duration_us / 1e6));
    def cmds($w): (if $w.purchases_made > 0 then $w.redis_calls / $w.purchases_made else null end);
    def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                       else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def stats: {median: median, min: min, max: max};
    ($rounds | map({
        hot_on: per_s(.hot_on), hot_off: per_s(.hot_off), spread: per_s(.spread),
        single_on_p50_ms: (.single_on.latency_us.p50 / 1000),
        single_off_p50_ms: (.single_off.latency_us.p50 / 1000),
        pgbench_hot: .pg_hot.tps, pgbench_spread: .pg_spread.tps,
        responders: .responders.rps, nginx_static: .static.rps,
        hot_on_vs_pgbench_hot: (per_s(.hot_on) / .pg_hot.tps),
        hot_off_vs_pgbench_hot: (per_s(.hot_off) / .pg_hot.tps),
        hot_on_vs_hot_off: (per_s(.hot_on) / per_s(.hot_off)),
        hot_on_vs_spread: (per_s(.hot_on) / per_s(.spread)),
        spread_vs_pgbench_spread: (per_s(.spread) / .pg_spread.tps),
        hot_on_vs_responders: (per_s(.hot_on) / .responders.rps),
        spread_vs_responders: (per_s(.spread) / .responders.rps),
        hot_on_p99_vs_p50: (.hot_on.latency_us.p99 / .hot_on.latency_us.p50),
        single_p50_on_vs_off: (.single_on.latency_us.p50 / .single_off.latency_us.p50),
        hot_on_lock_timeouts: ((.hot_on.statuses["429 lock_timeout"] // 0) +
                               (.hot_on.statuses["503 lock_timeout"] // 0)),
        poisoned_vs_hot_keyed: (per_s(.poisoned) / per_s(.hot_keyed)),
        poisoned_lock_timeouts: (.poisoned.statuses["429 lock_timeout"] // 0),
        redis_cmds_single_on: cmds(.single_on), redis_cmds_hot_on: cmds(.hot_on),
        max_steal_pct: ([.[] | .steal_pct? // empty] | max)})) as $per_round
    | {stamp: $stamp, pools: $pools, workers: $workers, combine_max: $combine_max, seconds: $secs,
       cores: $cores, rounds: $rounds, per_round: $per_round,
       medians: ($per_round[0] | keys | map({(.): ([$per_round[][.]] | stats)}) | add),
       batch_sizes: ($rounds | map(.batch) | reduce .[] as $b ({}; reduce ($b | keys[]) as $k (.;
                     .[$k] += $b[$k]))),
       storm: $storm[0], probe: $probe[0], storm_per_s: per_s($storm[0]),
       worker_rss_max_kib: $rss_kib, workers_rss_total_kib: $rss_total_kib,
       workers_pss_total_kib: $pss_kib}' >"$OUT/bench-$STAMP.json"

# The tables: each round's rates and steal, then the medians of the ratios.
jq -r '
    def r2: (. * 100 | round) / 100;
    def ms: (. / 1000 * 100 | round) / 100;
    "round\tworkload\tpurchases/s\tanswers\tp50 ms\tp99 ms\tsteal %",
    (.rounds | to_entries[] | (.key + 1) as $r | .value | to_entries[]
        | select(.value.statuses? != null)
        | [$r, .key, ((.value.statuses["200"] // 0) / (.value.duration_us / 1e6) | floor),
           (.value.statuses | to_entries | map("\(.value) \(.key)") | join(", ")),
           (.value.latency_us.p50 | ms), (.value.latency_us.p99 | ms), .value.steal_pct] | @tsv),
    (.rounds | to_entries[] | (.key + 1) as $r | .value | to_entries[]
        | select(.value.statuses? == null and .key != "batch")
        | [$r, .key, (.value.tps // .value.rps | floor), "(ceiling)", "", "", .value.steal_pct] | @tsv)
    ' "$OUT/bench-$STAMP.json" | column -t -s $'\t'
echo
jq -r '"transactions of the hot product with combining on, by purchases made (all rounds):",
    (.batch_sizes | to_entries | map(select(.key != "+Inf") | {n: (.key | tonumber), c: .value})
        | sort_by(.n) | . as $b | [range(0; length)] | map(
            (if . == 0 then 1 else $b[. - 1].n + 1 end) as $lo
            | "\(if $lo == $b[.].n then "\($lo)" else "\($lo)-\($b[.].n)" end): \($b[.].c - (if . == 0 then 0 else $b[. - 1].c end))")
        | join(", "))' "$OUT/bench-$STAMP.json"
echo
jq -r '
    def r2: (. * 100 | round) / 100;
    "median over rounds [min - max]\tvalue\ttarget",
    (.medians as $m | [
        ["hot on / pgbench hot (1 client)", "hot_on_vs_pgbench_hot", ">= 1.5"],
        ["hot on / spread", "hot_on_vs_spread", ">= 1"],
        ["spread / pgbench spread", "spread_vs_pgbench_spread", ">= 0.6"],
        ["hot on / hot off", "hot_on_vs_hot_off", "> 1"],
        ["hot off / pgbench hot", "hot_off_vs_pgbench_hot", "(today)"],
        ["hot on / responders round trip", "hot_on_vs_responders", "< 1"],
        ["spread / responders round trip", "spread_vs_responders", "< 1"],
        ["hot on p99 / p50", "hot_on_p99_vs_p50", "<= 4"],
        ["hot on lock_timeout answers", "hot_on_lock_timeouts", "0"],
        ["hot keyed, 40 keys in flight / without", "poisoned_vs_hot_keyed", ">= 0.8"],
        ["hot keyed, keys in flight: lock_timeout", "poisoned_lock_timeouts", "0"],
        ["uncontended p50 on / off", "single_p50_on_vs_off", "<= 1.1"],
        ["uncontended p50 ms, on", "single_on_p50_ms", ""],
        ["redis cmds/purchase uncontended, on", "redis_cmds_single_on", "<= 2"],
        ["redis cmds/purchase hot, on", "redis_cmds_hot_on", ""],
        ["responders round trip /s", "responders", "(ceiling)"],
        ["nginx static /s", "nginx_static", "(ceiling)"],
        ["steal %, worst workload of the round", "max_steal_pct", "< 10"]][]
        | . as [$name, $k, $target] | $m[$k]
        | [$name, "\(.median | r2) [\(.min | r2) - \(.max | r2)]", $target] | @tsv),
    "",
    "storm (\(.workers * 4) conns, hot)\t\(.storm_per_s | floor)/s\t\(.storm.statuses | to_entries | map("\(.value) \(.key)") | join(", "))",
    "probe failures\t\(.probe.requests - (.probe.statuses["200"] // 0))\t0",
    "probe p99 ms\t\(.probe.latency_us.p99 / 1000)\t< 50",
    "worker RSS max MiB\t\((.worker_rss_max_kib / 1024 * 10 | round) / 10)\t<= 8",
    "all \(.workers) workers PSS MiB (RSS)\t\((.workers_pss_total_kib / 1024 * 10 | round) / 10) (\((.workers_rss_total_kib / 1024 * 10 | round) / 10))\t"
    ' "$OUT/bench-$STAMP.json" | column -t -s $'\t'
jq -r '.rounds | to_entries[] | "round \(.key + 1): the retries of the keys in flight answered \(.value.poisoned.poison_answers)"' \
    "$OUT/bench-$STAMP.json"
jq -r '[.rounds[][] | .steal_pct? // empty] | max | select(. > 10)
    | "bench: WARNING: CPU steal reached \(.)% during a workload: the machine was shared; compare rounds"' \
    "$OUT/bench-$STAMP.json"

# The chart: p50/p90/p99 per workload, log scale.
jq -r '.rounds[-1] + {storm: .storm, probe: .probe} | to_entries[] | select(.value.latency_us? != null) |
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
