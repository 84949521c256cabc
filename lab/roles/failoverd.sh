#!/usr/bin/env bash
# failoverd of one node of the failoverd lab: its configuration and the daemon.
#
#   failoverd.sh config|start|stop|status
#
# `config` writes $LAB_DIR/failoverd.toml from lab/templates/failoverd.toml and checks it with
# `failoverd check-config`; `start` writes it first if it is missing, then runs
# `failoverd run -c CONFIG` and waits for its "started" event (it has reached ZooKeeper and
# claimed its member record). SIGTERM stops it: the daemon steps down cleanly if it is active.
#
# Environment:
#   NODE, ADDR         this node's name and address (required)
#   PEER, PEER_ADDR    the other node's name and address (required)
#   LAB_DIR            node directory (required)
#   VENV               the project's virtual environment (default $REPO/.venv)
#   CLUSTER            cluster name (default lab); CHROOT (default /failoverd/$CLUSTER)
#   ZK_HOSTS           ZooKeeper servers, "host:port" separated by commas (default 10.77.0.5:2181)
#   VIP, VIP_IFACE     service IP and its interface (default 10.77.0.100/24 on eth0)
#   PG_PORT, PG_DB     the local PostgreSQL (default 5432, donations)
#   PG_DATA, PG_BIN    its data directory and binaries (default $LAB_DIR/pg/data,
#                      /usr/lib/postgresql/15/bin)
#   SSH_PORT           sshd port of both nodes (default 22); SSH_DIR (default $LAB_DIR/ssh)
#   APP_PORT           the app (default 8080); SQUID_PORT: Squid (default 80)
#   METRICS_ENABLED    true|false (default false); METRICS_PORT (default 9641)
#   REPLICATION_MODE   [replication] mode: async|sync|strict (default sync)
#   FAILSAFE           [failsafe] enabled: true|false (default true); the shared secret is
#                      $(dirname $LAB_DIR)/failsafe.key, written once for both nodes
#   SESSION_TIMEOUT, SELF_FENCE_AFTER, LOOP_INTERVAL, ROUNDTRIP_TIMEOUT, CHECK_INTERVAL,
#   CHECK_TIMEOUT, CHECK_SLOW_AFTER, PLEDGE_TTL, PLEDGE_MARGIN, FENCE_CONNECT_TIMEOUT
#                      the timing profile's values (lab/profiles.py; defaults: "default")
#   LOG_LEVEL          debug|info|warning|error (default info)
#   STOP_TIMEOUT       seconds from SIGTERM to SIGKILL in `stop` (default 10)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_env NODE ADDR PEER PEER_ADDR LAB_DIR
VENV=${VENV:-$REPO/.venv}
CLUSTER=${CLUSTER:-lab}
CHROOT=${CHROOT:-/failoverd/$CLUSTER}
ZK_HOSTS=${ZK_HOSTS:-10.77.0.5:2181}
VIP=${VIP:-10.77.0.100/24}
VIP_IFACE=${VIP_IFACE:-eth0}
PG_PORT=${PG_PORT:-5432}
PG_DB=${PG_DB:-donations}
PG_DATA=${PG_DATA:-$LAB_DIR/pg/data}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SSH_PORT=${SSH_PORT:-22}
SSH_DIR=${SSH_DIR:-$LAB_DIR/ssh}
APP_PORT=${APP_PORT:-8080}
SQUID_PORT=${SQUID_PORT:-80}
METRICS_ENABLED=${METRICS_ENABLED:-false}
METRICS_PORT=${METRICS_PORT:-9641}
REPLICATION_MODE=${REPLICATION_MODE:-sync}
FAILSAFE=${FAILSAFE:-true}
# The timing profile's values (lab/profiles.py passes them; these are "default"'s).
SESSION_TIMEOUT=${SESSION_TIMEOUT:-2.0}
SELF_FENCE_AFTER=${SELF_FENCE_AFTER:-1.0}
LOOP_INTERVAL=${LOOP_INTERVAL:-0.1}
ROUNDTRIP_TIMEOUT=${ROUNDTRIP_TIMEOUT:-0.25}
CHECK_INTERVAL=${CHECK_INTERVAL:-0.5}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-1.0}
CHECK_SLOW_AFTER=${CHECK_SLOW_AFTER:-0.5}
PLEDGE_TTL=${PLEDGE_TTL:-2.0}
PLEDGE_MARGIN=${PLEDGE_MARGIN:-0.2}
FENCE_CONNECT_TIMEOUT=${FENCE_CONNECT_TIMEOUT:-0.3}
LOG_LEVEL=${LOG_LEVEL:-info}
CONFIG=$LAB_DIR/failoverd.toml
PIDFILE=$LAB_DIR/failoverd.pid
LOG=$LAB_DIR/failoverd.log
MARKER="failoverd run -c $CONFIG"

