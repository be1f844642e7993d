#!/bin/sh
# Makes sure the Debian packages the project needs are installed.
#
# As root, installs what is missing (without starting the system services
# those packages ship: the stacks run their own PostgreSQL, Redis and nginx).
# Otherwise prints the exact apt-get line and fails.
set -eu

PACKAGES="gcc make pkg-config libc6-dev
libfcgi-dev libhiredis-dev libpq-dev libjson-c-dev
spawn-fcgi multiwatch nginx redis-server postgresql postgresql-client
curl jq docker-compose clang-format clang libclang-rt-dev"
# "deps.sh bench": the benchmark's own tools instead.
if [ "${1:-}" = bench ]; then
    PACKAGES="wrk gnuplot-nox bsdextrautils"
fi

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
    *" installed") ;;
    *) missing="$missing $p" ;;
    esac
done
[ -z "$missing" ] && exit 0

line="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages. Install them with:" >&2
    echo "  sudo $line" >&2
    exit 1
fi

echo "Installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# Debian starts a package's service on install; policy-rc.d answering 101
# ("action forbidden") stops that, for this install only.
policy=/usr/sbin/policy-rc.d
own_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    own_policy=yes
fi
# Removed however this script ends: left behind, it would block every
# service start on the host.
cleanup() { [ "$own_policy" = yes ] && rm -f "$policy"; }
trap cleanup EXIT
trap 'cleanup; exit 1' INT TERM HUP
# shellcheck disable=SC2086
if ! apt-get install -y --no-install-recommends $missing; then
    apt-get update
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $missing
fi
