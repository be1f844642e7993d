#!/usr/bin/env bash
# smoke.sh -- the docker-compose stack, built and run for real: docker-compose
# (1.29) against podman's Docker-compatible API, with docker-compose.yml and
# the Dockerfile as they are. Prints TAP; run it as root:
#
#   tests/compose/smoke.sh
#
# Registry images cannot be fetched here, so the official debian, postgres
# and redis images are replaced by stand-ins, test doubles defined beside
# this script and tagged with the official names (debian:bookworm-slim,
# postgres:15-bookworm, redis:7-bookworm): what this proves about PostgreSQL
# and Redis holds as far as the stand-ins reproduce the official images.
#
# It checks: the images build; the stack comes up, each service once what it
# depends on is healthy, and `docker-compose ps` shows all five healthy; the
# demo's purchase, a problem+json 400 and a 409 once sold out, through the
# published port; /metrics from the host, the same numbers (every worker's)
# on every scrape, and 403 from elsewhere on the compose network; after
# `down` and `up`, with a socket volume as an older image left it, the data
# is still there and the metrics are shared again; after `down -v` nothing of
# the test's compose project remains, nor any process it started.
#
# Where things live:
#   /var/cache/stock-api-compose-smoke  podman's store for this test alone
#       (images, containers, volumes, network definitions) and its settings.
#       Not the machine's store: the stand-ins, tagged with the official
#       names there, would shadow the real images for anyone using podman on
#       this machine. Kept between runs as a cache: the stand-ins are rebuilt
#       only when their definitions change (a label holds their hash) and the
#       app image reuses its build layers. About 650 MB. To look inside,
#       or (with `system reset -f`, then rm -rf) to reclaim the space:
#         CONTAINERS_CONF=/var/cache/stock-api-compose-smoke/containers.conf \
#         CONTAINERS_STORAGE_CONF=/var/cache/stock-api-compose-smoke/storage.conf podman images
#       It also holds one directory per run (the API socket, logs, build
#       temporaries), removed at the end.
#   /run/stock-api-compose-smoke  podman's run state.
# Whatever its store, podman 4.3 also writes a cache of image blob digests to
# /var/lib/containers/cache, and netavark its address allocations and DNS
# records for the test's networks (removed with them) to
# /run/containers/networks; neither holds images or changes what other users
# of podman see.
#
# Runs beside `make run` and `make test`: a free port, a compose project of
# its own (stocksmoke<pid>), its own API socket. One run at a time (a lock);
# leftovers of a run that was killed are removed, loudly, by the next one.
# Everything started is stopped, by PID, on exit, failure and interrupt.
# Network: the builds fetch packages from deb.debian.org; every request the
# test makes goes to 127.0.0.1 or stays inside the containers.
set -uo pipefail
# tests/run.sh reads this through tee: once an interrupt has ended tee, a
# write must not end the cleanup with it.
trap '' PIPE

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/tests/compose
CACHE=/var/cache/stock-api-compose-smoke
RUNROOT=/run/stock-api-compose-smoke
PREFIX=stocksmoke
PROJECT=$PREFIX$$
RUN=$CACHE/runs/$PROJECT
LABEL=stock-api.test-double
T_START=$SECONDS

. "$ROOT/tests/tap.sh"
# bail NAME [WHY...]: a failure after which nothing else can be checked.
bail() {
    not_ok "$@"
    exit 1
}
note() { echo "# $*"; }
# tail_of FILE: its last lines.
tail_of() { tail -n "${2:-25}" "$1" 2>/dev/null; }

# ---------------------------------------------------------------- cleanup --

SERVICE_PID=
HEALTH_PID=
CHILD=
BUILDS=()
UP=0
LOCKED=0
CLEANED=0

# stop_pid PID SECONDS: TERM, then KILL after SECONDS; by PID only.
stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

