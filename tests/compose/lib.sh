# shellcheck shell=bash
# lib.sh -- the docker-compose demo on podman, for machines without Docker or
# an image registry. Sourced by stack.sh (`make compose-up`, `compose-down`)
# and by smoke.sh (the compose suite), which runs stack.sh for its up and
# down: the test goes the users' way. Bash; root only (podman's rootful mode).
#
# What it takes to run docker-compose.yml unchanged there:
#   - images: the registry's debian:bookworm-slim, postgres:15-bookworm and
#     redis:7-bookworm replaced by stand-ins built here (debian-slim/,
#     postgres/, redis/; see their headers), tagged with the official names
#     in a podman store of the demo's own, never the machine's, where they
#     would shadow the real images for everyone else;
#   - podman's settings for that store: runc (crun refuses hybrid cgroups),
#     ulimits within the hard limits (podman's default of 1048576 open files
#     needs CAP_SYS_RESOURCE: "error setting rlimit type 7"), no systemd
#     (cgroupfs, events and locks in files), no registry ever;
#   - podman's Docker-compatible API on a socket, for docker-compose;
#   - the healthchecks: podman runs them from systemd timers, and without
#     systemd nothing does, so `up` would stop at "health: starting"; a loop
#     here runs them;
#   - a teardown of what netavark leaves behind: firewall rules and chains,
#     the tables they made, IP forwarding.
#
# The caller sets, before sourcing (stack.sh has the users' defaults):
#   STORE    podman's store and settings (images, containers, volumes)
#   RUNROOT  podman's run state
#   STATE    this stack's API socket, its processes' PID files, logs, and
#            what the firewall was before `up`; every process started here
#            names it on its command line
#   TMP      build temporaries (large: not a tmpfs)
#   PROJECT  the compose project's name
#   CLEAN_ENV  1: docker-compose reads nothing from the caller's environment
#            or .env but PORT (the test); otherwise it does, as always
# Lock: fd 8 (stack.sh); every process that may outlive the caller is
# started without it (8>&-), and without fd 9 (smoke.sh's).

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
HERE=$ROOT/tests/compose
LABEL=stock-api.test-double
BASE=docker.io/library/debian:bookworm-slim
SOCK=$STATE/podman.sock
CHILD=

say() { echo "compose: $*"; }
# tail_of FILE [N]: its last lines.
tail_of() { tail -n "${2:-25}" "$1" 2>/dev/null; }

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
        timeout "$s" "$@" 8>&- 9>&- &
    else
        timeout "$s" "$@" >>"$log" 2>&1 8>&- 9>&- &
    fi
    CHILD=$!
    wait "$CHILD"
    local rc=$?
    CHILD=
    return $rc
}