config() {
    local host ZK_HOSTS_TOML=""
    mkdir -p "$LAB_DIR"
    for host in ${ZK_HOSTS//,/ }; do
        ZK_HOSTS_TOML+="${ZK_HOSTS_TOML:+, }\"$host\""
    done
    # The lab's power switch (the second fencing level): `lab/lab crash` kills every process
    # of the node and sets its link down, as pulling the plug would.
    local LAB_ROOT REPO_DIR
    # shellcheck disable=SC2034  # read by render, by name
    LAB_ROOT=$(dirname "$LAB_DIR")
    # shellcheck disable=SC2034  # read by render, by name
    REPO_DIR=$REPO
    failsafe_secret "$LAB_ROOT/failsafe.key"
    render "$TEMPLATES/failoverd.toml" "$CONFIG" NODE ADDR PEER PEER_ADDR CLUSTER CHROOT \
        ZK_HOSTS_TOML VIP VIP_IFACE PG_PORT PG_DB PG_DATA PG_BIN SSH_PORT SSH_DIR APP_PORT \
        SQUID_PORT METRICS_ENABLED METRICS_PORT REPLICATION_MODE LAB_ROOT REPO_DIR FAILSAFE LAB_DIR \
        SESSION_TIMEOUT SELF_FENCE_AFTER LOOP_INTERVAL ROUNDTRIP_TIMEOUT CHECK_INTERVAL \
        CHECK_TIMEOUT CHECK_SLOW_AFTER PLEDGE_TTL PLEDGE_MARGIN FENCE_CONNECT_TIMEOUT
    local out
    # The file alone (--offline): `lab up` writes it in the host's namespace before the node's
    # namespace, SSH keys and database exist, so the node-side checks (keys, known_hosts, the
    # VIP's interface, ZooKeeper's timing) could only fail here; the daemon's start and its
    # fencing check (fencing.check_interval) judge those where they run.
    if ! out=$("$VENV/bin/failoverd" check-config --offline "$CONFIG" 2>&1); then
        printf '%s\n' "$out" >&2
        die "failoverd check-config $CONFIG failed"
    fi
    say "wrote $CONFIG (checked, replication $REPLICATION_MODE)"
}

# The failsafe's shared secret, 48 random bytes, mode 0600: written by whichever node's config
# comes first, never replaced (mv -n), so both nodes read the same one.
failsafe_secret() {
    local key=$1 tmp
    [[ -s $key ]] && return 0
    tmp=$(mktemp "$key.XXXXXX")
    chmod 0600 "$tmp"
    head -c 48 /dev/urandom >"$tmp"
    mv -n "$tmp" "$key"
    rm -f "$tmp"
}

started_since() { tail -c "+$(($1 + 1))" "$LOG" 2>/dev/null | grep -q '"event": "started"'; }
exited() { spawned_exited "$PIDFILE"; }

start() {
    local pid offset
    if pid=$(pid_from "$PIDFILE" "$MARKER"); then
        say "already running (pid $pid)"
        return 0
    fi
    [[ -f $CONFIG ]] || config
    offset=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
    export PATH="$VENV/bin:$PATH" PYTHONUNBUFFERED=1
    spawn "$PIDFILE" "$LOG" "$VENV/bin/failoverd" run -c "$CONFIG" --log-level "$LOG_LEVEL"
    # start_timeout (5 s) to reach ZooKeeper, plus up to T + 1 s waiting for a previous life's
    # member record to expire.
    wait_until 20 started_or_exited "$offset" || true
    if ! started_since "$offset"; then
        tail -c "+$((offset + 1))" "$LOG" | tail -n 30 >&2 || true
        stop_pid "$PIDFILE" "$MARKER" TERM 5 2>/dev/null || true
        die "failoverd did not start (log $LOG)"
    fi
    if exited; then
        tail -c "+$((offset + 1))" "$LOG" | tail -n 30 >&2 || true
        die "failoverd started, then exited (log $LOG)"
    fi
    say "running (pid $(pid_from "$PIDFILE" "$MARKER")), config $CONFIG, log $LOG"
}
started_or_exited() { started_since "$1" || exited; }

case ${1:-} in
    config) config ;;
    start) start ;;
    # The daemon steps down cleanly on SIGTERM when it is active: give it action_timeout.
    stop) stop_pid "$PIDFILE" "$MARKER" TERM "${STOP_TIMEOUT:-10}" ;;
    status) report failoverd "$PIDFILE" "$MARKER" ;;
    *) usage "config|start|stop|status" ;;
esac