# netavark sets up each compose network's firewall rules (iptables) and
# turns on IP forwarding, and does not take all of it away again (netavark
# 1.4 leaves an empty port-forwarding chain per network, and its bridge's
# isolation rules). What this run added is removed, and forwarding set back;
# what was there before stays as it was.
FIREWALL_BEFORE=
firewall() { # the rules and chains, per table, without counters
    iptables-save 2>/dev/null | awk '/^\*/ { t = substr($0, 2) } /^[-:]/ { print t, $0 }' |
        sed 's/ \[[0-9]*:[0-9]*\]$//' | sort
}
restore_firewall() {
    [[ -n $FIREWALL_BEFORE && -e $FIREWALL_BEFORE ]] || return 0
    local table rest
    # Rules first: a chain can go only once nothing jumps to it. Each is
    # deleted as iptables-save wrote it, which iptables-restore parses.
    firewall | comm -13 "$FIREWALL_BEFORE" - | grep -i -e netavark -e podman |
        while read -r table rest; do
            case $rest in
            -A\ *) printf '*%s\n-D %s\nCOMMIT\n' "$table" "${rest#-A }" |
                iptables-restore --noflush 2>/dev/null ;;
            esac
        done
    firewall | comm -13 "$FIREWALL_BEFORE" - | grep -i -e netavark -e podman |
        while read -r table rest; do
            case $rest in
            :*)
                rest=${rest#:}
                iptables -t "$table" -F "${rest%% *}" 2>/dev/null
                iptables -t "$table" -X "${rest%% *}" 2>/dev/null
                ;;
            esac
        done
    sysctl -qw net.ipv4.ip_forward="$(cat "$RUN/ip_forward.before")" 2>/dev/null
}

