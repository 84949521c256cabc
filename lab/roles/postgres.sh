#!/usr/bin/env bash
# PostgreSQL 15 of one node of the failoverd lab: the primary, or a streaming replica of it.
#
#   postgres.sh start|stop|status
#
# `start` initialises the data directory the first time (PG_ROLE=primary: initdb, the database
# PG_DB and the app's schema; PG_ROLE=replica: pg_basebackup from the primary at PEER_ADDR, which
# must already hold that database), then starts the server if it is not running. After the first
# start the node's failoverd owns the server (stop, promote, restart as a replica): lab/lab calls
# this script again only when asked to by name.
#
# Environment:
#   NODE           node name (required; also cluster_name and the replica's application_name)
#   ADDR           node address, listened on besides 127.0.0.1 (required)
#   LAB_DIR        node directory; the server lives in $LAB_DIR/pg (required)
#   PG_ROLE        primary | replica: how to initialise (required for the first start)
#   PEER_ADDR      the primary's address (required to initialise a replica)
#   PG_PORT        port (default 5432)
#   PG_BIN         PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   PG_OS_USER     OS user running the server (default postgres)
#   PG_DB          the app's database (default donations)
#   SCHEMA_FILE    the app's schema (default $REPO/lab/donations/schema.sql)
#   TRUST_NET      network trusted without password, besides 127.0.0.1 (default 10.77.0.0/24)
#   PG_STOP_MODE   fast | immediate: how `stop` shuts down (default fast)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_env NODE ADDR LAB_DIR
PG_PORT=${PG_PORT:-5432}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_OS_USER=${PG_OS_USER:-postgres}
PG_DB=${PG_DB:-donations}
SCHEMA_FILE=${SCHEMA_FILE:-$REPO/lab/donations/schema.sql}
TRUST_NET=${TRUST_NET:-10.77.0.0/24}
PG_STOP_MODE=${PG_STOP_MODE:-fast}
PG_HOME=$LAB_DIR/pg
PG_DATA=$PG_HOME/data
PG_SOCKET_DIR=$PG_HOME/socket
PG_LOG=$PG_HOME/postgres.log
# The node's own settings live beside the data directory, included by a relative path:
# pg_basebackup and pg_rewind copy the data directory's files from the peer.
PG_NODE_CONF=$PG_HOME/failoverd_lab.conf
export PGCONNECT_TIMEOUT=2 LC_ALL=C

as_pg() { runuser -u "$PG_OS_USER" -- "$@"; }
psql_local() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres "$@"; }
initialised() { [[ -f $PG_DATA/PG_VERSION ]]; }

# postmaster_pid: the PID in postmaster.pid, if that process is alive and runs in our data
# directory (the postmaster chdirs there): a reused PID never points at a stranger.
postmaster_pid() {
    local pid cwd
    pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null | tr -dc '0-9') || return 1
    [[ -n $pid ]] && alive "$pid" || return 1
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
    [[ $cwd == "$(readlink -f "$PG_DATA")" ]] || return 1
    printf '%s\n' "$pid"
}

accepts() { psql_local -d postgres -c 'SELECT 1' >/dev/null 2>&1; }
in_recovery() { psql_local -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null; }
streaming() {
    [[ $(psql_local -d postgres -c 'SELECT status FROM pg_stat_wal_receiver' 2>/dev/null) == streaming ]]
}

write_node_conf() {
    render "$TEMPLATES/postgresql.lab.conf" "$PG_NODE_CONF" NODE ADDR PG_PORT PG_SOCKET_DIR
    chown "$PG_OS_USER:" "$PG_NODE_CONF"
    chmod 0600 "$PG_NODE_CONF"
    # A data directory from before the settings moved out of it includes its own copy.
    if [[ -f $PG_DATA/failoverd_lab.conf ]]; then
        install -o "$PG_OS_USER" -m 0600 "$PG_NODE_CONF" "$PG_DATA/failoverd_lab.conf"
    fi
}

prepare_dirs() {
    mkdir -p "$PG_HOME" "$PG_SOCKET_DIR"
    chown "$PG_OS_USER:" "$PG_HOME" "$PG_SOCKET_DIR"
    chmod 0700 "$PG_HOME" "$PG_SOCKET_DIR"
}

