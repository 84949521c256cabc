#!/usr/bin/env bash
# A standalone ZooKeeper 3.8 server for the failoverd lab.
#
#   zookeeper.sh start|stop|status
#
# Environment:
#   LAB_DIR             directory for zoo.cfg, the log and the PID file (required)
#   ADDR                address to listen on (required; the lab uses 10.77.0.5)
#   ZK_PORT             client port (default 2181)
#   ZK_DATA_DIR         data directory; put it on tmpfs (default $LAB_DIR/data)
#   ZK_MIN_SESSION_MS   minSessionTimeout (default 1000)
#   ZK_MAX_SESSION_MS   maxSessionTimeout (default 10000)
#   ZK_JAVA_OPTS        JVM options (default "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
#                       -XX:-UsePerfData": no /tmp/hsperfdata_* left by a killed JVM)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_env LAB_DIR ADDR
ZK_PORT=${ZK_PORT:-2181}
ZK_DATA_DIR=${ZK_DATA_DIR:-$LAB_DIR/data}
ZK_MIN_SESSION_MS=${ZK_MIN_SESSION_MS:-1000}
ZK_MAX_SESSION_MS=${ZK_MAX_SESSION_MS:-10000}
ZK_JAVA_OPTS=${ZK_JAVA_OPTS:-"-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData"}
ZK_CLASSPATH=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar
CONF=$LAB_DIR/zoo.cfg
PIDFILE=$LAB_DIR/zookeeper.pid
LOG=$LAB_DIR/zookeeper.log
MARKER="ZooKeeperServerMain $CONF"

# srvr: the server's answer to the `srvr` four-letter command (empty when it does not answer).
srvr() {
    printf srvr | curl -s --max-time 1 "telnet://$ADDR:$ZK_PORT" 2>/dev/null || true
}
serving() { [[ $(srvr) == *"Mode: standalone"* ]]; }
exited() { spawned_exited "$PIDFILE"; }

start() {
    local pid
    if pid=$(pid_from "$PIDFILE" "$MARKER"); then
        say "already running (pid $pid)"
        return 0
    fi
    mkdir -p "$LAB_DIR" "$ZK_DATA_DIR"
    render "$TEMPLATES/zoo.cfg" "$CONF" ZK_MIN_SESSION_MS ZK_MAX_SESSION_MS ZK_DATA_DIR ZK_PORT ADDR
    # shellcheck disable=SC2086 # ZK_JAVA_OPTS is a list of options
    spawn "$PIDFILE" "$LOG" java $ZK_JAVA_OPTS -cp "$ZK_CLASSPATH" \
        org.apache.zookeeper.server.ZooKeeperServerMain "$CONF"
    # Ready when `srvr` says standalone: `ruok` answers imok before requests are served.
    wait_until 30 serving_or_exited || true
    if ! serving; then
        tail -n 30 "$LOG" >&2 || true
        stop_pid "$PIDFILE" "$MARKER" TERM 5 2>/dev/null || true
        die "ZooKeeper did not serve on $ADDR:$ZK_PORT (log $LOG)"
    fi
    say "serving on $ADDR:$ZK_PORT (pid $(pid_from "$PIDFILE" "$MARKER"), data $ZK_DATA_DIR)"
}
serving_or_exited() { serving || exited; }

case ${1:-} in
    start) start ;;
    stop) stop_pid "$PIDFILE" "$MARKER" TERM 5 ;;
    status)
        report zookeeper "$PIDFILE" "$MARKER" || exit $?
        srvr | grep -E '^(Mode|Zookeeper version|Connections):' || true
        ;;
    *) usage "start|stop|status" ;;
esac
