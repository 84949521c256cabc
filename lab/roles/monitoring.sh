#!/usr/bin/env bash
# Monitoring of the failoverd lab: Debian's Prometheus and Alertmanager and a webhook receiver
# (lab/webhook.py), so that "a failover pages someone" is tested end to end.
#
#   monitoring.sh start|stop|status
#
# `start` brings up, each once and in this order, the webhook receiver (every notification a
# JSON line in $LAB_DIR/webhook.jsonl), Alertmanager (everything routed to the receiver) and
# Prometheus (scraping TARGETS as job "failoverd", evaluating RULES), each with its config
# rendered from lab/templates/ and checked first (amtool, promtool), its data under LAB_DIR, and
# waits until each says it is ready. `stop` stops them by PID in the reverse order.
#
# Environment:
#   ADDR               address all three listen on (required)
#   LAB_DIR            directory for configs, data, logs, PID files, webhook.jsonl (required)
#   TARGETS            the daemons' /metrics, space-separated HOST:PORT (required by start)
#   RULES              alert rules (default $REPO/config/prometheus/alerts.yml)
#   PROMETHEUS_PORT    default 9090
#   ALERTMANAGER_PORT  default 9093
#   WEBHOOK_PORT       default 9099
#   SCRAPE_INTERVAL    scrape and rule evaluation interval (default 1s: the lab's)
#   GROUP_WAIT         Alertmanager's group_wait and group_interval (default 1s: the lab's)
#   VENV               the project's virtual environment (default $REPO/.venv)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_env ADDR LAB_DIR
RULES=${RULES:-$REPO/config/prometheus/alerts.yml}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9093}
WEBHOOK_PORT=${WEBHOOK_PORT:-9099}
SCRAPE_INTERVAL=${SCRAPE_INTERVAL:-1s}
GROUP_WAIT=${GROUP_WAIT:-1s}
VENV=${VENV:-$REPO/.venv}

PROM_CONF=$LAB_DIR/prometheus.yml
AM_CONF=$LAB_DIR/alertmanager.yml
PAGES=$LAB_DIR/webhook.jsonl
WEBHOOK_MARKER="lab.webhook --listen $ADDR --port $WEBHOOK_PORT"
AM_MARKER="--config.file=$AM_CONF"
PROM_MARKER="--config.file=$PROM_CONF"

# ready_url NAME: the address whose HTTP 200 says the component is ready
ready_url() {
    case $1 in
        webhook) echo "http://$ADDR:$WEBHOOK_PORT/" ;;
        alertmanager) echo "http://$ADDR:$ALERTMANAGER_PORT/-/ready" ;;
        prometheus) echo "http://$ADDR:$PROMETHEUS_PORT/-/ready" ;;
    esac
}
webhook_ready() { [[ $(http_status "$(ready_url webhook)") == 200 ]]; }
am_ready() { [[ $(http_status "$(ready_url alertmanager)") == 200 ]]; }
prom_ready() { [[ $(http_status "$(ready_url prometheus)") == 200 ]]; }

# launch NAME MARKER READY CMD...: spawn CMD unless NAME already runs, and wait until READY
# succeeds (or the process exits: then its log's tail and an error).
launch() {
    local name=$1 marker=$2 ready=$3 pid
    shift 3
    local pidfile=$LAB_DIR/$name.pid log=$LAB_DIR/$name.log
    if pid=$(pid_from "$pidfile" "$marker"); then
        say "$name already running (pid $pid)"
        return 0
    fi
    spawn "$pidfile" "$log" "$@"
    # shellcheck disable=SC2317  # called indirectly by wait_until
    ready_or_exited() { "$ready" || spawned_exited "$pidfile"; }
    local waited_from
    waited_from=$(uptime_cs)
    # 60 s: ready in 2-3 s as a rule; a loaded host is given time.
    wait_until 60 ready_or_exited || true
    if ! "$ready"; then
        tail -n 30 "$log" >&2 || true
        if spawned_exited "$pidfile"; then
            say "$name exited before it was ready: $(exit_status "$(head -n 1 "$pidfile")")"
        else
            say "$name still runs, not ready after $(($(uptime_cs) - waited_from))0 ms"
        fi
        say "$name: ready probe answered HTTP $(http_status "$(ready_url "$name")")"
        stop_pid "$pidfile" "$marker" TERM 5 2>/dev/null || true
        die "$name did not get ready (log $log)"
    fi
    say "$name ready (pid $(pid_from "$pidfile" "$marker"))"
}

