#!/bin/sh
# Creates the database of the purchase API and the role the responders log
# in as, with only the privileges they use; run again, brings both up to
# date (after an upgrade: the new schema, and any grant it needs).
#
#   nginx/setup-db.sh [NAME=value...]
#
#   DB=redisdistributedlock  the database: created if missing; then
#                            sql/schema.sql, and sql/seed.sql if the schema
#                            was new (never twice: it adds a product)
#   ROLE=stock               the responders' role: created if missing, as
#                            LOGIN and nothing more (never a superuser)
#   PASSWORD_FILE=           the role's password, read from this file
#                            (/dev/stdin: standard input), for a DATABASE_URL
#                            over TCP. None: a new role has no password (peer
#                            authentication on the local socket), an existing
#                            one keeps its own.
#   SEED=yes                 no: never load sql/seed.sql
#
# Runs psql as a role that may create databases and roles (postgres:
# `runuser -u postgres -- setup-db.sh`, nginx/README.md); PGHOST, PGPORT and
# PGUSER choose another server. The password goes to psql through its
# environment, never a command line, and the statement that sets it is kept
# out of the server's log.
#
# The grants, from every statement of app/store.c:
#   products          SELECT; UPDATE of amount and fence only (a purchase, a
#                     batch, a new fence epoch; SELECT ... FOR UPDATE needs it)
#   orders            SELECT, INSERT (RETURNING id needs SELECT); its id
#                     sequence: USAGE (nextval: an order's id, a batch's ids)
#   idempotency_keys, purchase_tokens
#                     SELECT, INSERT, UPDATE (ON CONFLICT ... DO UPDATE)
# and CONNECT to the database. No DELETE, TRUNCATE or schema change: the
# responders never remove a row, and a key removed early would let its retry
# buy again; sql/prune.sql runs as the database's owner. Whatever else the
# role held on the schema's tables and sequences is revoked, so a run also
# narrows a wider grant made before.
set -eu

die() {
    echo "setup-db.sh: $*" >&2
    exit 1
}

sql=$(cd "$(dirname "$0")/../sql" && pwd)
known=" DB ROLE PASSWORD_FILE SEED "
DB=redisdistributedlock ROLE=stock PASSWORD_FILE="" SEED=yes
given=" "
for pair in "$@"; do
    case $pair in *=*) ;; *) die "'$pair' is not NAME=value" ;; esac
    name=${pair%%=*}
    case $known in *" $name "*) ;; *) die "unknown setting '$name'" ;; esac
    case $given in *" $name "*) die "$name is given twice" ;; esac
    given="$given$name "
    eval "$name=\${pair#*=}"
done
# Plain names: psql's -d would take a name with '=' for a connection string.
plain_name() { # NAME VALUE
    echo "$2" | grep -Eqx '[a-z_][a-z0-9_]{0,62}' ||
        die "$1 must be a lower-case name of letters, digits and _ (got '$2')"
}
plain_name DB "$DB"
plain_name ROLE "$ROLE"
case $SEED in yes | no) ;; *) die "SEED must be yes or no (got '$SEED')" ;; esac

unset STOCK_DB_PASSWORD
if [ -n "$PASSWORD_FILE" ]; then
    STOCK_DB_PASSWORD=$(cat -- "$PASSWORD_FILE") || die "cannot read PASSWORD_FILE"
    [ -n "$STOCK_DB_PASSWORD" ] || die "PASSWORD_FILE is empty"
    export STOCK_DB_PASSWORD
fi

run_psql() { # DATABASE [psql options]: the SQL on standard input
    db=$1
    shift
    psql -X -q -v ON_ERROR_STOP=1 -v db="$DB" -v role="$ROLE" -d "$db" "$@"
}

# The role and the database, from the maintenance database (CREATE DATABASE
# cannot run in a transaction). Only a database made here loses PUBLIC's
# CONNECT and TEMPORARY: another one may serve other roles.
run_psql postgres <<'SQL'
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') AS new_role,
       NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') AS new_db,
       rolsuper AS superuser
  FROM pg_roles WHERE rolname = current_user \gset
\if :new_role
CREATE ROLE :"role" LOGIN;
\else
ALTER ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\endif
\getenv password STOCK_DB_PASSWORD
\if :{?password}
BEGIN;
\if :superuser
SET LOCAL log_statement = 'none';
SET LOCAL log_min_duration_statement = -1;
SET LOCAL log_min_error_statement = 'panic';
\endif
ALTER ROLE :"role" PASSWORD :'password';
COMMIT;
\unset password
\endif
\if :new_db
CREATE DATABASE :"db";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
\endif
GRANT CONNECT ON DATABASE :"db" TO :"role";
SQL

# The schema, the seed and the grants: all or nothing.
run_psql "$DB" -1 -f - -v schema="$sql/schema.sql" -v seed="$sql/seed.sql" -v seed_wanted="$SEED" <<'SQL'
SET client_min_messages = warning; -- not schema.sql's "already exists" on a second run
SELECT to_regclass('public.products') IS NULL AS fresh \gset
\i :schema
\if :seed_wanted
\if :fresh
\i :seed
\endif
\endif
GRANT USAGE ON SCHEMA public TO :"role";
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM :"role";
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM :"role";
GRANT SELECT, UPDATE (amount, fence) ON products TO :"role";
GRANT SELECT, INSERT ON orders TO :"role";
SELECT format('GRANT USAGE ON SEQUENCE %s TO %I', pg_get_serial_sequence('orders', 'id'), :'role')
\gexec
GRANT SELECT, INSERT, UPDATE ON idempotency_keys, purchase_tokens TO :"role";
SQL
