#!/bin/sh
# deps.sh [run|test|bench] -- makes sure the Debian packages a make target
# needs are installed: `run` (the default) what `make run` builds and starts,
# `test` that plus what `make test` runs, `bench` the benchmark's own tools.
#
# As root, installs what is missing (without starting the system services
# those packages ship: the stacks run their own PostgreSQL, Redis and nginx).
# Otherwise prints the exact apt-get line and fails. Every failure ends with
# one line that says what failed and what to do; success prints nothing when
# nothing was missing.
#
# For tests/integration/deps.sh, which runs this against stand-ins for
# dpkg-query, apt-get and id: POLICY_RC_D is where the policy file goes
# (default /usr/sbin/policy-rc.d, where Debian's invoke-rc.d looks).
set -eu

RUN_PACKAGES="gcc make pkg-config libc6-dev
libfcgi-dev libhiredis-dev libpq-dev libjson-c-dev
spawn-fcgi multiwatch nginx redis-server postgresql postgresql-client curl"
# jq and the compilers for the tests; podman and its helpers, debootstrap (and
# the archive key it checks the base image with) and
# docker-compose for the compose smoke test (tests/compose/); iproute2,
# nftables and socat for the cluster test (tests/cluster/), socat also for a
# relay in the outages test; pg_auto_failover (its PostgreSQL 15 extension
# pulls in pg_autoctl) for the ha test; its sentinels are redis-server --sentinel.
TEST_PACKAGES="jq clang-format clang libclang-rt-dev docker-compose
podman runc netavark aardvark-dns iptables debootstrap debian-archive-keyring
iproute2 nftables socat postgresql-15-auto-failover"
BENCH_PACKAGES="wrk gnuplot-nox bsdextrautils"

case "${1:-run}" in
run) packages=$RUN_PACKAGES ;;
test) packages="$RUN_PACKAGES $TEST_PACKAGES" ;;
bench) packages=$BENCH_PACKAGES ;;
*)
    echo "deps: unknown set '$1' (run, test or bench)" >&2
    exit 2
    ;;
esac

# The packages of $packages that dpkg does not list as installed.
missing_packages() {
    for p in $packages; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        case "$status" in
        *" installed") ;;
        *) printf ' %s' "$p" ;;
        esac
    done
}

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: this is not a Debian system (no dpkg-query): install the equivalents of:" \
        $packages >&2
    exit 1
fi
missing=$(missing_packages)
[ -z "$missing" ] && exit 0

# --no-remove: an install that would remove something (runc conflicts with
# Docker's containerd.io, say) fails instead of taking it away.
line="apt-get install -y --no-install-recommends --no-remove$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages:$missing. Install them with:" >&2
    echo "  sudo $line" >&2
    exit 1
fi

echo "deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive

# Debian starts a package's service on install; a policy-rc.d answering 101
# ("action forbidden") stops that, for this install only. One that is already
# there (container images ship one) is the machine's: it stays as it is,
# unless it carries our mark (a run killed before it could clean up).
policy=${POLICY_RC_D:-/usr/sbin/policy-rc.d}
mark="# made by redisdistributedlock's deps.sh for one install"
if [ -f "$policy" ] && grep -qxF "$mark" "$policy"; then
    echo "deps: removing $policy, left by an install that was killed"
    rm -f "$policy"
fi
own_policy=no
# Removed however this script ends: left behind, it would block every
# service start on the host. The EXIT trap keeps the script's own status
# (a trap whose last command fails would otherwise become it).
cleanup() {
    if [ "$own_policy" = yes ]; then rm -f "$policy"; fi
}
trap 'status=$?; cleanup; exit $status' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
if [ ! -e "$policy" ]; then
    own_policy=yes
    printf '#!/bin/sh\n%s\nexit 101\n' "$mark" >"$policy"
    chmod +x "$policy"
fi

# Waits for the dpkg lock (unattended-upgrades holds it on a fresh machine's
# first boot) rather than failing at once.
# shellcheck disable=SC2086
install_missing() { apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends --no-remove $missing; }

# A stale package list makes install fail on a fresh machine: update it once.
if ! install_missing; then
    echo "deps: apt-get install failed; updating the package lists and trying again"
    if ! apt-get update || ! install_missing; then
        echo "deps: could not install:$missing. Check the network, apt's sources and that no other apt runs, then run: apt-get update && $line" >&2
        exit 1
    fi
fi
still=$(missing_packages)
if [ -n "$still" ]; then
    echo "deps: apt-get succeeded but these are still not installed:$still. Run: $line" >&2
    exit 1
fi
