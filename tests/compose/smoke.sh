#!/usr/bin/env bash
# smoke.sh -- the docker-compose stack, built and run for real: docker-compose
# (1.29) against podman's Docker-compatible API, with docker-compose.yml and
# the Dockerfile as they are, brought up and down by tests/compose/stack.sh,
# the script behind `make compose-up` and `make compose-down`: the test goes
# the users' way. Prints TAP; run it as root:
#
#   tests/compose/smoke.sh
#
# Registry images cannot be fetched here, so the official debian, postgres
# and redis images are replaced by stand-ins, test doubles defined beside
# this script and tagged with the official names (debian:bookworm-slim,
# postgres:15-bookworm, redis:7-bookworm): what this proves about PostgreSQL
# and Redis holds as far as the stand-ins reproduce the official images.
#
# It checks: the images build and the stack comes up (`stack.sh up`), each
# service once what it depends on is healthy, and `docker-compose ps`
# (`stack.sh compose ps`) shows all five healthy; the demo's purchase, a
# problem+json 400 and a 409 once sold out, through the published port;
# /metrics from the host, the same numbers (every worker's) on every scrape,
# and 403 from elsewhere on the compose network; after `stack.sh down` the
# firewall is as before, and after `up`, with a socket volume as an older
# image left it, the data is still there and the metrics are shared again;
# after `stack.sh down -v` nothing of the test's compose project remains, nor
# any process it started, and the firewall and IP forwarding are as the run
# found them, also on a machine that had no firewall tables at all.
#
# Where things live:
#   /var/cache/stock-api-compose-smoke  podman's store for this test alone
#       (images, containers, volumes, network definitions) and its settings,
#       apart from `make compose-up`'s: the test never touches a stack a user
#       has up. Kept between runs as a cache: the stand-ins are rebuilt
#       only when their definitions change (a label holds their hash) and the
#       app image reuses its build layers. About 650 MB. To look inside,
#       or (with `system reset -f`, then rm -rf) to reclaim the space:
#         CONTAINERS_CONF=/var/cache/stock-api-compose-smoke/containers.conf \
#         CONTAINERS_STORAGE_CONF=/var/cache/stock-api-compose-smoke/storage.conf podman images
#       It also holds one directory per run (the API socket, PID files,
#       logs, build temporaries), removed at the end.
#   /run/stock-api-compose-smoke  podman's run state.
# Whatever its store, podman 4.3 also writes a cache of image blob digests to
# /var/lib/containers/cache, and netavark its address allocations and DNS
# records for the test's networks (removed with them) to
# /run/containers/networks; neither holds images or changes what other users
# of podman see.
#
# Runs beside `make run`, `make test` and `make compose-up`: a free port, a
# compose project of its own (stocksmoke<pid>), its own API socket. One run
# at a time (a lock); leftovers of a run that was killed are removed, loudly,
# by the next one, its firewall rules too. Everything started is stopped, by
# PID, on exit, failure and interrupt.
# Network: the builds fetch packages from deb.debian.org; every request the
# test makes goes to 127.0.0.1 or stays inside the containers.
set -uo pipefail
# tests/run.sh reads this through tee: once an interrupt has ended tee, a
# write must not end the cleanup with it.
trap '' PIPE

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=/var/cache/stock-api-compose-smoke
PREFIX=stocksmoke
T_START=$SECONDS
# stack.sh's settings (DEMO_*), and lib.sh's, for this shell's own podman
# commands: this test's store, a state directory per run, the compose file's
# defaults alone.
export DEMO_STORE=$CACHE DEMO_RUNROOT=/run/stock-api-compose-smoke DEMO_PROJECT=$PREFIX$$
export DEMO_STATE=$CACHE/runs/$DEMO_PROJECT DEMO_CLEAN_ENV=1
export DEMO_TMP=$DEMO_STATE/tmp
STORE=$DEMO_STORE RUNROOT=$DEMO_RUNROOT STATE=$DEMO_STATE TMP=$DEMO_TMP PROJECT=$DEMO_PROJECT
CLEAN_ENV=1
RUN=$STATE
STACK=$ROOT/tests/compose/stack.sh

. "$ROOT/tests/tap.sh"
. "$ROOT/tests/compose/lib.sh"
# bail NAME [WHY...]: a failure after which nothing else can be checked.
bail() {
    not_ok "$@"
    exit 1
}
note() { echo "# $*"; }

