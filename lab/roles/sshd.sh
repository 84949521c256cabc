#!/usr/bin/env bash
# sshd of one node of the failoverd lab, for one purpose: the peer's failoverd fencing this node.
#
#   sshd.sh keys|start|stop|status
#
# `keys` generates this node's SSH host key and its fencing client key (once; no passphrase)
# under $LAB_DIR/ssh. `start` (keys first if missing) authorises the peer's client key for root
# with a forced command and nothing else (no pty, no forwarding), writes known_hosts holding
# the peer's host key for its address (the client never accepts an unknown key), and runs
# sshd on ADDR:SSH_PORT in the foreground (-D), recorded by PID file.
#
# Environment:
#   NODE             node name (required)
#   ADDR             address sshd listens on (required)
#   LAB_DIR          node directory: sshd_config, sshd.pid, sshd.log, ssh/ (required)
#   SSH_PORT         port (default 22)
#   PEER_ADDR        the peer's address (required by start)
#   PEER_CLIENT_KEY  the peer's client public key file, authorised here (required by start)
#   PEER_HOST_KEY    the peer's host public key file, for known_hosts (required by start)
#   FENCE_COMMAND    the forced command (default "$VENV/bin/failoverd fence-self -c
#                    $LAB_DIR/failoverd.toml": this node fences itself with its own config)
#   VENV             the project's virtual environment (default $REPO/.venv)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_env NODE ADDR LAB_DIR
SSH_PORT=${SSH_PORT:-22}
VENV=${VENV:-$REPO/.venv}
FENCE_COMMAND=${FENCE_COMMAND:-"$VENV/bin/failoverd fence-self -c $LAB_DIR/failoverd.toml"}
SSH_DIR=$LAB_DIR/ssh
CONF=$LAB_DIR/sshd_config
PIDFILE=$LAB_DIR/sshd.pid
LOG=$LAB_DIR/sshd.log
MARKER="-f $CONF"

keys() {
    mkdir -p "$SSH_DIR"
    chmod 0700 "$SSH_DIR"
    if [[ ! -f $SSH_DIR/ssh_host_ed25519_key ]]; then
        ssh-keygen -q -t ed25519 -N '' -C "$NODE-host" -f "$SSH_DIR/ssh_host_ed25519_key"
    fi
    if [[ ! -f $SSH_DIR/id_ed25519 ]]; then
        ssh-keygen -q -t ed25519 -N '' -C "failoverd@$NODE" -f "$SSH_DIR/id_ed25519"
    fi
}

host_entry() {
    if [[ $SSH_PORT == 22 ]]; then printf '%s' "$1"; else printf '[%s]:%s' "$1" "$SSH_PORT"; fi
}

authorise_peer() {
    need_env PEER_ADDR PEER_CLIENT_KEY PEER_HOST_KEY
    [[ -r $PEER_CLIENT_KEY ]] || die "PEER_CLIENT_KEY $PEER_CLIENT_KEY not readable"
    [[ -r $PEER_HOST_KEY ]] || die "PEER_HOST_KEY $PEER_HOST_KEY not readable"
    [[ $FENCE_COMMAND != *'"'* ]] || die "FENCE_COMMAND must not contain double quotes"
    local options key
    options="command=\"$FENCE_COMMAND\",from=\"$PEER_ADDR\""
    options+=",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc"
    key=$(awk 'NF >= 2 { print $1, $2; exit }' "$PEER_CLIENT_KEY")
    [[ -n $key ]] || die "no key in $PEER_CLIENT_KEY"
    printf '%s %s fencing-from-%s\n' "$options" "$key" "$PEER_ADDR" >"$SSH_DIR/authorized_keys.tmp"
    mv -f "$SSH_DIR/authorized_keys.tmp" "$SSH_DIR/authorized_keys"
    key=$(awk 'NF >= 2 { print $1, $2; exit }' "$PEER_HOST_KEY")
    [[ -n $key ]] || die "no key in $PEER_HOST_KEY"
    printf '%s %s\n' "$(host_entry "$PEER_ADDR")" "$key" >"$SSH_DIR/known_hosts.tmp"
    mv -f "$SSH_DIR/known_hosts.tmp" "$SSH_DIR/known_hosts"
    chmod 0600 "$SSH_DIR/authorized_keys" "$SSH_DIR/known_hosts"
}

listening() { (exec 3<>"/dev/tcp/$ADDR/$SSH_PORT") 2>/dev/null; }
exited() { spawned_exited "$PIDFILE"; }
listening_or_exited() { listening || exited; }

start() {
    local pid
    if pid=$(pid_from "$PIDFILE" "$MARKER"); then
        say "already running (pid $pid)"
        return 0
    fi
    keys
    authorise_peer
    render "$TEMPLATES/sshd_config" "$CONF" NODE ADDR SSH_PORT SSH_DIR
    # sshd's privilege separation directory; Debian's unit creates it, here nobody does.
    # The marker lets lab/lab down remove it again; mkdir fails if the other node made it.
    if [[ ! -d /run/sshd ]] && mkdir -m 0755 /run/sshd 2>/dev/null; then
        touch "$LAB_DIR/created-run-sshd"
    fi
    [[ -d /run/sshd ]] || die "cannot create /run/sshd"
    /usr/sbin/sshd -t -f "$CONF" || die "sshd -t -f $CONF failed"
    # An absolute path: sshd re-executes itself for every connection.
    spawn "$PIDFILE" "$LOG" /usr/sbin/sshd -D -e -f "$CONF"
    wait_until 10 listening_or_exited || true
    if ! listening; then
        tail -n 30 "$LOG" >&2 || true
        stop_pid "$PIDFILE" "$MARKER" TERM 5 2>/dev/null || true
        die "sshd did not listen on $ADDR:$SSH_PORT (log $LOG)"
    fi
    say "listening on $ADDR:$SSH_PORT (pid $(pid_from "$PIDFILE" "$MARKER")), forced command: $FENCE_COMMAND"
}

case ${1:-} in
    keys) keys ;;
    start) start ;;
    stop) stop_pid "$PIDFILE" "$MARKER" TERM 5 ;;
    status) report sshd "$PIDFILE" "$MARKER" ;;
    *) usage "keys|start|stop|status" ;;
esac