start() {
    need_env TARGETS
    [[ -r $RULES ]] || die "RULES $RULES not readable"
    local listed out
    # shellcheck disable=SC2086  # one word per target
    listed=$(printf '"%s", ' $TARGETS)
    TARGETS=${listed%, }
    mkdir -p "$LAB_DIR/prometheus" "$LAB_DIR/alertmanager"
    # shellcheck disable=SC2034  # read by render, by name
    local ALERTMANAGER_ADDR=$ADDR:$ALERTMANAGER_PORT WEBHOOK_URL=http://$ADDR:$WEBHOOK_PORT/ \
        SCRAPE_TIMEOUT=$SCRAPE_INTERVAL GROUP_INTERVAL=$GROUP_WAIT
    render "$TEMPLATES/prometheus.yml" "$PROM_CONF" \
        SCRAPE_INTERVAL SCRAPE_TIMEOUT RULES ALERTMANAGER_ADDR TARGETS
    render "$TEMPLATES/alertmanager.yml" "$AM_CONF" GROUP_WAIT GROUP_INTERVAL WEBHOOK_URL
    if ! out=$(amtool check-config "$AM_CONF" 2>&1); then
        printf '%s\n' "$out" >&2
        die "amtool check-config $AM_CONF failed"
    fi
    if ! out=$(promtool check config "$PROM_CONF" 2>&1); then
        printf '%s\n' "$out" >&2
        die "promtool check config $PROM_CONF failed"
    fi

    (
        cd "$REPO"
        export PYTHONPATH=$REPO PYTHONUNBUFFERED=1
        launch webhook "$WEBHOOK_MARKER" webhook_ready \
            "$VENV/bin/python" -m lab.webhook --listen "$ADDR" --port "$WEBHOOK_PORT" --out "$PAGES"
    )
    launch alertmanager "$AM_MARKER" am_ready \
        prometheus-alertmanager "$AM_MARKER" \
        "--storage.path=$LAB_DIR/alertmanager" \
        "--web.listen-address=$ADDR:$ALERTMANAGER_PORT" \
        "--cluster.listen-address=" \
        --log.level=warn
    launch prometheus "$PROM_MARKER" prom_ready \
        prometheus "$PROM_MARKER" \
        "--storage.tsdb.path=$LAB_DIR/prometheus" \
        "--storage.tsdb.retention.time=1d" \
        "--web.listen-address=$ADDR:$PROMETHEUS_PORT" \
        --log.level=warn
    say "Prometheus $ADDR:$PROMETHEUS_PORT scrapes $TARGETS every $SCRAPE_INTERVAL; pages to $PAGES"
}

stop() {
    stop_pid "$LAB_DIR/prometheus.pid" "$PROM_MARKER" TERM 10
    stop_pid "$LAB_DIR/alertmanager.pid" "$AM_MARKER" TERM 5
    stop_pid "$LAB_DIR/webhook.pid" "$WEBHOOK_MARKER" TERM 5
}

status() {
    local rc=0
    report prometheus "$LAB_DIR/prometheus.pid" "$PROM_MARKER" || rc=$?
    report alertmanager "$LAB_DIR/alertmanager.pid" "$AM_MARKER" || rc=$?
    report webhook "$LAB_DIR/webhook.pid" "$WEBHOOK_MARKER" || rc=$?
    return "$rc"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage "start|stop|status" ;;
esac