cleanup() {
    local rc=$?
    trap '' INT TERM
    ((CLEANED)) && exit "$rc"
    CLEANED=1
    local pid
    for pid in $CHILD "${BUILDS[@]}"; do stop_pid "$pid" 5; done
    if ((UP)); then
        dc 120 "$RUN/compose.log" down -v --remove-orphans ||
            note "docker-compose down failed; removing the project with podman"
        remove_project "$PROJECT" quiet
    fi
    stop_pid "$HEALTH_PID" 10
    stop_pid "$SERVICE_PID" 15
    if ((LOCKED)); then
        remove_build_containers
        restore_firewall
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

# bg_wait SECONDS LOG COMMAND...: runs the command under timeout, its
# output added to LOG (- for this shell's), in the background, and waits for
# it, so that a signal to this script is handled at once (bash runs traps
# only between foreground commands); CHILD is the timeout process, which
# passes a TERM on to the command. (Never a redirection on the call itself:
# a trap would run with it, and its output would go to the log.)
bg_wait() {
    local s=$1 log=$2
    shift 2
    if [[ $log == - ]]; then
        timeout "$s" "$@" 9>&- &
    else
        timeout "$s" "$@" >>"$log" 2>&1 9>&- &
    fi
    CHILD=$!
    wait "$CHILD"
    local rc=$?
    CHILD=
    return $rc
}

# --------------------------------------------------------- prerequisites --

missing=()
if ((EUID != 0)); then
    echo "ok 1 - compose # SKIP needs root (podman's rootful mode, debootstrap)"
    echo "1..1"
    exit 0
fi
for cmd in podman docker-compose debootstrap runc conmon iptables curl jq flock setsid timeout; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
done
[[ -x /usr/lib/podman/netavark ]] || missing+=(netavark)
[[ -x /usr/lib/podman/aardvark-dns ]] || missing+=(aardvark-dns)
if ((${#missing[@]})); then
    bail "prerequisites: missing ${missing[*]}" \
        "podman, runc, netavark, aardvark-dns, debootstrap, docker-compose, curl and jq are" \
        "Debian packages of the same names; netavark sets up the compose network and the" \
        "published port with iptables (package iptables); flock, setsid: util-linux"
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
mkdir -p "$RUN/tmp" && chmod 700 "$RUN" || bail "cannot create $RUN"
firewall >"$RUN/firewall.before"
cat /proc/sys/net/ipv4/ip_forward >"$RUN/ip_forward.before"
FIREWALL_BEFORE=$RUN/firewall.before
# podman's and buildah's temporary files (build bundles among them) too.
export TMPDIR=$RUN/tmp

# podman's settings, this test's own (the machine's /etc/containers is not
# read): runc, since crun refuses this machine's hybrid cgroups; ulimits
# within the hard limits (podman's default of 1048576 files needs
# CAP_SYS_RESOURCE); no systemd: cgroupfs, events and locks in files.
cat >"$CACHE/containers.conf" <<EOF
# Written by tests/compose/smoke.sh for its own podman store.
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
log_driver = "k8s-file"

[network]
network_config_dir = "$CACHE/networks"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$RUNROOT/events.log"
lock_type = "file"
tmp_dir = "$RUNROOT/libpod"
EOF
cat >"$CACHE/storage.conf" <<EOF
# Written by tests/compose/smoke.sh for its own podman store.
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$RUNROOT/storage"
EOF
# Nothing is ever pulled: every image is built here, and a missing one must
# fail at once rather than reach for a registry.
cat >"$CACHE/registries.conf" <<EOF
# Written by tests/compose/smoke.sh: no registry, ever.
unqualified-search-registries = []
[[registry]]
location = "docker.io"
blocked = true
EOF
export CONTAINERS_CONF=$CACHE/containers.conf
export CONTAINERS_STORAGE_CONF=$CACHE/storage.conf
export CONTAINERS_REGISTRIES_CONF=$CACHE/registries.conf

# ------------------------------------------------------------- leftovers --

# remove_project NAME [quiet]: its containers, volumes and networks, with
# podman itself (a run killed before its `down` leaves them).
remove_project() {
    local name=$1 what item
    for what in container volume network; do
        case $what in
        container) item=$(podman ps -a --format '{{.Names}}' 2>/dev/null) ;;
        volume) item=$(podman volume ls --format '{{.Name}}' 2>/dev/null) ;;
        network) item=$(podman network ls --format '{{.Name}}' 2>/dev/null) ;;
        esac
        for item in $(grep "^${name}_" <<<"$item"); do
            [[ ${2:-} == quiet ]] || note "removing the $what $item, left by an earlier run"
            case $what in
            container) timeout 60 podman rm -f -v -t 2 "$item" >/dev/null 2>&1 ;;
            *) timeout 30 podman "$what" rm -f "$item" >/dev/null 2>&1 ;;
            esac
        done
    done
}

