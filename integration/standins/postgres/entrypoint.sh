#!/bin/sh
# Initialises a cluster on first start, then runs the server as PID 1 under the postgres user.
set -eu

if [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi

if [ "$1" != postgres ] || [ "$(id -u)" != 0 ]; then
    exec "$@"
fi

: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
# Like the official image: scram-sha-256 unless the container asks for another method (e.g. trust).
auth_method=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

mkdir -p "$PGDATA" /run/postgresql
chown -R postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    chown postgres "$pwfile"
    as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host="$auth_method" >/dev/null
    rm -f "$pwfile"
    echo "host all all all $auth_method" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        # Single-user mode creates the database without a server that a health check could see early.
        echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\"" \
            | as_postgres postgres --single -D "$PGDATA" -j postgres >/dev/null
    fi
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
