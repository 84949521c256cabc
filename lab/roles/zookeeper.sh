#!/usr/bin/env bash
# A ZooKeeper 3.8 server for the failoverd lab: one of an ensemble, or standalone.
#
#   zookeeper.sh start|stop|status
#
# Environment:
#   LAB_DIR             directory for zoo.cfg, the log and the PID file (required)
#   ADDR                address to listen on (required; the lab uses 10.77.0.5, .6 and .7)
#   ZK_PORT             client port (default 2181)
#   ZK_DATA_DIR         data directory; put it on tmpfs (default $LAB_DIR/data)
#   ZK_MIN_SESSION_MS   minSessionTimeout (default 1000)
#   ZK_MAX_SESSION_MS   maxSessionTimeout (default 10000)
#   ZK_SERVERS          the ensemble, "ID=ADDRESS ..." (e.g. "1=10.77.0.5 2=10.77.0.6
#                       3=10.77.0.7"); empty or unset: a standalone server (the Vagrant VM)
#   ZK_MYID             this server's ID among ZK_SERVERS (required with ZK_SERVERS)
#   ZK_QUORUM_PORT      followers to the leader (default 2888)
#   ZK_ELECTION_PORT    leader election (default 3888)
#   ZK_WAIT             start waits until the server "serving" (default: it answers `srvr` with
#                       a mode; an ensemble member needs a quorum for that) or "running" (its
#                       process answers `ruok`: for a member started while the others are down)
#   ZK_JAVA_OPTS        JVM options (default "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
#                       -XX:-UsePerfData", no /tmp/hsperfdata_* left by a killed JVM, and log
#                       lines with the time of day to the millisecond, to time elections)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_env LAB_DIR ADDR
ZK_PORT=${ZK_PORT:-2181}
ZK_DATA_DIR=${ZK_DATA_DIR:-$LAB_DIR/data}
ZK_MIN_SESSION_MS=${ZK_MIN_SESSION_MS:-1000}
ZK_MAX_SESSION_MS=${ZK_MAX_SESSION_MS:-10000}
ZK_SERVERS=${ZK_SERVERS:-}
ZK_QUORUM_PORT=${ZK_QUORUM_PORT:-2888}
ZK_ELECTION_PORT=${ZK_ELECTION_PORT:-3888}
ZK_WAIT=${ZK_WAIT:-serving}
ZK_JAVA_OPTS=${ZK_JAVA_OPTS:-"-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData
    -Dorg.slf4j.simpleLogger.showDateTime=true -Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS"}
ZK_CLASSPATH=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar
CONF=$LAB_DIR/zoo.cfg
PIDFILE=$LAB_DIR/zookeeper.pid
LOG=$LAB_DIR/zookeeper.log
# QuorumPeerMain runs a standalone server itself when the config has no server.N lines.
MARKER="QuorumPeerMain $CONF"

# four COMMAND: the server's answer to a four-letter command (empty when it does not answer).
four() {
    printf '%s' "$1" | curl -s --max-time 1 "telnet://$ADDR:$ZK_PORT" 2>/dev/null || true
}
# Ready when `srvr` names a mode: `ruok` answers imok before requests are served, and an
# ensemble member answers "not currently serving requests" until it has a quorum.
serving() { [[ $(four srvr) =~ Mode:\ (standalone|leader|follower) ]]; }
answering() { [[ $(four ruok) == imok ]]; }
exited() { spawned_exited "$PIDFILE"; }

# server_lines: the server.N lines of ZK_SERVERS ("" for a standalone server).
server_lines() {
    local entry id
    for entry in $ZK_SERVERS; do
        id=${entry%%=*}
        [[ $id =~ ^[0-9]+$ && $entry == *=* ]] || die "ZK_SERVERS: bad entry '$entry' (ID=ADDRESS)"
        printf 'server.%s=%s:%s:%s\n' "$id" "${entry#*=}" "$ZK_QUORUM_PORT" "$ZK_ELECTION_PORT"
    done
}

start() {
    local pid ready ZK_SERVER_LINES
    if pid=$(pid_from "$PIDFILE" "$MARKER"); then
        say "already running (pid $pid)"
        return 0
    fi
    case $ZK_WAIT in
        serving) ready=serving ;;
        running) ready=answering ;;
        *) die "ZK_WAIT must be serving or running, not '$ZK_WAIT'" ;;
    esac
    mkdir -p "$LAB_DIR" "$ZK_DATA_DIR"
    if [[ -n $ZK_SERVERS ]]; then
        need_env ZK_MYID
        [[ " $ZK_SERVERS" == *" $ZK_MYID="* ]] || die "ZK_MYID $ZK_MYID is not in ZK_SERVERS"
        printf '%s\n' "$ZK_MYID" >"$ZK_DATA_DIR/myid"
        ZK_SERVER_LINES="# The ensemble; this server is server.$ZK_MYID (myid in dataDir)."
        ZK_SERVER_LINES+=$'\n'$(server_lines)
    else
        # shellcheck disable=SC2034  # read by render, by name
        ZK_SERVER_LINES="# Standalone: no server.N lines."
    fi
    render "$TEMPLATES/zoo.cfg" "$CONF" ZK_MIN_SESSION_MS ZK_MAX_SESSION_MS ZK_DATA_DIR ZK_PORT ADDR \
        ZK_SERVER_LINES
    # shellcheck disable=SC2086 # ZK_JAVA_OPTS is a list of options
    spawn "$PIDFILE" "$LOG" java $ZK_JAVA_OPTS -cp "$ZK_CLASSPATH" \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$CONF"
    wait_until 30 ready_or_exited "$ready" || true
    # A member joining an ensemble may look ready a moment before it has synced with the
    # leader (and then not): give a flap a few seconds to settle before calling it a failure.
    if exited || ! wait_until 5 "$ready"; then
        tail -n 30 "$LOG" >&2 || true
        if exited; then
            die "ZooKeeper exited (log $LOG)"
        fi
        say "srvr said: $(four srvr | head -n 1)"
        stop_pid "$PIDFILE" "$MARKER" TERM 5 2>/dev/null || true
        die "ZooKeeper was not $ZK_WAIT on $ADDR:$ZK_PORT within 35 s (log $LOG)"
    fi
    if [[ $ready == serving ]]; then
        say "serving on $ADDR:$ZK_PORT, $(four srvr | sed -n 's/^Mode: //p') (pid" \
            "$(pid_from "$PIDFILE" "$MARKER"), data $ZK_DATA_DIR)"
    else
        say "running on $ADDR:$ZK_PORT (pid $(pid_from "$PIDFILE" "$MARKER"), data $ZK_DATA_DIR)"
    fi
}
ready_or_exited() { "$1" || exited; }

case ${1:-} in
    start) start ;;
    stop) stop_pid "$PIDFILE" "$MARKER" TERM 5 ;;
    status)
        report zookeeper "$PIDFILE" "$MARKER" || exit $?
        four srvr | grep -E '^(Mode|Zookeeper version|Connections):' || true
        ;;
    *) usage "start|stop|status" ;;
esac
