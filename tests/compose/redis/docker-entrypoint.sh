#!/bin/sh
# TEST DOUBLE: the part of the official redis image's entrypoint that
# docker-compose.yml relies on (see the Dockerfile beside this file).
set -eu

if [ "${1:-}" = redis-server ]; then
    shift
    # The official image builds redis with protected mode off; Debian's
    # redis-server has it on, which refuses every client but loopback when
    # there is no password. Options given later still win; a configuration
    # file (the ha profile's sentinels) stays the first argument.
    case ${1:-} in
    -* | '') set -- redis-server --protected-mode no "$@" ;;
    *)
        conf=$1
        shift
        set -- redis-server "$conf" --protected-mode no "$@"
        ;;
    esac
    if [ "$(id -u)" = 0 ]; then
        find . \! -user redis -exec chown redis '{}' +
        umask 0077
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi

exec "$@"