init_primary() {
    say "initdb $PG_DATA"
    # Data checksums: pg_rewind needs them (or wal_log_hints) to rejoin a diverged node.
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 --locale=C \
        --data-checksums --no-sync --no-instructions >"$PG_HOME/initdb.log" 2>&1 \
        || { cat "$PG_HOME/initdb.log" >&2; die "initdb failed"; }
    printf "\n# failoverd lab: this node's settings, beside the data directory\ninclude '../failoverd_lab.conf'\n" \
        >>"$PG_DATA/postgresql.conf"
    render "$TEMPLATES/pg_hba.conf" "$PG_DATA/pg_hba.conf" TRUST_NET
    chown "$PG_OS_USER:" "$PG_DATA/pg_hba.conf"
    chmod 0600 "$PG_DATA/pg_hba.conf"
    write_node_conf
}

init_replica() {
    need_env PEER_ADDR
    say "pg_basebackup from $PEER_ADDR:$PG_PORT into $PG_DATA"
    as_pg "$PG_BIN/pg_basebackup" -D "$PG_DATA" \
        -d "host=$PEER_ADDR port=$PG_PORT user=postgres application_name=$NODE connect_timeout=2" \
        -R -X stream -c fast --no-sync -w >"$PG_HOME/basebackup.log" 2>&1 \
        || { cat "$PG_HOME/basebackup.log" >&2; rm -rf "$PG_DATA"; die "pg_basebackup failed"; }
    write_node_conf # its own address, port and socket directory, beside the copy
}

create_database() {
    if [[ $(psql_local -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") != 1 ]]; then
        psql_local -d postgres -c "CREATE DATABASE \"$PG_DB\""
    fi
    psql_local -d "$PG_DB" <"$SCHEMA_FILE"
    say "database $PG_DB with schema $SCHEMA_FILE"
}

start() {
    local pid first=no role=${PG_ROLE:-}
    if pid=$(postmaster_pid); then
        say "already running (pid $pid)"
        return 0
    fi
    prepare_dirs
    if ! initialised; then
        first=yes
        case $role in
            primary) init_primary ;;
            replica) init_replica ;;
            *) die "$PG_DATA is not initialised: set PG_ROLE=primary or PG_ROLE=replica" ;;
        esac
    fi
    # A postmaster.pid left by a killed server would stop the new one (its PID may linger
    # as a zombie, and kill(pid, 0) calls a zombie alive).
    rm -f "$PG_DATA/postmaster.pid"
    as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t 30 -s \
        || { tail -n 30 "$PG_LOG" >&2 || true; die "pg_ctl start failed (log $PG_LOG)"; }
    wait_until 30 accepts || die "PostgreSQL started but refuses connections (log $PG_LOG)"
    if [[ $first == yes && $role == primary ]]; then
        create_database
    fi
    if [[ $first == yes && $role == replica ]]; then
        wait_until 20 streaming || die "replica is not streaming from $PEER_ADDR (log $PG_LOG)"
    fi
    say "running (pid $(postmaster_pid), $( [[ $(in_recovery) == t ]] && echo replica || echo primary))"
}

stop() {
    local pid sig kids kid
    if ! pid=$(postmaster_pid); then
        say "not running"
        return 0
    fi
    # Signals to the postmaster: SIGINT is a fast shutdown (SIGTERM would be a smart one,
    # waiting for the app's pooled connections for ever), SIGQUIT an immediate one.
    case $PG_STOP_MODE in
        immediate) sig=QUIT ;;
        *) sig=INT ;;
    esac
    kids=$(descendants "$pid" | tr '\n' ' ')
    kill "-$sig" "$pid" 2>/dev/null || true
    if ! wait_until 10 gone "$pid"; then
        say "pid $pid still running 10 s after SIG$sig: SIGKILL"
        kill -STOP "$pid" 2>/dev/null || true
        kids="$kids $(descendants "$pid" | tr '\n' ' ')"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 5 gone "$pid" || die "postmaster $pid survived SIGKILL"
    fi
    for kid in $kids; do
        if alive "$kid"; then kill -KILL "$kid" 2>/dev/null || true; fi
    done
    rm -f "$PG_DATA/postmaster.pid"
    say "stopped (pid $pid)"
}

status() {
    local pid
    if ! pid=$(postmaster_pid); then
        if initialised; then echo "postgres down"; else echo "postgres down (not initialised)"; fi
        return 3
    fi
    case $(in_recovery) in
        t) printf 'postgres up pid %s replica (wal receiver: %s)\n' "$pid" \
            "$(psql_local -d postgres -c 'SELECT status FROM pg_stat_wal_receiver' 2>/dev/null || echo none)" ;;
        f) printf 'postgres up pid %s primary\n' "$pid" ;;
        *) printf 'postgres up pid %s (not answering)\n' "$pid" ;;
    esac
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage "start|stop|status" ;;
esac
