#!/bin/sh
# Runs the broker as PID 1 under the rabbitmq user; the CLI tools run by health checks as root share
# the cookie baked into the image.
set -eu
if [ "$1" = rabbitmq-server ] && [ "$(id -u)" = 0 ]; then
    mkdir -p /var/lib/rabbitmq/mnesia /var/log/rabbitmq
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
    # ERL_AFLAGS goes to the node only (the CLI tools would preload too): see integration_preload.erl.
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups env HOME=/var/lib/rabbitmq \
        ERL_AFLAGS="-pa /usr/local/lib/integration-preload -s integration_preload start" \
        /usr/lib/rabbitmq/bin/rabbitmq-server
fi
exec "$@"
