#!/bin/sh
# Renders the nginx configuration for one stack.
#
#   nginx/render.sh OUT_DIR NAME=value...
#
# Writes OUT_DIR/nginx.conf and OUT_DIR/stock-api.conf from the .in files
# beside this script, replacing every @NAME@ with its value. CONF_DIR is set
# to OUT_DIR. Fails if a placeholder is left unfilled.
#
# One value is derived: RATE_LIMIT=N (requests a second per client address)
# also sets RATE_LIMIT_KEY, the address, or nothing when N is 0, since nginx
# has no rate of 0 and an empty key limits nothing.
set -eu

src=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: render.sh OUT_DIR NAME=value...}
shift
mkdir -p "$out/extra"
out=$(cd "$out" && pwd)

derived=""
for pair in "$@"; do
    case $pair in
    RATE_LIMIT=0) derived="RATE_LIMIT=1 RATE_LIMIT_KEY=" ;;
    RATE_LIMIT=*) derived="$pair RATE_LIMIT_KEY=\$binary_remote_addr" ;;
    esac
done

script=""
# shellcheck disable=SC2086 # derived is two words without spaces
for pair in "CONF_DIR=$out" $derived "$@"; do
    name=${pair%%=*}
    value=${pair#*=}
    # Values go between double quotes in the templates.
    case $value in
    *'"'* | *'
'*)
        echo "render.sh: $name must not contain a double quote or a newline" >&2
        exit 1
        ;;
    esac
    # Escape what sed's replacement treats specially.
    value=$(printf '%s' "$value" | sed 's/[\\|&]/\\&/g')
    script="${script}s|@${name}@|${value}|g;"
done

for f in nginx.conf stock-api.conf; do
    sed "$script" "$src/$f.in" >"$out/$f"
    if grep -n '@[A-Z_]*@' "$out/$f" >&2; then
        echo "render.sh: unfilled placeholder in $out/$f" >&2
        exit 1
    fi
done
