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
#   METRICS_ALLOW=127.0.0.1  REAL_IP_FROM=unix: (the edges' addresses or
#   CIDRs, space-separated; unix: trusts no TCP peer)
#   FAIL_TIMEOUT=5s (edge: how long a host that failed stays out)
#   RUN_DIR=OUT_DIR  ERROR_LOG=OUT_DIR/error.log  ACCESS_LOG=OUT_DIR/access.log
#
# Writes OUT_DIR/nginx.conf (a complete configuration, for the private
# stacks and the docker-compose demo) and OUT_DIR/SITE.conf with the files it
# includes (to include from your own http {} block in production), replacing
# every @NAME@ of the .in files beside this script. Refuses an unknown name,
# a name given twice, a malformed number, and any placeholder left unfilled.
#
# Derived: RATE_LIMIT=N also sets RATE_LIMIT_KEY, the client address, or
# nothing when N is 0, since nginx has no rate of 0 and an empty key limits
# nothing; UPSTREAMS becomes OUT_DIR/upstreams.conf and upstreams-any.conf,
# and REAL_IP_FROM OUT_DIR/real-ip.conf.
set -eu
# Lists (UPSTREAMS, REAL_IP_FROM) are split on spaces, never globbed.
set -f

die() {
    echo "render.sh: $*" >&2
    exit 1
}

# What goes between double quotes in the templates, and through sed: no
# quote, backslash or newline, and no $ (an nginx variable in a path).
plain() { # NAME VALUE
    case $2 in
    *'"'* | *'\'* | *'$'* | *'
'*) die "$1 must not contain a double quote, a backslash, a \$ or a newline" ;;
    esac
}

src=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: render.sh OUT_DIR NAME=value...}
shift
plain OUT_DIR "$out"
mkdir -p "$out/extra"
out=$(cd "$out" && pwd)

# What may be set, and the defaults of what is optional.
known=" SITE FCGI_SOCKET FCGI_OVERFLOW_SOCKET UPSTREAMS LISTEN PER_PRODUCT RATE_LIMIT "
known="$known METRICS_ALLOW REAL_IP_FROM FAIL_TIMEOUT RUN_DIR ERROR_LOG ACCESS_LOG "
SITE=stock-api FCGI_SOCKET="" FCGI_OVERFLOW_SOCKET="" UPSTREAMS="" LISTEN=127.0.0.1:3000
PER_PRODUCT=2 RATE_LIMIT=0 METRICS_ALLOW=127.0.0.1 REAL_IP_FROM=unix: FAIL_TIMEOUT=5s
RUN_DIR=$out ERROR_LOG=$out/error.log ACCESS_LOG=$out/access.log
given=" "
for pair in "$@"; do
    case $pair in *=*) ;; *) die "'$pair' is not NAME=value" ;; esac
    name=${pair%%=*}
    value=${pair#*=}
    case $name in '' | *[!A-Z_]*) die "unknown setting '$name'" ;; esac
    case $known in *" $name "*) ;; *) die "unknown setting '$name'" ;; esac
    case $given in *" $name "*) die "$name is given twice" ;; esac
    given="$given$name "
    plain "$name" "$value"
    eval "$name=\$value"
done

number() { # NAME VALUE PATTERN-DESCRIPTION: VALUE is digits (and a unit)
    echo "$2" | grep -Eqx "$3" || die "$1 must be $4 (got '$2')"
}
number PER_PRODUCT "$PER_PRODUCT" '[1-9][0-9]{0,5}' "a whole number from 1"
number RATE_LIMIT "$RATE_LIMIT" '[0-9]{1,6}' "a whole number"
number FAIL_TIMEOUT "$FAIL_TIMEOUT" '[1-9][0-9]{0,5}(ms|s|m)?' "a duration such as 5s"
case $SITE in
stock-api) needed="FCGI_SOCKET FCGI_OVERFLOW_SOCKET" ;;
edge) needed="UPSTREAMS" ;;
*) die "SITE must be stock-api or edge (got '$SITE')" ;;
esac
for name in $needed; do
    eval "[ -n \"\$$name\" ]" || die "$name is required for SITE=$SITE"
done

# address NAME VALUE: an address, host:port or CIDR, nothing nginx could
# read as more than one word.
address() {
    case $2 in
    '' | *[!A-Za-z0-9.:/\[\]_-]*) die "$1: '$2' is not an address" ;;
    esac
}

# One failure takes a host out of stock_hosts for FAIL_TIMEOUT (see
# edge.conf.in); stock_hosts_any lists the same hosts, never taken out.
if [ "$SITE" = edge ]; then
    : >"$out/upstreams.conf"
    : >"$out/upstreams-any.conf"
    for host in $UPSTREAMS; do
        address UPSTREAMS "$host"
        echo "server $host max_fails=1 fail_timeout=$FAIL_TIMEOUT;" >>"$out/upstreams.conf"
        echo "server $host max_fails=0;" >>"$out/upstreams-any.conf"
    done
fi
: >"$out/real-ip.conf"
for from in $REAL_IP_FROM; do
    address REAL_IP_FROM "$from"
    echo "set_real_ip_from $from;" >>"$out/real-ip.conf"
done

if [ "$RATE_LIMIT" = 0 ]; then
    RATE_LIMIT=1 RATE_LIMIT_KEY=""
else
    RATE_LIMIT_KEY="\$binary_remote_addr"
fi
CONF_DIR=$out

script=""
for name in CONF_DIR SITE FCGI_SOCKET FCGI_OVERFLOW_SOCKET LISTEN PER_PRODUCT RATE_LIMIT \
    RATE_LIMIT_KEY METRICS_ALLOW RUN_DIR ERROR_LOG ACCESS_LOG; do
    eval "value=\$$name"
    # Escape what sed's replacement treats specially.
    value=$(printf '%s' "$value" | sed 's/[|&]/\\&/g')
    script="${script}s|@${name}@|${value}|g;"
done

for f in nginx.conf "$SITE.conf" common.conf problems.conf errors.conf; do
    sed "$script" "$src/$f.in" >"$out/$f"
    if grep -n '@[A-Z_]*@' "$out/$f" >&2; then
        die "unfilled placeholder in $out/$f"
    fi
done
