#!/bin/sh
# Renders the nginx configuration of one host.
#
#   nginx/render.sh OUT_DIR NAME=value...
#
# SITE says what the host is:
#   stock-api  (the default) a responder host: nginx in front of the host's
#              own pools, on unix sockets. Needs FCGI_SOCKET and
#              FCGI_OVERFLOW_SOCKET.
#   edge       a load balancer in front of responder hosts, over HTTP.
#              Needs UPSTREAMS, the hosts' nginx addresses ("10.0.0.2:3000
#              10.0.0.3:3000").
# Optional, with their defaults:
#   LISTEN=127.0.0.1:3000  PER_PRODUCT=2  RATE_LIMIT=0 (none)
#   METRICS_ALLOW=127.0.0.1  REAL_IP_FROM=unix: (trust no proxy's address)
#   FAIL_TIMEOUT=5s (edge: how long a host that failed stays out)
#   RUN_DIR=OUT_DIR  ERROR_LOG=OUT_DIR/error.log  ACCESS_LOG=OUT_DIR/access.log
#
# Writes OUT_DIR/nginx.conf (a complete configuration, for the private
# stacks and the docker-compose demo) and OUT_DIR/SITE.conf with the files it
# includes (to include from your own http {} block in production), replacing
# every @NAME@ of the .in files beside this script. Fails if a placeholder is
# left unfilled.
#
# Derived: RATE_LIMIT=N also sets RATE_LIMIT_KEY, the client address, or
# nothing when N is 0, since nginx has no rate of 0 and an empty key limits
# nothing; UPSTREAMS becomes OUT_DIR/upstreams.conf.
set -eu

src=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: render.sh OUT_DIR NAME=value...}
shift
mkdir -p "$out/extra"
out=$(cd "$out" && pwd)

die() {
    echo "render.sh: $*" >&2
    exit 1
}

# The value given for a name, the last one if given twice; else $2.
get() {
    value=$2
    for pair in $pairs; do
        case $pair in "$1="*) value=${pair#*=} ;; esac
    done
    printf '%s' "$value"
}
# Names and values are checked below not to contain spaces where it matters;
# $pairs is only searched by name.
pairs=$(printf '%s\n' "$@" | tr ' ' '\037')

site=$(get SITE stock-api)
rate=$(get RATE_LIMIT 0)
case $site in
stock-api) needed="FCGI_SOCKET FCGI_OVERFLOW_SOCKET" ;;
edge) needed="UPSTREAMS" ;;
*) die "SITE must be stock-api or edge (got '$site')" ;;
esac
for name in $needed; do
    [ -n "$(get "$name" "")" ] || die "$name is required for SITE=$site"
done

if [ "$site" = edge ]; then
    fail_timeout=$(get FAIL_TIMEOUT 5s)
    : >"$out/upstreams.conf"
    for host in $(get UPSTREAMS "" | tr '\037' ' '); do
        case $host in
        *[!A-Za-z0-9.:\[\]-]*) die "UPSTREAMS: '$host' is not a host:port" ;;
        esac
        # One failure takes a host out for FAIL_TIMEOUT (see edge.conf.in).
        echo "server $host max_fails=1 fail_timeout=$fail_timeout;" >>"$out/upstreams.conf"
    done
fi

if [ "$rate" = 0 ]; then derived="RATE_LIMIT=1 RATE_LIMIT_KEY="; else derived="RATE_LIMIT_KEY=\$binary_remote_addr"; fi
defaults="LISTEN=127.0.0.1:3000 PER_PRODUCT=2 RATE_LIMIT=0 METRICS_ALLOW=127.0.0.1
REAL_IP_FROM=unix: RUN_DIR=$out ERROR_LOG=$out/error.log ACCESS_LOG=$out/access.log"

# sed replaces each placeholder with the first value given for it: derived
# values first, then the caller's, then the defaults.
script=""
# shellcheck disable=SC2086 # derived and defaults are words without spaces
for pair in "CONF_DIR=$out" $derived "$@" $defaults; do
    name=${pair%%=*}
    value=${pair#*=}
    # Values go between double quotes in the templates.
    case $value in
    *'"'* | *'
'*)
        die "$name must not contain a double quote or a newline"
        ;;
    esac
    # Escape what sed's replacement treats specially.
    value=$(printf '%s' "$value" | sed 's/[\\|&]/\\&/g')
    script="${script}s|@${name}@|${value}|g;"
done

for f in nginx.conf "$site.conf" common.conf problems.conf; do
    sed "s|@SITE@|$site|g;$script" "$src/$f.in" >"$out/$f"
    if grep -n '@[A-Z_]*@' "$out/$f" >&2; then
        die "unfilled placeholder in $out/$f"
    fi
done
