#!/usr/bin/env bash
# stack.sh -- the docker-compose demo, run with podman on a machine without a
# Docker engine or an image registry (like this project's): what `make
# compose-up` and `make compose-down` run. With Docker, `docker-compose up
# --build` does the same. As root:
#
#   stack.sh up           build what is missing, start the five services, and
#                         return once all are healthy (the port: PORT, 3000)
#   stack.sh down [-v]    stop and remove them (-v: the volumes too, the data
#                         with them), stop podman's API and the healthchecks,
#                         and put the firewall and IP forwarding back as `up`
#                         found them
#   stack.sh compose ARGS docker-compose ARGS on this stack, through podman's
#                         API (ps, logs, exec nginx sh, ...)
#
# How, and why each step: lib.sh. The compose suite (smoke.sh) runs this
# script for its own up and down, in a store of its own.
#
# Where things live (the DEMO_* variables move them; smoke.sh does):
#   /var/cache/stock-api-compose   podman's store for the demo alone (images,
#       containers, volumes), its settings and build temporaries; about
#       650 MB, kept as a cache: a second `up` builds nothing. To reclaim the
#       space: `stack.sh down -v`, then
#         CONTAINERS_CONF=/var/cache/stock-api-compose/containers.conf \
#         CONTAINERS_STORAGE_CONF=/var/cache/stock-api-compose/storage.conf podman system reset -f
#       and rm -rf the directory.
#   /run/stock-api-compose         podman's run state; stack/ holds the API
#       socket, the PID files, the logs and the firewall as it was before up.
# A failed or interrupted `up` takes down what it started (volumes kept) and
# says why on its last line.
set -uo pipefail
trap '' PIPE

STORE=${DEMO_STORE:-/var/cache/stock-api-compose}
RUNROOT=${DEMO_RUNROOT:-/run/stock-api-compose}
STATE=${DEMO_STATE:-$RUNROOT/stack}
TMP=${DEMO_TMP:-$STORE/tmp}
PROJECT=${DEMO_PROJECT:-stock-api}
CLEAN_ENV=${DEMO_CLEAN_ENV:-}
BUILDS=()
# shellcheck source=tests/compose/lib.sh
. "$(dirname "$0")/lib.sh"

usage() {
    echo "usage: $0 up | down [-v] | compose ARGS..." >&2
    exit 2
}

# fail WHAT [WHAT TO DO]: the last line, what failed and what to do.
fail() {
    echo "compose: $1; ${2:-fix that, then 'make compose-up' again}" >&2
    exit 1
}

interrupted() {
    trap '' INT TERM
    local pid
    for pid in $CHILD "${BUILDS[@]}"; do stop_pid "$pid" 5; done
    say "interrupted: taking down what started (volumes kept)"
    demo_down >/dev/null 2>&1
    exit 130
}

cmd=${1:-}
shift
case $cmd in
up) (($# == 0)) || usage ;;
down) [[ $# == 0 || $* == -v ]] || usage ;;
compose) (($# > 0)) || usage ;;
*) usage ;;
esac

if ((EUID != 0)); then
    echo "compose: needs root (podman's rootful mode, debootstrap): sudo make compose-$cmd" >&2
    exit 1
fi
missing=$(demo_missing)
[[ -z $missing ]] || fail "missing:$missing" "'sudo tests/stack/deps.sh test' installs them"

if [[ $cmd == compose ]]; then
    podman_settings || exit 1
    pid_of service >/dev/null || fail "not up" "'make compose-up' first"
    dc_argv "$@"
    exec "${DC[@]}"
fi

mkdir -p "$STORE" || exit 1
exec 8>"$STORE/stack.lock"
flock -w 600 8 || fail "another up or down of this stack holds $STORE/stack.lock" "wait for it"

case $cmd in
up)
    trap 'interrupted' INT TERM
    demo_up || {
        trap '' INT TERM
        demo_down >/dev/null 2>&1
        fail "the stack did not come up (the lines above say why; logs in $STATE); what started is down again"
    }
    say "ready: http://$(dc 30 - port nginx 3000 2>/dev/null | tail -n 1)" \
        "(tests/compose/stack.sh compose ps; make compose-down stops it)"
    ;;
down)
    trap '' INT
    demo_down "$@" || fail "down: not everything could be removed (the lines above say what)" \
        "'make compose-down' again"
    ;;
esac
