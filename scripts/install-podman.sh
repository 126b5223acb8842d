#!/usr/bin/env bash
# Installs Podman from Debian's packages and starts its Docker-compatible API service, for running the
# toolkit on Podman with the docker CLI and compose plugin this machine already has:
#
#     eval "$(bash scripts/install-podman.sh)"     # sets DOCKER_HOST to Podman's socket
#     nox -s integration-podman
#
# The only line on stdout is `export DOCKER_HOST=unix://<socket>`; progress goes to stderr.
# Idempotent: when Podman already answers on the socket, it only prints that line.
# Without systemd there is no podman.socket unit: `podman system service --time=0` runs in the
# background (setsid), logging to $PODMAN_LOG. A running Docker engine is left alone: Podman has its own
# storage (/var/lib/containers), socket and networks, and the script checks `docker info` still answers.
set -euo pipefail

PODMAN_SOCKET=${PODMAN_SOCKET:-/run/podman/podman.sock}
PODMAN_LOG=${PODMAN_LOG:-/var/log/podman-service.log}
PODMAN_WAIT_SECONDS=${PODMAN_WAIT_SECONDS:-60}
# The service's own containers.conf (CONTAINERS_CONF): it affects this service only, not a `podman`
# command run by hand, and /run is emptied at boot like the service itself.
PODMAN_CONF=${PODMAN_CONF:-/run/podman/service-integration.conf}
PODMAN_PIDFILE=${PODMAN_PIDFILE:-/run/podman/service-integration.pid}
PODMAN_HOST="unix://$PODMAN_SOCKET"

log() { printf '[install-podman] %s\n' "$*" >&2; }
fail() { log "error: $*"; exit 1; }

# Podman names itself among the server's components; a Docker engine on the same socket path would not.
podman_answers() {
    DOCKER_HOST=$PODMAN_HOST timeout 20 docker version --format '{{range .Server.Components}}{{.Name}};{{end}}' \
        2>/dev/null | grep -q 'Podman Engine'
}

docker_engine_answers() { env -u DOCKER_HOST timeout 20 docker info >/dev/null 2>&1; }

command -v docker >/dev/null || fail "the docker CLI is missing; run scripts/install-docker-engine.sh first (it installs the CLI and the compose plugin Podman is driven with)"
docker compose version >/dev/null 2>&1 || fail "the docker compose plugin is missing; run scripts/install-docker-engine.sh first"

if podman_answers; then
    log "Podman already answers on $PODMAN_SOCKET; nothing to do"
    printf 'export DOCKER_HOST=%s\n' "$PODMAN_HOST"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || fail "run as root (apt-get and a rootful Podman service need it)"
command -v apt-get >/dev/null || fail "this script supports Debian-based machines only; install Podman >= 4.3 and start 'podman system service' by hand"

started=$(date +%s)
docker_before=0
if docker_engine_answers; then docker_before=1; fi

PACKAGES=(podman netavark aardvark-dns runc catatonit)
# netavark lives in /usr/lib/podman, not on PATH: dpkg says what is installed.
all_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}\n' "${PACKAGES[@]}" 2>/dev/null) || return 1
    [ "$(grep -c '^install ok installed$' <<<"$status")" -eq "${#PACKAGES[@]}" ]
}
if all_installed; then
    log "podman and its network stack are installed"
else
    log "installing Debian's podman"
    apt-get update -qq
    # netavark + aardvark-dns: the network stack whose DNS lets compose services reach each other by
    # name (the CNI plugins lack it without an extra plugin). runc: see runtime below; with runc present
    # apt does not add crun for podman's "crun | runc" dependency. catatonit: podman's --init.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi
command -v podman >/dev/null || fail "podman is not on PATH after installing it"

mkdir -p "$(dirname "$PODMAN_SOCKET")" "$(dirname "$PODMAN_CONF")" "$(dirname "$PODMAN_LOG")"