# ours PATH...: the processes whose command line names one of the paths, as
# "PID COMMAND LINE".
ours() {
    local p cmd path
    for p in /proc/[0-9]*; do
        [[ ${p#/proc/} == @($$|$BASHPID) ]] && continue
        cmd=$(tr '\0\n' '  ' 2>/dev/null <"$p/cmdline") || continue
        for path in "$@"; do
            [[ $cmd == *"$path"* ]] && echo "${p#/proc/} $cmd" && break
        done
    done
}

# pid_of NAME: the PID in $STATE/NAME.pid, if that process still runs and
# names $STATE (a PID file that outlived its process names nobody else's).
pid_of() {
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") == *"$STATE"* ]] &&
        echo "$pid"
}

# demo_missing: what this needs and the machine lacks, " NAME" each (the
# Debian packages of the same names; flock, setsid: util-linux).
demo_missing() {
    local cmd
    for cmd in podman docker-compose debootstrap runc conmon iptables nft curl jq flock setsid timeout; do
        command -v "$cmd" >/dev/null || printf ' %s' "${cmd/nft/nftables}"
    done
    [[ -x /usr/lib/podman/netavark ]] || printf ' netavark'
    [[ -x /usr/lib/podman/aardvark-dns ]] || printf ' aardvark-dns'
}

# --------------------------------------------------------------- podman --

# podman_settings: this store's settings (the machine's /etc/containers is
# not read), and the environment that makes podman use them.
podman_settings() {
    mkdir -p "$STORE" "$RUNROOT" "$STATE" "$TMP" || return 1
    chmod 700 "$STATE"
    cat >"$STORE/containers.conf" <<EOF
# Written by tests/compose/lib.sh for its own podman store.
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
log_driver = "k8s-file"

[network]
network_config_dir = "$STORE/networks"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$RUNROOT/events.log"
lock_type = "file"
tmp_dir = "$RUNROOT/libpod"
EOF
    cat >"$STORE/storage.conf" <<EOF
# Written by tests/compose/lib.sh for its own podman store.
[storage]
driver = "overlay"
graphroot = "$STORE/storage"
runroot = "$RUNROOT/storage"
EOF
    # Nothing is ever pulled: every image is built here, and a missing one
    # must fail at once rather than reach for a registry.
    cat >"$STORE/registries.conf" <<EOF
# Written by tests/compose/lib.sh: no registry, ever.
unqualified-search-registries = []
[[registry]]
location = "docker.io"
blocked = true
EOF
    export CONTAINERS_CONF=$STORE/containers.conf
    export CONTAINERS_STORAGE_CONF=$STORE/storage.conf
    export CONTAINERS_REGISTRIES_CONF=$STORE/registries.conf
    # podman's and buildah's temporary files (build bundles among them).
    export TMPDIR=$TMP
}

# start_service: podman's Docker API on $SOCK, unless it already runs. In a
# session of its own: it outlives `make compose-up`, and a Ctrl-C to the
# caller's process group leaves it to the teardown, which needs it.
start_service() {
    local i
    if ! pid_of service >/dev/null; then
        rm -f "$SOCK"
        setsid podman system service --time=0 "unix://$SOCK" </dev/null >>"$STATE/service.log" 2>&1 8>&- 9>&- &
        echo $! >"$STATE/service.pid"
    fi
    for ((i = 0; i < 100; i++)); do
        [[ $(curl -s --max-time 2 --unix-socket "$SOCK" http://d/_ping 2>/dev/null) == OK ]] && return 0
        pid_of service >/dev/null || break
        sleep 0.1
    done
    say "podman's Docker API did not answer within 10 s"
    tail_of "$STATE/service.log" | sed 's/^/  /'
    return 1
}

# start_healthchecks: the loop that runs the project's healthchecks, unless
# it already runs: every 0.5 s for the first 2 minutes (a start waits on
# them), then every 2 s (the compose file's interval). It ends with the API
# service, which the teardown stops.
start_healthchecks() {
    pid_of healthchecks >/dev/null && return 0
    setsid bash -c 'trap "wait; exit 0" TERM
        for ((i = 0; ; i++)); do
            kill -0 "$2" 2>/dev/null || exit 0
            for c in $(podman ps -q --filter "label=com.docker.compose.project=$1" --filter status=running 2>/dev/null); do
                timeout 10 podman healthcheck run "$c" >/dev/null 2>&1 &
            done
            wait
            if ((i < 240)); then sleep 0.5; else sleep 2; fi
        done' "$STATE/healthchecks" "$PROJECT" "$(pid_of service)" </dev/null >/dev/null 2>&1 8>&- 9>&- &
    echo $! >"$STATE/healthchecks.pid"
}

# dc_argv ARGS...: DC, the command line of docker-compose ARGS on the project,
# through the API socket, with the compose file as it is. Builds go through
# the API with docker-compose's own client (COMPOSE_DOCKER_CLI_BUILD=0): it
# would otherwise run a `docker` CLI if one happens to be installed. With
# CLEAN_ENV=1, the settings come from the compose file's defaults and PORT
# alone, not from the caller's environment or .env.
dc_argv() {
    DC=(env -u COMPOSE_PROJECT_NAME -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH)
    if [[ ${CLEAN_ENV:-} == 1 ]]; then
        : >"$STATE/env"
        DC+=(-u WORKERS -u OVERFLOW_WORKERS -u PER_PRODUCT -u RATE_LIMIT -u METRICS_ALLOW
            -u LOCK_TTL_MS -u LOCK_WAIT_MS -u LOG_LEVEL -u COMPOSE_FILE -u COMPOSE_PROFILES)
        set -- --env-file "$STATE/env" "$@"
    fi
    [[ -n ${PORT:-} ]] && DC+=(PORT="$PORT")
    DC+=(DOCKER_HOST="unix://$SOCK" COMPOSE_DOCKER_CLI_BUILD=0 DOCKER_BUILDKIT=0
        docker-compose --project-directory "$ROOT" -f "$ROOT/docker-compose.yml"
        -p "$PROJECT" --ansi never "$@")
}
# dc SECONDS LOG ARGS...: docker-compose ARGS, its output added to LOG (-:
# this shell's), stopped after SECONDS.
dc() {
    local s=$1 log=$2
    shift 2
    dc_argv "$@"
    bg_wait "$s" "$log" "${DC[@]}"
}

# --------------------------------------------------------------- images --

# label IMAGE: the definition hash an image was built from, if any.
label() { podman image inspect --format "{{ index .Labels \"$LABEL\" }}" "$1" 2>/dev/null; }
hash_of() {
    local h
    h=$(cd "$HERE" && cat "$@" | sha256sum) || return 1
    echo "${h:0:16}"
}

# build_images: the stand-ins, rebuilt only when their definitions change (a
# label holds their hash), and the app image (build layers reused). One
# "compose: " line per image; 1 if one failed, with its log's tail.
build_images() {
    local t h s dir rc=0 base_hash base_id
    base_hash=$(hash_of debian-slim/build.sh) || return 1
    if [[ $(label "$BASE") == "$base_hash" ]]; then
        say "stand-in debian:bookworm-slim: cached"
    else
        t=$SECONDS
        # Every image here derives from the base: a new base makes them all
        # garbage, build caches included.
        if [[ -n $(podman images -q) ]]; then
            say "a new base image: removing every image of $STORE"
            podman rmi -a -f >/dev/null 2>&1
        fi
        rm -rf "$TMP/rootfs"
        if ! bg_wait 300 "$STATE/debootstrap.log" "$HERE/debian-slim/build.sh" "$TMP/rootfs"; then
            say "stand-in debian:bookworm-slim: debootstrap failed or took over 300 s (is deb.debian.org reachable?)"
            tail_of "$STATE/debootstrap.log" | sed 's/^/  /'
            rm -rf "$TMP/rootfs"
            return 1
        fi
        if ! tar -C "$TMP/rootfs" -c . | podman import -q --change 'CMD ["bash"]' \
            --change "LABEL $LABEL=$base_hash" - "$BASE" >/dev/null 2>"$STATE/import.log"; then
            say "stand-in debian:bookworm-slim: podman import failed"
            tail_of "$STATE/import.log" | sed 's/^/  /'
            rm -rf "$TMP/rootfs"
            return 1
        fi
        rm -rf "$TMP/rootfs"
        say "stand-in debian:bookworm-slim: built with debootstrap in $((SECONDS - t)) s"
    fi
    base_id=$(podman image inspect --format '{{.Id}}' "$BASE")

    # The stand-ins for postgres and redis, and the app image through
    # docker-compose, built side by side (they depend on the base only).
    local -A pid old
    local t_epoch
    t=$SECONDS
    t_epoch=$(date +%s)
    for s in postgres:15-bookworm redis:7-bookworm; do
        dir=${s%%:*}
        h=$(hash_of "$dir/Dockerfile" "$dir/docker-entrypoint.sh") || return 1
        h+=-${base_id:0:12}
        if [[ $(label "docker.io/library/$s") == "$h" ]]; then
            say "stand-in $s: cached"
            continue
        fi
        old[$s]=$(podman image inspect --format '{{.Id}}' "docker.io/library/$s" 2>/dev/null)
        timeout 300 podman build --pull=never --label "$LABEL=$h" -t "docker.io/library/$s" \
            "$HERE/$dir" </dev/null >"$STATE/build-$dir.log" 2>&1 8>&- 9>&- &
        pid[$s]=$!
        BUILDS+=($!)
    done
    # app, overflow and nginx share one image (redisdistributedlock-app),
    # which `up --build` would build three times over: once is enough, and
    # `up --no-build` fails if a service lacks it.
    if dc 600 "$STATE/build-app.log" build app; then
        say "docker-compose build: the app image in $((SECONDS - t)) s"
    else
        say "docker-compose build failed"
        tail_of "$STATE/build-app.log" | sed 's/^/  /'
        rc=1
    fi
    for s in "${!pid[@]}"; do
        if wait "${pid[$s]}"; then
            # (It finished when it last wrote its log.)
            say "stand-in $s: built in $(($(stat -c %Y "$STATE/build-${s%%:*}.log") - t_epoch)) s"
            [[ -n ${old[$s]} ]] && podman rmi "${old[$s]}" >/dev/null 2>&1
        else
            say "stand-in $s: podman build failed or took over 300 s"
            tail_of "$STATE/build-${s%%:*}.log" | sed 's/^/  /'
            rc=1
        fi
    done
    BUILDS=()
    return $rc
}

# ------------------------------------------------------------ the stack --

# wait_healthy: until every container of the project runs healthy (120 s
# at most; `up -d` has created them all); otherwise prints them.
wait_healthy() {
    local i all
    for ((i = 0; i < 240; i++)); do
        all=$(podman ps -a --filter "label=com.docker.compose.project=$PROJECT" \
            --format '{{.Status}}' 2>/dev/null)
        [[ -n $all ]] && ! grep -qv '(healthy)' <<<"$all" && return 0
        sleep 0.5
    done
    say "not every service became healthy within 120 s:"
    podman ps -a --filter "label=com.docker.compose.project=$PROJECT" \
        --format '{{.Names}} {{.Status}}' 2>&1 | sed 's/^/  /'
    return 1
}

# remove_project NAME [quiet]: its containers, networks and (with volumes)
# volumes, with podman itself (docker-compose down cannot, or a run killed
# before its `down` left them).
remove_project() {
    local name=$1 what item
    for what in container volume network; do
        [[ $what == volume && ${3-volumes} != volumes ]] && continue
        case $what in
        container) item=$(podman ps -a --format '{{.Names}}' 2>/dev/null) ;;
        volume) item=$(podman volume ls --format '{{.Name}}' 2>/dev/null) ;;
        network) item=$(podman network ls --format '{{.Name}}' 2>/dev/null) ;;
        esac
        for item in $(grep "^${name}_" <<<"$item"); do
            [[ ${2:-} == quiet ]] || say "removing the $what $item, left by an earlier run"
            case $what in
            container) timeout 60 podman rm -f -v -t 2 "$item" >/dev/null 2>&1 ;;
            *) timeout 30 podman "$what" rm -f "$item" >/dev/null 2>&1 ;;
            esac
        done
    done
}

# demo_up: the stack up and healthy, from whatever state (nothing, half a
# start, already up). Prints "compose: " lines; 1 on failure.
demo_up() {
    podman_settings || return 1
    # Before the first network of this stack: what its teardown restores.
    [[ -e $STATE/firewall.before ]] || firewall_snapshot "$STATE" || return 1
    start_service || return 1
    start_healthchecks
    build_images || return 1
    : >"$STATE/compose-up.log"
    if ! dc 240 "$STATE/compose-up.log" up -d --no-build; then
        say "docker-compose up failed:"
        # (Without its progress lines: "Creating x ... done".)
        grep -Ev '^\s*$|\.\.\. *(done)?\s*$' "$STATE/compose-up.log" | tail -n 15 | sed 's/^/  /'
        return 1
    fi
    if ! wait_healthy; then
        dc 30 - logs --no-color --tail 10 2>&1 | sed 's/^/  /'
        return 1
    fi
}

# demo_down [-v]: the stack down (its volumes too with -v), its processes
# stopped, and the machine's firewall, forwarding and mounts as before `up`.
demo_down() {
    local rc=0 pid
    podman_settings || return 1
    if start_service; then
        dc 120 "$STATE/compose.log" down "$@" --remove-orphans || {
            say "docker-compose down failed; removing the project with podman"
            rc=1
        }
    fi
    remove_project "$PROJECT" quiet "${1:+volumes}"
    stop_pid "$(pid_of healthchecks)" 10
    stop_pid "$(pid_of service)" 15
    # The conmon of an exec session through the API (`stack.sh compose
    # exec`) waits 5 minutes after its container has gone: the store is this
    # stack's, and nothing that works in it may stay.
    while read -r pid _; do
        stop_pid "$pid" 5
    done < <(ours "$STORE/storage/")
    # What an interrupted image build leaves: a buildah working container
    # that podman knows only from its storage.
    local id name status
    while IFS='|' read -r id name status; do
        [[ $status == Storage ]] || continue
        say "removing the build container $name, left by an interrupted build"
        timeout 30 podman rm -f "$id" >/dev/null 2>&1
    done < <(podman ps -a --external --format '{{.ID}}|{{.Names}}|{{.Status}}' 2>/dev/null)
    # podman's storage mounts its overlay directory on itself while it
    # works, and keeps the mount: nothing of this stack may hold the store.
    local mnt
    while read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
    done < <(awk -v s="$STORE/" -v r="$RUNROOT/" 'index($2, s) == 1 || index($2, r) == 1 { print $2 }' /proc/mounts | sort -r)
    firewall_restore "$STATE" || rc=1
    rm -f "$STATE"/{service,healthchecks}.pid "$SOCK"
    return $rc
}

# ------------------------------------------------------------- firewall --
#
# netavark gives each compose network firewall rules (iptables) and turns on
# IP forwarding, and does not take all of it away again: netavark 1.4 leaves
# its chains, the jumps to them, an empty port-forwarding chain per network
# and the bridge's isolation rules; and on a machine that had no iptables
# tables, iptables-nft made the filter and nat tables, which stay, empty.
# The teardown removes what was added since `up` took its snapshot and is
# netavark's, then the tables that were not there and are left empty (base
# chains, policy accept, no rule): the machine is left as it was found, not
# merely filtering the same. (Comparing "no table" with "an empty table" as
# equal would hide a leftover from the next comparison; deleting is exact.)
# With iptables-legacy, a table is a kernel module once loaded: it stays,
# and the compose suite reports it.
#
# Another netavark network may be up meanwhile (another podman store: `make
# compose-up` beside `make test`): then only what belongs to no network any
# more goes (rules naming an interface that is gone, empty chains nothing
# jumps to); the shared chains and forwarding stay for it.

# fw_lines: every rule and chain, per family and table, without counters:
# "ip nat -A POSTROUTING ...", "ip filter :NETAVARK_FORWARD -".
fw_lines() {
    local fam
    for fam in ip ip6; do
        "${fam}tables-save" 2>/dev/null |
            awk -v f="$fam" '/^\*/ { t = substr($0, 2) } /^[-:]/ { print f, t, $0 }'
    done | sed 's/ \[[0-9]*:[0-9]*\]$//' | sort
}
# fw_tables: the nftables tables, "FAMILY NAME" (none without nft).
fw_tables() {
    command -v nft >/dev/null || return 0
    nft -j list tables 2>/dev/null | jq -r '.nftables[] | .table // empty | "\(.family) \(.name)"' | sort
}
# fw_ruleset: all of it, as nft shows it without counters (with nft).
fw_ruleset() {
    command -v nft >/dev/null || return 0
    nft -s list ruleset 2>/dev/null
}

# firewall_snapshot DIR: the firewall and forwarding as they are, into DIR.
firewall_snapshot() {
    fw_lines >"$1/firewall.before.new" &&
        fw_tables >"$1/tables.before" &&
        cat /proc/sys/net/ipv4/ip_forward >"$1/ip_forward.before" &&
        mv "$1/firewall.before.new" "$1/firewall.before"
}

# fw_do FAMILY TABLE ARGS...: iptables or ip6tables on the table.
fw_do() {
    "${1}tables" -w 10 -t "$2" "${@:3}" 2>/dev/null
}

# firewall_restore DIR: as the snapshot in DIR was, as far as netavark's
# doing goes (see above).
firewall_restore() {
    local dir=$1 fam table rest chain live=0 changed
    [[ -e $dir/firewall.before ]] || return 0
    # (Not `fw_lines | grep -q`: with pipefail, grep's early exit fails the
    # pipeline whenever it matches.)
    changed=$(fw_lines)
    [[ $changed == *" -A NETAVARK_FORWARD "* ]] && live=1
    # Rules first: a chain can go only once nothing jumps to it. Each is
    # deleted as iptables-save wrote it, which iptables-restore parses.
    fw_lines | comm -13 "$dir/firewall.before" - | grep -i -e netavark -e podman |
        while read -r fam table rest; do
            [[ $rest == -A\ * ]] || continue
            if ((live)); then
                [[ " $rest " =~ \ -[io]\ ([^ ]+)\  && ! -e /sys/class/net/${BASH_REMATCH[1]} ]] ||
                    continue
            fi
            printf '*%s\n-D %s\nCOMMIT\n' "$table" "${rest#-A }" |
                "${fam}tables-restore" -w 10 --noflush 2>/dev/null
        done
    # Then the chains this run added that are empty and that nothing jumps to
    # (twice: a chain may have jumped to another).
    for _ in 1 2; do
        changed=$(fw_lines)
        comm -13 "$dir/firewall.before" - <<<"$changed" | grep -i -e netavark -e podman |
            while read -r fam table rest; do
                [[ $rest == :* ]] || continue
                chain=${rest#:}
                chain=${chain%% *}
                grep -q -e "^$fam $table -A $chain " -e "^$fam $table .* -j $chain\( \|$\)" <<<"$changed" &&
                    continue
                fw_do "$fam" "$table" -X "$chain"
            done
    done
    if ((live)); then
        # netavark 1.4 takes the jump from FORWARD to its isolation chain
        # away with any network it tears down completely, now and then, the
        # other networks' too: a jump from a built-in chain to one of its
        # chains that was there before `up` and is gone goes back, at the
        # top, where netavark puts it.
        fw_lines | comm -23 "$dir/firewall.before" - |
            while read -r fam table rest; do
                [[ $rest =~ ^-A\ ([A-Z]+)\ -j\ (NETAVARK[^ ]*)$ ]] || continue
                say "putting back $fam $table $rest (netavark took it with this stack's network)"
                fw_do "$fam" "$table" -I "${BASH_REMATCH[1]}" 1 -j "${BASH_REMATCH[2]}"
            done
        say "another podman network is up: netavark's shared chains and IP forwarding are left to it"
        return 0
    fi
    sysctl -qw net.ipv4.ip_forward="$(cat "$dir/ip_forward.before")" 2>/dev/null
    # The tables that were not there and are empty now.
    local name
    fw_tables | comm -13 "$dir/tables.before" - | while read -r fam name; do
        [[ $fam == ip || $fam == ip6 ]] || continue
        nft -j list table "$fam" "$name" 2>/dev/null | jq -e '[.nftables[]] |
            (map(select(.rule)) | length == 0) and
            (map(.chain // empty) | all(.hook != null and .policy == "accept"))' >/dev/null &&
            nft delete table "$fam" "$name"
    done
    rm -f "$dir"/{firewall,tables,ip_forward}.before
}