# ---------------------------------------------------------------- cleanup --

UP=0
LOCKED=0
CLEANED=0

cleanup() {
    local rc=$?
    trap '' INT TERM
    ((CLEANED)) && exit "$rc"
    CLEANED=1
    # An interrupted `stack.sh up` takes down what it started itself.
    stop_pid "$CHILD" 5
    if ((UP)); then
        timeout 300 "$STACK" down -v </dev/null 9>&- 2>&1 | sed 's/^/# /'
    fi
    if ((LOCKED)); then
        local pid cmd
        while read -r pid cmd; do
            note "stopping process $pid, left by stack.sh: ${cmd:0:100}"
            stop_pid "$pid" 10
        done < <(ours "$RUN/")
        rm -rf "$RUN"
    fi
    exit "$rc"
}
interrupted() {
    not_ok "interrupted by SIG$1; cleaning up"
    exit 130
}
trap cleanup EXIT
trap 'interrupted INT' INT
trap 'interrupted TERM' TERM

# --------------------------------------------------------- prerequisites --

if ((EUID != 0)); then
    echo "ok 1 - compose # SKIP needs root (podman's rootful mode, debootstrap)"
    echo "1..1"
    exit 0
fi
missing=$(demo_missing)
if [[ -n $missing ]]; then
    bail "prerequisites: missing$missing" \
        "podman, runc, netavark, aardvark-dns, debootstrap, docker-compose, curl, jq and" \
        "nftables are Debian packages of the same names; netavark sets up the compose" \
        "network and the published port with iptables (package iptables); flock, setsid:" \
        "util-linux"
fi

