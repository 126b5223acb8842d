#!/usr/bin/env bash
# A second Docker engine on this machine that behaves like a remote one: its own network namespace, its
# own address, reached over TCP only; its own containerd, data and state folders. For the remote-engine
# test (tests/docker/test_remote_engine.py) and for trying remote engines by hand. Needs root.
#
#   bash scripts/second-engine.sh start   # prints DOCKER_HOST=tcp://10.213.0.2:2375 once it answers,
#                                          # and with openssh-server installed an ssh:// one too
#   bash scripts/second-engine.sh stop    # stops both daemons, removes the namespace, the veth pair
#                                          # and every folder the engine wrote
#
# The engine reaches out through this machine (a masquerade rule and two FORWARD rules for its subnet,
# removed by `stop`), so that builds install packages as they do on the local engine.
#
# Settings (environment): SECOND_ENGINE_NS (integration-remote), SECOND_ENGINE_SUBNET (10.213.0: this
# machine gets .1, the engine .2), SECOND_ENGINE_PORT (2375).
#
# The engine listens without TLS on a private veth link that only this machine reaches: never copy
# `--host tcp://` without TLS onto an address other machines can reach (an open engine API is root on
# its host). It also listens on a unix socket in its run folder, for the reaper's bind mount: the
# namespace shares this machine's filesystem, so /var/run/docker.sock there would be the local engine's.
set -euo pipefail

NS="${SECOND_ENGINE_NS:-integration-remote}"
SUBNET="${SECOND_ENGINE_SUBNET:-10.213.0}"
PORT="${SECOND_ENGINE_PORT:-2375}"
HOST_END="${NS:0:9}-h"   # interface names are limited to 15 characters
NS_END="${NS:0:9}-e"
DATA="/var/lib/${NS}-engine"
RUN="/run/${NS}-engine"
ENGINE="${SUBNET}.2"
START_TIMEOUT="${SECOND_ENGINE_START_TIMEOUT:-60}"

