#!/usr/bin/env bash
# TEST DOUBLE: the part of the official postgres image's entrypoint that
# docker-compose.yml relies on (see the Dockerfile beside this file).
set -Eeuo pipefail
shopt -s nullglob

if [[ ${1:-} == postgres && $(id -u) == 0 ]]; then
    # The data volume and the socket directory are the postgres user's.
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    install -d -o postgres -g postgres -m 2777 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ ${1:-} == postgres && ! -s $PGDATA/PG_VERSION ]]; then
    if [[ ${POSTGRES_HOST_AUTH_METHOD:-} != trust ]]; then
        echo "postgres stand-in: only POSTGRES_HOST_AUTH_METHOD=trust is reproduced" >&2
        exit 1
    fi
    initdb --username=postgres -D "$PGDATA"
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"

    # A first server on the unix socket only, for the initialisation.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    db=${POSTGRES_DB:-postgres}
    if [[ $db != postgres ]]; then
        psql -X -v ON_ERROR_STOP=1 --username=postgres --no-password --dbname=postgres \
            --set db="$db" <<<'CREATE DATABASE :"db";'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case $f in
        *.sql)
            echo "postgres stand-in: running $f"
            psql -X -v ON_ERROR_STOP=1 --username=postgres --no-password --dbname="$db" -f "$f"
            ;;
        *) echo "postgres stand-in: ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "postgres stand-in: initialisation complete; ready for start up"
fi

exec "$@"
