#!/usr/bin/env bash
# bench.sh -- make bench-cluster: spread purchases/s with one responder host
# and with two, side by side, in rounds, on the namespaces of tests/cluster/
# (release build). Every host shares this machine's cores, so two hosts
# cannot be twice one: what carries over to real machines is the CPU time
# each purchase costs each host, printed per host (pg, redis, the responder
# hosts, the edges).
#
#   one     the client -> edge1 (10.77.0.6) -> a
#   two     the client -> edge (10.77.0.1) -> a, b
#   direct  the client -> a's own nginx, no edge (the edge's cost)
#
# Each workload: 64 connections buying 1 unit from 1000 products at random,
# BENCH_SECONDS (10) each, BENCH_ROUNDS (3) rounds in alternation; medians,
# and the CPU steal seen during each (from /proc/stat).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
[[ $(id -u) == 0 ]] || {
    echo "bench-cluster: network namespaces need root" >&2
    exit 1
}
SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
STOCK_BIN=$ROOT/build/stock-fcgi
. "$ROOT/tests/cluster/lib.sh"
ADDR[edge1]=$NET.6
trap 'teardown "$NS"; rm -rf "$CL"' EXIT
trap 'exit 130' INT TERM

network_up && backends &&
    responders a "${ADDR[pg]}:5432" && responders b "${ADDR[pg]}:5432" &&
    start edge SERVICES=edge UPSTREAMS="${ADDR[a]}:3000 ${ADDR[b]}:3000" &&
    start edge1 SERVICES=edge UPSTREAMS="${ADDR[a]}:3000" || exit 1
first=$(psql -X -qAt "host='$CL/pg/sock' port=5432 user=postgres dbname=redisdistributedlock" -c \
    "INSERT INTO products (name, amount) SELECT 'cluster bench ' || g, 1000000000
     FROM generate_series(1, 1000) g RETURNING id" | head -n 1)

declare -A URL=([one]=http://${ADDR[edge1]}:3000 [two]=http://${ADDR[edge]}:3000
    [direct]=http://${ADDR[a]}:3000)
HOSTS="a b edge edge1 pg redis" # wrk's own time is not counted: it exits first
cpu_all() { for h in $HOSTS; do host_cpu "$h"; done | tr '\n' ' '; }
# Steal and all CPU time so far, in ticks.
steal() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

# run NAME: purchases/s, p50, the CPU time each purchase cost each host (the
# two edges together), and the steal meanwhile, as one JSON object.
run() {
    local name=$1 before after s0 s1 out
    before=$(cpu_all)
    s0=$(steal)
    out=$(on client wrk -t 2 -c 64 -d "${SECS}s" --timeout 30s -s tests/bench/buy.lua \
        "${URL[$name]}" -- "$first" $((first + 999)) | tail -n 1)
    s1=$(steal)
    after=$(cpu_all)
    jq -n --argjson w "$out" --arg b "$before" --arg a "$after" --arg s "$s0 $s1" '
        ($w.statuses["200"] // 0) as $ok
        | ($b | split(" ") | map(select(. != "") | tonumber)) as $b
        | ($a | split(" ") | map(select(. != "") | tonumber)) as $a
        | ($s | split(" ") | map(tonumber)) as $s
        | def ms($i): (($a[$i] - $b[$i]) * 1000 / ([$ok, 1] | max) * 1000 | round) / 1000;
        {ok_per_s: ($ok * 1000000 / $w.duration_us | floor), p50_ms: ($w.latency_us.p50 / 1000),
         cpu_ms_per_purchase: {a: ms(0), b: ms(1), edges: (ms(2) + ms(3)), pg: ms(4),
                               redis: ms(5)},
         steal_pct: (($s[2] - $s[0]) * 100 / ([$s[3] - $s[1], 1] | max) | floor),
         statuses: $w.statuses}'
}

echo "bench-cluster: ${SECS}s per workload, $ROUNDS rounds, $(nproc) cores shared by every host"
for ((r = 1; r <= ROUNDS; r++)); do
    for name in one two direct; do
        run "$name" >"$CL/$name.$r.json"
        printf 'round %d %-6s %s\n' "$r" "$name" "$(jq -c . "$CL/$name.$r.json")"
        steal_pct=$(jq .steal_pct "$CL/$name.$r.json")
        ((steal_pct <= 10)) || echo "bench-cluster: warning: CPU steal was $steal_pct % during it"
    done
done
echo "medians:"
for name in one two direct; do
    jq -sc --arg n "$name" 'def median: sort | .[length / 2 | floor];
        . as $all
        | {workload: $n, ok_per_s: (map(.ok_per_s) | median), p50_ms: (map(.p50_ms) | median),
           cpu_ms_per_purchase: ($all[0].cpu_ms_per_purchase | keys
               | map(. as $k | {key: $k, value: ($all | map(.cpu_ms_per_purchase[$k]) | median)})
               | from_entries),
           steal_pct_max: (map(.steal_pct) | max)}' "$CL/$name".*.json
done