stop() {
    for daemon in sshd dockerd containerd; do
        if [[ -f "$RUN/$daemon.pid" ]]; then
            pid="$(cat "$RUN/$daemon.pid")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    # Whatever the engine left running in its namespace (shims, docker-proxy).
    if ip netns pids "$NS" >/dev/null 2>&1; then
        for pid in $(ip netns pids "$NS"); do kill -9 "$pid" 2>/dev/null || true; done
    fi
    # Container shims of its containerd live outside the namespace; they are found by their socket path.
    for pid in $(pgrep -f -- "-address $RUN/containerd.sock" || true); do kill -9 "$pid" 2>/dev/null || true; done
    # This machine's forwarding rules for the engine's subnet (only ours: they carry our comment).
    while iptables -t nat -D POSTROUTING -s "${SUBNET}.0/24" ! -o "$HOST_END" -j MASQUERADE \
        -m comment --comment "$NS" 2>/dev/null; do :; done
    for direction in -i -o; do
        while iptables -D FORWARD "$direction" "$HOST_END" -j ACCEPT -m comment --comment "$NS" 2>/dev/null; do :; done
    done
    ip link del "$HOST_END" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    # Mounts below the data and run folders (overlay layers, shm, netns files) go before the folders.
    { grep -E " ($DATA|$RUN)[/ ]" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r mount; do
        umount -l "$mount" 2>/dev/null || true
    done
    rm -rf "$DATA" "$RUN"
}

# An SSH server in the namespace (when openssh-server is installed), for DOCKER_HOST=ssh://: the docker
# CLI runs `docker system dial-stdio` over it, which SetEnv points at this engine's socket (the local
# engine's /var/run/docker.sock is on the same filesystem). Keys, host key and configs are the run
# folder's own; a wrapper `ssh` in $RUN/ssh/bin gives the client its config without touching ~/.ssh.
start_ssh() {
    [[ -x /usr/sbin/sshd && "${SECOND_ENGINE_SSH:-1}" != 0 ]] || return 0
    local dir="$RUN/ssh"
    mkdir -p "$dir/bin" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key"
    cp "$dir/client_key.pub" "$dir/authorized_keys"
    cat >"$dir/sshd_config" <<CONFIG
ListenAddress ${ENGINE}:22
HostKey $dir/host_key
PidFile $RUN/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv DOCKER_HOST=unix://$RUN/docker.sock
CONFIG
    echo "${ENGINE} $(cut -d' ' -f1,2 "$dir/host_key.pub")" >"$dir/known_hosts"
    cat >"$dir/ssh_config" <<CONFIG
Host ${ENGINE}
    User root
    IdentityFile $dir/client_key
    IdentitiesOnly yes
    UserKnownHostsFile $dir/known_hosts
    StrictHostKeyChecking yes
CONFIG
    printf '#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' "$dir/ssh_config" >"$dir/bin/ssh"
    chmod 755 "$dir/bin/ssh"
    # The client side belongs to whoever asked through sudo (the host key stays root's).
    if [[ -n "${SUDO_UID:-}" ]]; then
        chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$dir" "$dir/bin" "$dir/bin/ssh" "$dir/client_key" \
            "$dir/ssh_config" "$dir/known_hosts"
    fi
    nsenter --net="/run/netns/$NS" /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
    for _ in $(seq 50); do
        if PATH="$dir/bin:$PATH" ssh -o BatchMode=yes "${ENGINE}" true 2>/dev/null; then
            echo "SSH: DOCKER_HOST=ssh://root@${ENGINE} with PATH=$dir/bin:\$PATH"
            return 0
        fi
        sleep 0.1
    done
    echo "the engine's SSH server did not answer; its log:" >&2
    tail -n 20 "$dir/sshd.log" >&2 || true
    return 1
}

start() {
    stop
    mkdir -p "$DATA" "$RUN"
    ip netns add "$NS"
    ip link add "$HOST_END" type veth peer name "$NS_END"
    ip link set "$NS_END" netns "$NS"
    ip addr add "${SUBNET}.1/24" dev "$HOST_END"
    ip link set "$HOST_END" up
    ip netns exec "$NS" ip addr add "${ENGINE}/24" dev "$NS_END"
    ip netns exec "$NS" ip link set "$NS_END" up
    ip netns exec "$NS" ip link set lo up
    # Out through this machine, as a remote host has its own way out: builds install packages, as they
    # do on the local engine. Docker's FORWARD policy is DROP, hence the two ACCEPT rules.
    ip netns exec "$NS" ip route add default via "${SUBNET}.1"
    iptables -t nat -A POSTROUTING -s "${SUBNET}.0/24" ! -o "$HOST_END" -j MASQUERADE -m comment --comment "$NS"
    iptables -I FORWARD -i "$HOST_END" -j ACCEPT -m comment --comment "$NS"
    iptables -I FORWARD -o "$HOST_END" -j ACCEPT -m comment --comment "$NS"
    # A containerd of its own: the local engine's containers and this engine's never meet.
    printf 'version = 2\n' >"$RUN/containerd.toml"
    printf '{}\n' >"$RUN/daemon.json"
    nsenter --net="/run/netns/$NS" containerd --config "$RUN/containerd.toml" --address "$RUN/containerd.sock" \
        --root "$DATA/containerd" --state "$RUN/containerd" >"$RUN/containerd.log" 2>&1 &
    echo $! >"$RUN/containerd.pid"
    for _ in $(seq 100); do [[ -S "$RUN/containerd.sock" ]] && break; sleep 0.1; done
    nsenter --net="/run/netns/$NS" dockerd --tls=false --host "tcp://${ENGINE}:${PORT}" --host "unix://$RUN/docker.sock" \
        --containerd "$RUN/containerd.sock" --data-root "$DATA/docker" --exec-root "$RUN/exec" \
        --pidfile "$RUN/dockerd.pid" --config-file "$RUN/daemon.json" >"$RUN/dockerd.log" 2>&1 &
    for _ in $(seq $((START_TIMEOUT * 10))); do
        if docker -H "tcp://${ENGINE}:${PORT}" version >/dev/null 2>&1; then
            echo "DOCKER_HOST=tcp://${ENGINE}:${PORT}"
            start_ssh
            return 0
        fi
        sleep 0.1
    done
    echo "the second engine did not answer on tcp://${ENGINE}:${PORT} within ${START_TIMEOUT} s; its log:" >&2
    tail -n 30 "$RUN/dockerd.log" >&2 || true
    stop
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