# Default rlimits. Rootful Podman gives every container nofile and nproc limits of 1048576, which only a
# process with CAP_SYS_RESOURCE may set; without it (a container or sandbox machine) every container
# fails with "error setting rlimit type 7: operation not permitted". The limits Podman's own process
# ends up with are measured on a probe service and given to the containers instead.
cap_eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
ulimits=""
if [ $(((16#$cap_eff >> 24) & 1)) -eq 0 ]; then
    probe_dir=$(mktemp -d)
    podman system service --time=0 "unix://$probe_dir/probe.sock" >/dev/null 2>&1 </dev/null &
    probe_pid=$!
    sleep 0.5
    nofile=$(awk '/^Max open files/ {print $5}' "/proc/$probe_pid/limits")
    nproc=$(awk '/^Max processes/ {print $4}' "/proc/$probe_pid/limits")
    kill "$probe_pid" 2>/dev/null || true
    wait "$probe_pid" 2>/dev/null || true
    rm -rf "$probe_dir"
    if [ -z "$nofile" ] || [ -z "$nproc" ]; then
        fail "could not read the limits of a podman process"
    fi
    # An unlimited one is left to Podman: lowering a limit needs no capability.
    limits=()
    [ "$nofile" = unlimited ] || limits+=("\"nofile=$nofile:$nofile\"")
    [ "$nproc" = unlimited ] || limits+=("\"nproc=$nproc:$nproc\"")
    if [ "${#limits[@]}" -gt 0 ]; then
        ulimits="default_ulimits = [$(IFS=,; printf '%s' "${limits[*]}")]"
    fi
    log "no CAP_SYS_RESOURCE: containers get Podman's own limits (nofile $nofile, nproc $nproc)"
fi

# runtime = runc: Debian 12's crun 1.8 refuses hosts with hybrid cgroups ("cgroups in hybrid mode not
# supported, drop all controllers from cgroupv2"); runc runs everywhere Docker does (it is Docker's).
# cgroupfs and the file event log: there is no systemd to hand cgroups or journal entries to.
cat >"$PODMAN_CONF" <<EOF
# Written by scripts/install-podman.sh for the service it starts (CONTAINERS_CONF).
[containers]
$ulimits

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

# A service this script started earlier that no longer answers is stopped first; any other process is
# left alone.
if [ -f "$PODMAN_PIDFILE" ]; then
    old_pid=$(cat "$PODMAN_PIDFILE")
    if [ -n "$old_pid" ] && grep -q 'system service' "/proc/$old_pid/cmdline" 2>/dev/null; then
        log "stopping the unresponsive service (pid $old_pid)"
        kill "$old_pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$PODMAN_PIDFILE"
fi
rm -f "$PODMAN_SOCKET"

log "starting podman system service on $PODMAN_SOCKET (log: $PODMAN_LOG)"
CONTAINERS_CONF=$PODMAN_CONF setsid nohup podman system service --time=0 "$PODMAN_HOST" \
    >>"$PODMAN_LOG" 2>&1 </dev/null &
echo $! >"$PODMAN_PIDFILE"

deadline=$(($(date +%s) + PODMAN_WAIT_SECONDS))
until podman_answers; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        log "podman did not answer on $PODMAN_SOCKET within ${PODMAN_WAIT_SECONDS}s; last lines of $PODMAN_LOG:"
        tail -n 30 "$PODMAN_LOG" >&2 || true
        exit 1
    fi
    sleep 0.2
done

if [ "$docker_before" -eq 1 ] && ! docker_engine_answers; then
    fail "the Docker engine answered before Podman was installed and does not now: $(env -u DOCKER_HOST docker info 2>&1 | tail -n 1)"
fi

version=$(DOCKER_HOST=$PODMAN_HOST docker version --format '{{.Server.Version}}')
log "ready in $(($(date +%s) - started))s: podman $version on $PODMAN_SOCKET, $(docker compose version --short | sed 's/^/compose /')"
printf 'export DOCKER_HOST=%s\n' "$PODMAN_HOST"
