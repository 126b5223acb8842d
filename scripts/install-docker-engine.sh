#!/usr/bin/env bash
# Installs and starts a Docker engine with the Compose v2 and buildx plugins on a Debian machine, and
# debootstrap, which builds the offline stand-in images.
#
# Idempotent: when `docker info` and `docker compose version` both answer, it does nothing.
# Debian 12 ships the engine (docker.io 20.10) but not the Compose v2 plugin, so the plugins come from
# the next release (trixie), fetched from the same mirror this machine already uses and unpacked with
# `dpkg -x` so that nothing else of trixie is installed.
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
DOCKERD_WAIT_SECONDS=${DOCKERD_WAIT_SECONDS:-60}
PLUGIN_SUITE=${PLUGIN_SUITE:-trixie}

log() { printf '[install-docker-engine] %s\n' "$*" >&2; }
fail() { log "error: $*"; exit 1; }

engine_ready() { docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; }

# debootstrap builds the offline stand-in images where no registry can be reached.
if engine_ready && command -v debootstrap >/dev/null; then
    log "engine and compose plugin already answer; nothing to do"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || fail "run as root (apt-get and dockerd need it)"
command -v apt-get >/dev/null || fail "this script supports Debian-based machines only; install Docker Engine with Compose >= 2.20 by hand"

started=$(date +%s)

# The mirror URI comes from the machine's own apt configuration, never from this file.
debian_mirror() {
    local uri=""
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        uri=$(awk '/^URIs:/ {print $2}' /etc/apt/sources.list.d/*.sources | grep -v -- '-security' | head -n 1)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list \
            | grep -v -- '-security' | head -n 1)
    fi
    [ -n "$uri" ] || fail "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
    printf '%s\n' "$uri"
}

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
}

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap (for the offline stand-in images)"
    apt_update_once
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

if ! command -v dockerd >/dev/null; then
    log "installing Debian's docker.io (engine)"
    apt_update_once
    # docker.io pulls in a docker CLI too; keep a newer client if the machine already has one.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io containerd runc iptables ca-certificates >/dev/null
fi

plugin_dir=/usr/libexec/docker/cli-plugins
if [ ! -x "$plugin_dir/docker-compose" ] || [ ! -x "$plugin_dir/docker-buildx" ]; then
    mirror=$(debian_mirror)
    log "installing the compose and buildx CLI plugins from Debian $PLUGIN_SUITE"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/debs"
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$mirror" "$PLUGIN_SUITE" \
        >"$work/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=-"
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
        -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
    apt-get "${apt_opts[@]}" update -qq
    (cd "$work/debs" && apt-get "${apt_opts[@]}" download docker-compose docker-buildx >/dev/null)
    for deb in "$work"/debs/*.deb; do
        dpkg -x "$deb" /
    done
    for plugin in docker-compose docker-buildx; do
        [ -x "$plugin_dir/$plugin" ] || fail "$plugin was not found in $plugin_dir after unpacking"
    done
fi

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    if ! pgrep -x containerd >/dev/null; then
        setsid nohup containerd >>"${DOCKERD_LOG%.log}-containerd.log" 2>&1 </dev/null &
    fi
    if ! pgrep -x dockerd >/dev/null; then
        setsid nohup dockerd --containerd=/run/containerd/containerd.sock >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    deadline=$(($(date +%s) + DOCKERD_WAIT_SECONDS))
    until docker info >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "dockerd did not answer within ${DOCKERD_WAIT_SECONDS}s; last lines of $DOCKERD_LOG:"
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
fi

engine_ready || fail "docker compose does not answer: $(docker compose version 2>&1 | tail -n 1)"
log "ready in $(($(date +%s) - started))s: engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /')"