# ours PATH...: the processes whose command line names one of the paths, as
# "PID COMMAND LINE".
ours() {
    local p cmd path
    for p in /proc/[0-9]*; do
        [[ ${p#/proc/} == "$$" ]] && continue
        cmd=$(tr '\0\n' '  ' 2>/dev/null <"$p/cmdline") || continue
        for path in "$@"; do
            [[ $cmd == *"$path"* ]] && echo "${p#/proc/} $cmd" && break
        done
    done
}
# remove_build_containers: what an interrupted image build leaves, a
# buildah working container that podman knows only from its storage.
remove_build_containers() {
    local id name status
    while IFS='|' read -r id name status; do
        [[ $status == Storage ]] || continue
        note "removing the build container $name, left by an interrupted build"
        timeout 30 podman rm -f "$id" >/dev/null 2>&1
    done < <(podman ps -a --external --format '{{.ID}}|{{.Names}}|{{.Status}}' 2>/dev/null)
}

# Processes of runs that were killed (the API service, the healthcheck
# loop, anything working in their temporary directory): found by their
# command lines, which name their run's directory, and stopped by PID.
for dir in "$CACHE"/runs/"$PREFIX"*; do
    [[ $dir == "$RUN" || ! -d $dir ]] && continue
    while read -r pid cmd; do
        note "stopping process $pid, left by an earlier run: ${cmd:0:100}"
        stop_pid "$pid" 10
    done < <(ours "$dir/")
    rm -rf "$dir"
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
remove_build_containers

# ----------------------------------------------------- the API service --

SOCK=$RUN/podman.sock
# In a session of its own, so that a Ctrl-C to this script's process group
# leaves it to the cleanup, which needs it for `docker-compose down`.
setsid podman system service --time=0 "unix://$SOCK" </dev/null >"$RUN/service.log" 2>&1 9>&- &
SERVICE_PID=$!
for ((i = 0; i < 100; i++)); do
    [[ $(curl -s --max-time 2 --unix-socket "$SOCK" http://d/_ping 2>/dev/null) == OK ]] && break
    kill -0 "$SERVICE_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ $(curl -s --max-time 2 --unix-socket "$SOCK" http://d/_ping 2>/dev/null) == OK ]]; then
    ok "podman's Docker API on a socket of this run's own (pid $SERVICE_PID)"
else
    bail "podman's Docker API did not answer within 10 s" "$(tail_of "$RUN/service.log")"
fi

# dc SECONDS LOG ARGS...: docker-compose on this test's project, the compose
# file as it is, with its defaults: nothing from the caller's environment or
# .env but the port. Builds go through the API with docker-compose's own
# client (COMPOSE_DOCKER_CLI_BUILD=0): it would otherwise run a `docker` CLI
# if one happens to be installed, and the result would depend on it.
PORT=$("$ROOT/tests/stack/free-port.sh" 1)
: >"$RUN/env"
dc() {
    local s=$1 log=$2
    shift 2
    bg_wait "$s" "$log" env -u WORKERS -u OVERFLOW_WORKERS -u PER_PRODUCT -u RATE_LIMIT \
        -u METRICS_ALLOW -u LOCK_TTL_MS -u LOCK_WAIT_MS -u LOG_LEVEL -u COMPOSE_FILE \
        -u COMPOSE_PROJECT_NAME -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
        DOCKER_HOST="unix://$SOCK" COMPOSE_DOCKER_CLI_BUILD=0 DOCKER_BUILDKIT=0 PORT="$PORT" \
        docker-compose --project-directory "$ROOT" -f "$ROOT/docker-compose.yml" \
        -p "$PROJECT" --env-file "$RUN/env" --ansi never "$@"
}

# Healthchecks: podman runs them from systemd timers, and there is no
# systemd here, so this loop runs them (docker-compose's service_healthy
# waits on their results). A process of its own, stopped by PID; its
# command line names this run's directory. Bounded: 1200 rounds.
bash -c 'trap "wait; exit 0" TERM
    for ((i = 0; i < 1200; i++)); do
        for c in $(podman ps -q --filter "label=com.docker.compose.project=$1" --filter status=running 2>/dev/null); do
            timeout 10 podman healthcheck run "$c" >/dev/null 2>&1 &
        done
        wait
        sleep 0.5
    done' "$RUN/healthchecks" "$PROJECT" </dev/null >/dev/null 2>&1 9>&- &
HEALTH_PID=$!

# ----------------------------------------------------------------- images --

# label IMAGE: the definition hash an image was built from, if any.
label() { podman image inspect --format "{{ index .Labels \"$LABEL\" }}" "$1" 2>/dev/null; }
hash_of() {
    local h
    h=$(cd "$HERE" && cat "$@" | sha256sum) || return 1
    echo "${h:0:16}"
}

T_IMAGES=$SECONDS
BASE=docker.io/library/debian:bookworm-slim
base_hash=$(hash_of debian-slim/build.sh) || bail "cannot read $HERE/debian-slim/build.sh"
if [[ $(label "$BASE") == "$base_hash" ]]; then
    ok "stand-in debian:bookworm-slim: cached"
else
    t=$SECONDS
    # Every image here derives from the base: a new base makes them all
    # garbage, build caches included.
    if [[ -n $(podman images -q) ]]; then
        note "a new base image: removing every image of $CACHE"
        podman rmi -a -f >/dev/null 2>&1
    fi
    rm -rf "$RUN/rootfs"
    if ! bg_wait 300 "$RUN/debootstrap.log" "$HERE/debian-slim/build.sh" "$RUN/rootfs"; then
        bail "stand-in debian:bookworm-slim: debootstrap failed or took over 300 s (is deb.debian.org reachable?)" \
            "$(tail_of "$RUN/debootstrap.log")"
    fi
    if ! tar -C "$RUN/rootfs" -c . | podman import -q --change 'CMD ["bash"]' \
        --change "LABEL $LABEL=$base_hash" - "$BASE" >/dev/null 2>"$RUN/import.log"; then
        bail "stand-in debian:bookworm-slim: podman import failed" "$(tail_of "$RUN/import.log")"
    fi
    rm -rf "$RUN/rootfs"
    ok "stand-in debian:bookworm-slim: built with debootstrap in $((SECONDS - t)) s"
fi
base_id=$(podman image inspect --format '{{.Id}}' "$BASE")

# The stand-ins for postgres and redis, and the app image through
# docker-compose, built side by side (they depend on the base only).
declare -A STANDIN_PID OLD
t=$SECONDS
t_epoch=$(date +%s)
for s in postgres:15-bookworm redis:7-bookworm; do
    dir=${s%%:*}
    h=$(hash_of "$dir/Dockerfile" "$dir/docker-entrypoint.sh") || bail "cannot read $HERE/$dir"
    h+=-${base_id:0:12}
    if [[ $(label "docker.io/library/$s") == "$h" ]]; then
        ok "stand-in $s: cached"
        continue
    fi
    OLD[$s]=$(podman image inspect --format '{{.Id}}' "docker.io/library/$s" 2>/dev/null)
    timeout 300 podman build --pull=never --label "$LABEL=$h" -t "docker.io/library/$s" \
        "$HERE/$dir" </dev/null >"$RUN/build-$dir.log" 2>&1 9>&- &
    STANDIN_PID[$s]=$!
    BUILDS+=($!)
done
# app, overflow and nginx share one image (redisdistributedlock-app), which
# `up --build` would build three times over: once is enough, and `up
# --no-build` fails if a service lacks it.
if dc 600 "$RUN/build-app.log" build app; then
    ok "docker-compose build: the app image in $((SECONDS - t)) s"
else
    not_ok "docker-compose build" "$(tail_of "$RUN/build-app.log")"
fi
for s in "${!STANDIN_PID[@]}"; do
    if wait "${STANDIN_PID[$s]}"; then
        # (It finished when it last wrote its log.)
        ok "stand-in $s: built in $(($(stat -c %Y "$RUN/build-${s%%:*}.log") - t_epoch)) s"
        [[ -n ${OLD[$s]} ]] && podman rmi "${OLD[$s]}" >/dev/null 2>&1
    else
        not_ok "stand-in $s: podman build failed or took over 300 s" \
            "$(tail_of "$RUN/build-${s%%:*}.log")"
    fi
done
BUILDS=()
((T_FAIL == 0)) || bail "images: cannot run the stack without them"
T_IMAGES=$((SECONDS - T_IMAGES))

# ------------------------------------------------------------ the stack --

T_SMOKE=$SECONDS
# wait_healthy: until the five containers are healthy (120 s at most).
wait_healthy() {
    local i n
    for ((i = 0; i < 240; i++)); do
        n=$(podman ps --filter "label=com.docker.compose.project=$PROJECT" \
            --format '{{.Status}}' 2>/dev/null | grep -c '(healthy)')
        ((n == 5)) && return 0
        sleep 0.5
    done
    podman ps -a --filter "label=com.docker.compose.project=$PROJECT" \
        --format '{{.Names}} {{.Status}}' 2>&1 | sed 's/^/# /'
    return 1
}

# up WHAT: docker-compose up, then every service healthy.
up() {
    UP=1
    if ! dc 240 "$RUN/compose.log" up -d --no-build; then
        bail "$1: docker-compose up failed" "$(tail_of "$RUN/compose.log")" \
            "$(dc 30 - logs --no-color --tail 10 2>&1)"
    fi
    wait_healthy || bail "$1: not every service became healthy within 120 s" \
        "$(dc 30 - logs --no-color --tail 10 2>&1)"
    ok "$1"
}

up "docker-compose up: each service started once its dependencies were healthy, all five healthy"

out=$(dc 60 - ps 2>&1)
if [[ $(grep -c 'Up (healthy)' <<<"$out") == 5 ]]; then
    ok "docker-compose ps: five services, all Up (healthy)"
else
    not_ok "docker-compose ps: five services, all Up (healthy)" "$out"
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
code=$(timeout 30 podman exec "${PROJECT}_app_1" curl -s -o /dev/null -w '%{http_code}' \
    http://nginx:3000/metrics 2>&1)
same_403="/metrics from another address of the compose network (the app container) is 403"
if [[ $code == 403 ]]; then ok "$same_403"; else not_ok "$same_403" "got '$code'"; fi

# down, and the socket volume as an image older than the fix left it (root's,
# mode 0755, no metrics file): the next start must put it right. The data
# volume is kept as it is.
if dc 120 "$RUN/compose.log" down &&
    timeout 60 podman run --rm --pull=never --network none -v "${PROJECT}_fcgi-socket:/run/stock" "$BASE" \
        sh -c 'rm -rf /run/stock/* && chown root:root /run/stock && chmod 0755 /run/stock' \
        >>"$RUN/compose.log" 2>&1 9>&-; then
    ok "docker-compose down (volumes kept), the socket volume made root's 0755 and emptied"
else
    bail "docker-compose down, then the socket volume reset" "$(tail_of "$RUN/compose.log")"
fi

up "docker-compose up again: all five healthy"

buy 1 '{"amount": 1}'
expect "after down and up the data is kept: the next purchase leaves 3" 200 '.remaining == 3'
buy 1 '{"amount": 3}'
expect "buying the rest (3) leaves 0" 200 '.remaining == 0'
buy 1 '{"amount": 1}'
problem "one more is a 409 application/problem+json, insufficient_stock" 409 insufficient_stock

metrics "/metrics after the start that repaired the socket volume: shared again, 4 units sold since, on six scrapes" 4

T_SMOKE=$((SECONDS - T_SMOKE))

# ---------------------------------------------------- nothing left behind --

if dc 120 "$RUN/compose.log" down -v --remove-orphans; then
    UP=0
    ok "docker-compose down -v"
else
    not_ok "docker-compose down -v" "$(tail_of "$RUN/compose.log")"
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

stop_pid "$HEALTH_PID" 10
HEALTH_PID=
stop_pid "$SERVICE_PID" 15
SERVICE_PID=
restore_firewall
left=$(firewall | comm -3 "$FIREWALL_BEFORE" -)
if [[ -z $left && $(cat /proc/sys/net/ipv4/ip_forward) == "$(cat "$RUN/ip_forward.before")" ]]; then
    ok "the firewall (iptables) and IP forwarding are as before the run"
else
    not_ok "the firewall (iptables) and IP forwarding are as before the run" "$left"
fi
# conmon, the API service and the healthcheck loop all name this test's
# store, run state or run directory on their command lines.
left=$(ours "$RUNROOT/" "$CACHE/")
if [[ -z $left ]]; then
    ok "no process of the test is left (API service, healthchecks, conmon)"
else
    not_ok "no process of the test is left" "$left"
fi

note "time: images $T_IMAGES s, stack $T_SMOKE s, total $((SECONDS - T_START)) s"
echo "1..$T_N"
exit $((T_FAIL > 0))