mkdir -p "$CACHE/runs" "$RUNROOT" || bail "cannot create $CACHE and $RUNROOT"
# The lock is fd 9, which no process that may outlive this script inherits
# (9>&- wherever one starts).
exec 9>"$CACHE/lock"
if ! flock -w 10 9; then
    bail "another compose smoke test holds $CACHE/lock" "$(for p in /proc/[0-9]*; do
        [[ ${p#/proc/} == @($$|$BASHPID) ]] && continue
        for fd in "$p"/fd/*; do
            [[ $(readlink "$fd" 2>/dev/null) == "$CACHE/lock" ]] || continue
            echo "held by ${p#/proc/}: $(tr '\0' ' ' 2>/dev/null <"$p/cmdline" | cut -c1-120)"
            break
        done
    done)"
fi
LOCKED=1
podman_settings || bail "cannot create $RUN and podman's settings in $CACHE"

# ------------------------------------------------------------- leftovers --

# Runs that were killed: their processes (the API service, the healthcheck
# loop, anything working in their temporary directory), found by their
# command lines, which name their run's directory, and stopped by PID; their
# compose projects; then the firewall as each found it.
for dir in "$CACHE"/runs/"$PREFIX"*; do
    [[ $dir == "$RUN" || ! -d $dir ]] && continue
    while read -r pid cmd; do
        note "stopping process $pid, left by an earlier run: ${cmd:0:100}"
        stop_pid "$pid" 10
    done < <(ours "$dir/")
done
for name in $({
    podman ps -a --format '{{.Names}}'
    podman volume ls --format '{{.Name}}'
    podman network ls --format '{{.Name}}'
} 2>/dev/null | grep -o "^${PREFIX}[0-9]*_" | sort -u); do
    remove_project "${name%_}"
done
for item in $(podman volume ls -q --filter dangling=true 2>/dev/null); do
    note "removing the anonymous volume $item, left by an earlier run"
    timeout 30 podman volume rm -f "$item" >/dev/null 2>&1
done
for dir in "$CACHE"/runs/"$PREFIX"*; do
    [[ $dir == "$RUN" || ! -d $dir ]] && continue
    if [[ -e $dir/firewall.before ]]; then
        note "removing the firewall rules of an earlier run (${dir##*/})"
        firewall_restore "$dir" | sed 's/^/# /'
    fi
    rm -rf "$dir"
done

# What the run must leave as it found it: the firewall (rules and chains,
# the tables themselves: none at all, on a fresh machine) and forwarding.
mkdir -p "$RUN/check" && firewall_snapshot "$RUN/check" && fw_ruleset >"$RUN/check/ruleset.before" ||
    bail "cannot record the firewall as it is"
# firewall_changes: how the firewall and forwarding differ from then; empty
# if not at all.
firewall_changes() {
    fw_lines | comm -3 "$RUN/check/firewall.before" -
    fw_ruleset | diff "$RUN/check/ruleset.before" - | grep '^[<>]'
    local fwd
    fwd=$(cat /proc/sys/net/ipv4/ip_forward)
    [[ $fwd == "$(cat "$RUN/check/ip_forward.before")" ]] || echo "ip_forward is $fwd"
}

# ------------------------------------------------------------ the stack --

PORT=$("$ROOT/tests/stack/free-port.sh" 1)
export PORT

# up WHAT: stack.sh up, as `make compose-up` runs it; its "compose:" lines
# as notes.
up() {
    UP=1
    if bg_wait 900 "$RUN/up.log" "$STACK" up; then
        sed 's/^/# /' "$RUN/up.log"
        ok "$1"
    else
        sed 's/^/# /' "$RUN/up.log"
        bail "$1: stack.sh up failed"
    fi
    : >"$RUN/up.log"
}

up "stack.sh up (make compose-up): the images built or cached, podman's API and the healthchecks running, each service started once its dependencies were healthy, all five healthy"
T_SMOKE=$SECONDS

out=$(bg_wait 60 - "$STACK" compose ps 2>&1)
if [[ $(grep -c 'Up (healthy)' <<<"$out") == 5 ]]; then
    ok "stack.sh compose ps (docker-compose ps): five services, all Up (healthy)"
else
    not_ok "stack.sh compose ps (docker-compose ps): five services, all Up (healthy)" "$out"
fi

# http METHOD PATH [curl args...]: from the host, through the published
# port; sets STATUS and BODY, headers in $RUN/headers.
http() {
    local method=$1 path=$2
    shift 2
    STATUS=$(curl -sS --noproxy '*' --max-time 10 -o "$RUN/body" -D "$RUN/headers" \
        -w '%{http_code}' -X "$method" "$@" "http://127.0.0.1:$PORT$path" 2>"$RUN/curl.err") ||
        STATUS=000
    BODY=$(cat "$RUN/body" 2>/dev/null)
}
buy() { http POST "/buy/$1" -H 'Content-Type: application/json' -d "$2"; }
content_type() { grep -i '^content-type:' "$RUN/headers" | head -n 1 | cut -d: -f2- | tr -d '\r '; }

# expect NAME STATUS JQ-TEST: the last answer had STATUS and a body for
# which the jq expression is true.
expect() {
    if [[ $STATUS == "$2" ]] && jq -e "$3" <<<"$BODY" >/dev/null 2>&1; then
        ok "$1"
    else
        not_ok "$1" "status $STATUS, want $2" "body: $BODY" "$(cat "$RUN/curl.err" 2>/dev/null)"
    fi
}

# problem NAME STATUS CODE: the last answer was that RFC 9457 problem.
problem() {
    local ct
    ct=$(content_type)
    if [[ $ct == application/problem+json ]]; then
        expect "$1" "$2" ".status == $2 and .code == \"$3\""
    else
        not_ok "$1" "status $STATUS, Content-Type '$ct', want application/problem+json" "body: $BODY"
    fi
}

# metrics NAME SOLD: six scrapes from the host, each answered by whichever
# worker of either pool takes it; every one must show the shared file and
# SOLD units sold.
metrics() {
    local i got=() m
    for ((i = 0; i < 6; i++)); do
        http GET /metrics
        m="$STATUS shared=$(awk '$1 == "stock_metrics_shared" { print $2 }' <<<"$BODY")"
        m+=" sold=$(awk '$1 == "stock_units_sold_total" { print $2 }' <<<"$BODY")"
        got+=("$m")
    done
    if [[ $(printf '%s\n' "${got[@]}" | sort -u) == "200 shared=1 sold=$2" ]]; then
        ok "$1"
    else
        not_ok "$1" "want '200 shared=1 sold=$2' on every scrape, got:" "${got[@]}" \
            "$(podman logs "${PROJECT}_app_1" 2>&1 | grep -m 3 'metrics:')"
    fi
}

buy 1 '{"amount": 1}'
expect "the demo's purchase: POST /buy/1 {\"amount\": 1} is 200 with 4 remaining" 200 \
    '.product_id == 1 and .amount == 1 and .remaining == 4 and (.order_id | type == "number")'

buy 1 '{"amount": 0}'
problem "{\"amount\": 0} is a 400 application/problem+json, invalid_amount" 400 invalid_amount

metrics "/metrics from the host through the published port: shared by every worker (stock_metrics_shared 1), 1 unit sold, on six scrapes" 1

note "$(podman logs "${PROJECT}_nginx_1" 2>&1 | grep -m 1 '/metrics answers')"
# (Through `stack.sh compose exec`, the users' way, whose exec session's
# conmon the teardown must stop: the last check looks for it.)
code=$(bg_wait 30 - "$STACK" compose exec -T app curl -s -o /dev/null -w '%{http_code}' \
    http://nginx:3000/metrics 2>&1)
same_403="/metrics from another address of the compose network (the app container, stack.sh compose exec) is 403"
if [[ $code == 403 ]]; then ok "$same_403"; else not_ok "$same_403" "got '$code'"; fi

# down (volumes kept), as `make compose-down` runs it: the firewall as it
# was. Then the socket volume as an image older than the fix left it
# (root's, mode 0755, no metrics file): the next start must put it right. The
# data volume is kept as it is.
if bg_wait 300 "$RUN/down.log" "$STACK" down; then
    ok "stack.sh down (make compose-down): volumes kept"
else
    bail "stack.sh down (make compose-down)" "$(tail_of "$RUN/down.log")"
fi
left=$(firewall_changes)
if [[ -z $left ]]; then
    ok "after stack.sh down the firewall (iptables, nftables) and IP forwarding are as before the run"
else
    not_ok "after stack.sh down the firewall (iptables, nftables) and IP forwarding are as before the run" "$left"
fi
if timeout 60 podman run --rm --pull=never --network none -v "${PROJECT}_fcgi-socket:/run/stock" "$BASE" \
    sh -c 'rm -rf /run/stock/* && chown root:root /run/stock && chmod 0755 /run/stock' \
    >>"$RUN/down.log" 2>&1 9>&-; then
    ok "the socket volume made root's 0755 and emptied"
else
    bail "the socket volume reset" "$(tail_of "$RUN/down.log")"
fi

up "stack.sh up again: all five healthy"

buy 1 '{"amount": 1}'
expect "after down and up the data is kept: the next purchase leaves 3" 200 '.remaining == 3'
buy 1 '{"amount": 3}'
expect "buying the rest (3) leaves 0" 200 '.remaining == 0'
buy 1 '{"amount": 1}'
problem "one more is a 409 application/problem+json, insufficient_stock" 409 insufficient_stock

metrics "/metrics after the start that repaired the socket volume: shared again, 4 units sold since, on six scrapes" 4

# ---------------------------------------------------- nothing left behind --

if bg_wait 300 "$RUN/down.log" "$STACK" down -v; then
    UP=0
    ok "stack.sh down -v"
else
    not_ok "stack.sh down -v" "$(tail_of "$RUN/down.log")"
fi
# The store is this test's alone, and this run the only one using it (the
# lock): anything in it now, anonymous volumes included, was left by this run.
# Outside it, netavark keeps the DNS records of each network for aardvark-dns.
left=$({
    podman ps -a --external --format 'container {{.Names}}'
    podman volume ls --format 'volume {{.Name}}'
    podman network ls --format 'network {{.Name}}' | grep -v '^network podman$'
    ls -d /run/containers/networks/aardvark-dns/"${PROJECT}"_* 2>/dev/null
} 2>&1)
if [[ -z $left ]]; then
    ok "no container, volume or network is left in the test's store, nor DNS records of its network"
else
    not_ok "no container, volume or network is left in the test's store, nor DNS records of its network" "$left"
fi

left=$(firewall_changes)
if [[ -z $left ]]; then
    ok "the firewall (iptables, nftables: rules, chains, tables) and IP forwarding are as before the run"
else
    not_ok "the firewall (iptables, nftables: rules, chains, tables) and IP forwarding are as before the run" "$left"
fi
# conmon, the API service and the healthcheck loop all name this test's
# store, run state or run directory on their command lines.
left=$(ours "$RUNROOT/" "$CACHE/")
if [[ -z $left ]]; then
    ok "no process of the test is left (API service, healthchecks, conmon)"
else
    not_ok "no process of the test is left" "$left"
fi

note "time: images and the first start $((T_SMOKE - T_START)) s, the rest $((SECONDS - T_SMOKE)) s"
echo "1..$T_N"
exit $((T_FAIL > 0))
