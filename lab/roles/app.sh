#!/usr/bin/env bash
# The donations demo app of one node of the failoverd lab (`python -m lab.donations`).
#
#   app.sh start|stop|status
#
# Environment:
#   NODE       node name, put into every answer (required)
#   LAB_DIR    node directory: app.pid, app.log, app.fault (required)
#   VENV       the project's virtual environment (default $REPO/.venv)
#   APP_HOST   address to listen on (default 127.0.0.1: only Squid talks to it)
#   APP_PORT   port (default 8080)
#   PG_HOST    the local PostgreSQL (default 127.0.0.1)
#   PG_PORT    its port (default 5432)
#   PG_DB      the app's database (default donations)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_env NODE LAB_DIR
VENV=${VENV:-$REPO/.venv}
APP_HOST=${APP_HOST:-127.0.0.1}
APP_PORT=${APP_PORT:-8080}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_DB=${PG_DB:-donations}
PIDFILE=$LAB_DIR/app.pid
LOG=$LAB_DIR/app.log
MARKER="lab.donations --host $APP_HOST --port $APP_PORT"

answers() { [[ $(http_status "http://$APP_HOST:$APP_PORT/health") != 000 ]]; }
exited() { spawned_exited "$PIDFILE"; }
answers_or_exited() { answers || exited; }

start() {
    local pid
    if pid=$(pid_from "$PIDFILE" "$MARKER"); then
        say "already running (pid $pid)"
        return 0
    fi
    mkdir -p "$LAB_DIR"
    cd "$REPO"
    export PYTHONPATH=$REPO PYTHONUNBUFFERED=1
    spawn "$PIDFILE" "$LOG" "$VENV/bin/python" -m lab.donations \
        --host "$APP_HOST" --port "$APP_PORT" \
        --dsn "host=$PG_HOST port=$PG_PORT user=postgres dbname=$PG_DB" \
        --node "$NODE" --fault-file "$LAB_DIR/app.fault"
    wait_until 20 answers_or_exited || true
    if ! answers; then
        tail -n 30 "$LOG" >&2 || true
        stop_pid "$PIDFILE" "$MARKER" TERM 5 2>/dev/null || true
        die "the app did not answer on $APP_HOST:$APP_PORT (log $LOG)"
    fi
    say "serving on $APP_HOST:$APP_PORT (pid $(pid_from "$PIDFILE" "$MARKER"))"
}

case ${1:-} in
    start) start ;;
    stop) stop_pid "$PIDFILE" "$MARKER" TERM 5 ;;
    status)
        report app "$PIDFILE" "$MARKER" || exit $?
        echo "app /health: HTTP $(http_status "http://$APP_HOST:$APP_PORT/health")"
        ;;
    *) usage "start|stop|status" ;;
esac
