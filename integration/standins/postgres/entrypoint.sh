#!/bin/sh
# Makes the cluster on first start (a copy of the template the image was built with, or initdb for
# another superuser), then runs the server as PID 1 under the postgres user.
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
sql_literal() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }

mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    # The template's superuser is `postgres` (the bootstrap role, which single-user mode cannot
    # rename); a password with a line break cannot be given on single-user mode's input.
    case "$POSTGRES_PASSWORD" in
        *"
"*) template_fits=false ;;
        *) template_fits=$([ "$POSTGRES_USER" = postgres ] && [ -s "$PGTEMPLATE/PG_VERSION" ] && echo true || echo false) ;;
    esac
    if [ -n "$(ls -A "$PGDATA")" ]; then
        echo "docker-entrypoint.sh: $PGDATA is not empty and holds no cluster" >&2
        exit 1
    fi
    if [ "$template_fits" = true ]; then
        cp -a "$PGTEMPLATE/." "$PGDATA/"
        password_sql="ALTER ROLE \"$POSTGRES_USER\" PASSWORD $(sql_literal "$POSTGRES_PASSWORD");"
    else
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        chown postgres "$pwfile"
        as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --no-sync -E UTF8 \
            --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
        rm -f "$pwfile"
        echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
        password_sql=""
    fi
    printf 'local all all trust\nhost all all all %s\n' "$auth_method" >"$PGDATA/pg_hba.conf"
    create_sql=""
    if [ "$POSTGRES_DB" != postgres ]; then
        create_sql="CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";"
    fi
    if [ -n "$password_sql$create_sql" ]; then
        # Single-user mode (no fsync: -F) does it without a server that a health check could see early;
        # with -j a statement ends at a semicolon and an empty line.
        printf '%s\n\n%s\n\n' "$password_sql" "$create_sql" \
            | as_postgres postgres --single -F -D "$PGDATA" -j postgres >/dev/null
    fi
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
