# shellcheck shell=bash
# Helpers shared by the role scripts in lab/roles/ (sourced, never run on its own).
#
# The role scripts provision one component each (start|stop|status), taking every parameter from
# environment variables, so that the same script runs inside a lab network namespace (lab/lab
# wraps it in `ip netns exec NODE`) or on a Vagrant VM. Nothing here knows about namespaces.
#
# Processes are tracked by PID file only: `stop` signals the recorded PID (SIGTERM or the
# component's own stop signal, a bounded wait, then SIGKILL). Never pkill/killall: on a shared
# host another lab or a real service may run the same program.
#
# A PID counts as running only if /proc says it is alive (a zombie is dead: on hosts whose PID 1
# does not reap orphans, killed lab processes linger as zombies) and its command line still
# contains the component's marker (a PID file whose number was reused never points at a stranger).

ROLE_NAME=$(basename "${BASH_SOURCE[1]:-role}" .sh)
ROLES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_SRC=$(dirname "$ROLES_DIR")            # lab/
REPO=${REPO:-$(dirname "$LAB_SRC")}        # the project checkout
TEMPLATES=${TEMPLATES:-$LAB_SRC/templates}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { printf '%s: %s\n' "$ROLE_NAME" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# need_env VAR...: fail with one clear line unless every variable is set and non-empty.
need_env() {
    local var missing=()
    for var in "$@"; do
        [[ -n ${!var:-} ]] || missing+=("$var")
    done
    ((${#missing[@]} == 0)) || die "missing environment variable(s): ${missing[*]}"
}

# alive PID: the process exists and is not a zombie.
alive() {
    local stat state
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [[ $state != Z && $state != X ]]
}

# cmdline PID: the process's command line with spaces between the arguments.
cmdline() {
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null
}

# pid_from FILE MARKER: print the PID recorded in FILE if that process is alive and its command
# line contains MARKER; return 1 otherwise.
pid_from() {
    local file=$1 marker=$2 pid
    [[ -r $file ]] || return 1
    pid=$(head -n 1 "$file" 2>/dev/null | tr -dc '0-9')
    [[ -n $pid ]] && alive "$pid" || return 1
    [[ $(cmdline "$pid") == *"$marker"* ]] || return 1
    printf '%s\n' "$pid"
}

# spawn PIDFILE LOGFILE CMD...: run CMD in the background in a session of its own (so a Ctrl-C
# in the caller's terminal never reaches it), stdin from /dev/null, output appended to LOGFILE,
# and record its PID.
spawn() {
    local pidfile=$1 logfile=$2
    shift 2
    printf -- '--- %s starting: %s\n' "$(date -u +%FT%T.%3NZ)" "$*" >>"$logfile"
    # A background job of a non-interactive shell is not a process group leader, so setsid
    # does not fork again: $! is the PID of CMD itself.
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    printf '%s\n' "$!" >"$pidfile"
}

# uptime_cs: centiseconds since boot. Timeouts count on this clock, never on date's: the wall
# clock of a VM is stepped when the VM is resumed, and a lab run here saw a 35 s wait for
# ZooKeeper end after 13 s, and the monitoring's 60 s waits end at once.
uptime_cs() {
    local up
    read -r up _ </proc/uptime
    echo "$((10#${up/./}))"
}

# wait_until TIMEOUT CMD...: poll CMD every 50 ms until it succeeds (0) or TIMEOUT seconds pass (1).
wait_until() {
    local timeout=$1 deadline
    shift
    deadline=$(($(uptime_cs) + $(awk -v t="$timeout" 'BEGIN { printf "%d", t * 100 }')))
    while :; do
        "$@" && return 0
        (($(uptime_cs) < deadline)) || return 1
        sleep 0.05
    done
}

# gone PID: the process has exited (or is a zombie).
gone() { ! alive "$1"; }

# spawned_exited PIDFILE: the process `spawn` recorded there has exited. By PID alone, not by
# command line: right after the fork the child is still the shell, before it execs the server,
# and a marker check would call a starting server dead.
spawned_exited() {
    local pid
    pid=$(head -n 1 "$1" 2>/dev/null | tr -dc '0-9')
    [[ -z $pid ]] || gone "$pid"
}

# exit_status PID: how a child of this shell that `spawn` started ended ("status 1", "signal 15
# (TERM)"): a server that dies of a signal says nothing in its log.
exit_status() {
    local rc=0
    wait "$1" 2>/dev/null || rc=$?
    if ((rc > 128)); then
        echo "signal $((rc - 128)) ($(kill -l "$((rc - 128))" 2>/dev/null || echo '?'))"
    else
        echo "status $rc"
    fi
}

# descendants PID: every live descendant of PID, children before grandchildren.
descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        printf '%s\n' "$child"
        descendants "$child"
    done
}

# stop_pid PIDFILE MARKER [SIGNAL] [TIMEOUT]: send SIGNAL (default TERM) to the recorded PID,
# wait up to TIMEOUT seconds (default 5), then SIGKILL it and whatever descendants it left.
# Idempotent: a missing or stale PID file is "already stopped". Removes the PID file.
stop_pid() {
    local pidfile=$1 marker=$2 sig=${3:-TERM} timeout=${4:-5} pid kids
    if ! pid=$(pid_from "$pidfile" "$marker"); then
        rm -f "$pidfile"
        say "not running"
        return 0
    fi
    kids=$(descendants "$pid" | tr '\n' ' ')
    kill "-$sig" "$pid" 2>/dev/null || true
    if ! wait_until "$timeout" gone "$pid"; then
        say "pid $pid still running ${timeout} s after SIG$sig: SIGKILL"
        kill -STOP "$pid" 2>/dev/null || true # no more forking while we list its children
        kids="$kids $(descendants "$pid" | tr '\n' ' ')"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 5 gone "$pid" || die "pid $pid survived SIGKILL"
    fi
    local kid
    for kid in $kids; do
        if alive "$kid"; then kill -KILL "$kid" 2>/dev/null || true; fi
    done
    rm -f "$pidfile"
    say "stopped (pid $pid)"
}

# report NAME PIDFILE MARKER: one status line; exit status 0 when running, 3 when not (LSB).
report() {
    local name=$1 pid
    if pid=$(pid_from "$2" "$3"); then
        printf '%s up pid %s\n' "$name" "$pid"
        return 0
    fi
    printf '%s down\n' "$name"
    return 3
}

# render TEMPLATE OUTPUT VAR...: copy TEMPLATE to OUTPUT replacing every @VAR@ by the variable's
# value; fails if a placeholder is left (a template and its role script out of step).
render() {
    local template=$1 output=$2 text var
    shift 2
    [[ -r $template ]] || die "template $template not found"
    text=$(<"$template")
    for var in "$@"; do
        text=${text//"@${var}@"/"${!var}"}
    done
    if [[ $text =~ @[A-Z][A-Z0-9_]*@ ]]; then
        die "$template: placeholder ${BASH_REMATCH[0]} has no value"
    fi
    printf '%s\n' "$text" >"$output.tmp"
    mv -f "$output.tmp" "$output"
}

# http_status URL [TIMEOUT]: the HTTP status code of a GET, "000" when nothing answers.
http_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time "${2:-1}" "$1" 2>/dev/null || true
}

# usage ACTIONS: the one-line usage error every role script gives for a wrong action.
usage() { die "usage: $ROLE_NAME.sh {$1} (parameters from environment variables)"; }
