#!/usr/bin/env bash
# Squid 5 of one node of the failoverd lab: a reverse proxy (accel mode) in front of the app,
# on SQUID_PORT of every address of the node (so it serves the VIP while the node holds it).
#
#   squid.sh start|stop|status
#
# Environment:
#   NODE        node name (required)
#   LAB_DIR     node directory: squid.pid, squid.out, squid/ (required)
#   SQUID_PORT  port on all addresses (default 80)
#   APP_HOST    the app behind it (default 127.0.0.1)
#   APP_PORT    its port (default 8080)
#   SQUID_USER  the user Squid switches to (default proxy: squid/ is made writable for it)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_env NODE LAB_DIR
SQUID_PORT=${SQUID_PORT:-80}
APP_HOST=${APP_HOST:-127.0.0.1}
APP_PORT=${APP_PORT:-8080}
SQUID_USER=${SQUID_USER:-proxy}
SQUID_DIR=$LAB_DIR/squid
CONF=$SQUID_DIR/squid.conf
PIDFILE=$LAB_DIR/squid.pid
LOG=$LAB_DIR/squid.out
MARKER="-f $CONF"
MGR_URL="http://127.0.0.1:$SQUID_PORT/squid-internal-mgr/info"

serving() { [[ $(http_status "$MGR_URL") == 200 ]]; }
exited() { spawned_exited "$PIDFILE"; }
serving_or_exited() { serving || exited; }

start() {
    local pid out
    if pid=$(pid_from "$PIDFILE" "$MARKER"); then
        say "already running (pid $pid)"
        return 0
    fi
    mkdir -p "$SQUID_DIR"
    chown "$SQUID_USER:" "$SQUID_DIR"
    chmod 0755 "$SQUID_DIR"
    render "$TEMPLATES/squid.conf" "$CONF" NODE SQUID_PORT APP_HOST APP_PORT SQUID_DIR
    if ! out=$(squid -k parse -f "$CONF" 2>&1) || [[ $out == *FATAL* || $out == *ERROR* ]]; then
        printf '%s\n' "$out" >&2
        die "squid -k parse -f $CONF failed"
    fi
    spawn "$PIDFILE" "$LOG" squid -N -f "$CONF"
    wait_until 20 serving_or_exited || true
    if ! serving; then
        tail -n 30 "$SQUID_DIR/cache.log" "$LOG" >&2 || true
        stop_pid "$PIDFILE" "$MARKER" TERM 5 2>/dev/null || true
        die "Squid did not serve on port $SQUID_PORT (log $SQUID_DIR/cache.log)"
    fi
    say "serving on *:$SQUID_PORT -> $APP_HOST:$APP_PORT (pid $(pid_from "$PIDFILE" "$MARKER"))"
}

case ${1:-} in
    start) start ;;
    # SIGTERM: Squid takes 1.5-2 s to exit, even with shutdown_lifetime 0.
    stop) stop_pid "$PIDFILE" "$MARKER" TERM 5 ;;
    status)
        report squid "$PIDFILE" "$MARKER" || exit $?
        echo "squid /health through it: HTTP $(http_status "http://127.0.0.1:$SQUID_PORT/health")"
        ;;
    *) usage "start|stop|status" ;;
esac
