#!/usr/bin/env bash
# Vagrant provisioning, "up" of a node VM (every `vagrant up`/`reload`): the node's components by
# the lab's role scripts, then failoverd under systemd. Idempotent: what runs is left running.
#
# Environment (the Vagrantfile sets them):
#   NODE, ADDR            this node's name and address on the cluster network (required)
#   PEER, PEER_ADDR       the other node's (required)
#   LAB_DIR               node directory, as in the lab (required)
#   KEYS_DIR              SSH keys made on the host: $KEYS_DIR/<node>/{ssh_host_ed25519_key,
#                         id_ed25519}[.pub], this node's private ones and the peer's public ones
#                         (required)
#   INITIAL_PRIMARY       the node whose PostgreSQL starts as the primary (default fln1)
#   ZK_HOSTS, VIP, SSH_PORT, TRUST_NET and the rest of lab/roles/*.sh's variables pass through
#   REPO                  the project, synced by Vagrant (default /vagrant)
#   VENV                  failoverd's virtual environment (default /opt/failoverd)
#
# Order, as lab/cluster.py's `up`: PostgreSQL (the replica copies the primary, so fln2 comes
# after fln1), the app, Squid, sshd (forced command `failoverd fence-self`), the daemon's
# configuration (lab/roles/failoverd.sh config, checked by `failoverd check-config`), then
# `systemctl start failoverd`, which returns once the daemon has sent READY=1. PostgreSQL is
# started here only until the node's failoverd has run once: from then on the daemon owns it.
# The unit is the one in systemd/; what is particular to the VM (its configuration file, the lab
# directory the daemon writes PostgreSQL's files in) goes in a drop-in.
set -euo pipefail

: "${NODE:?}" "${ADDR:?}" "${PEER:?}" "${PEER_ADDR:?}" "${LAB_DIR:?}" "${KEYS_DIR:?}"
INITIAL_PRIMARY=${INITIAL_PRIMARY:-fln1}
REPO=${REPO:-/vagrant}
VENV=${VENV:-/opt/failoverd}
CONFIG=$LAB_DIR/failoverd.toml
OWNED_MARKER=$LAB_DIR/daemon-owns-postgres
DROP_IN=/etc/systemd/system/failoverd.service.d/vagrant.conf
export NODE ADDR PEER PEER_ADDR LAB_DIR REPO VENV

say() { printf 'up (%s): %s\n' "$NODE" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
role() { bash "$REPO/lab/roles/$1.sh" "$2"; }

# The interface that carries ADDR: the VIP goes next to it.
VIP_IFACE=$(ip -o -4 addr show | awk -v addr="$ADDR" '{ split($4, a, "/"); if (a[1] == addr) { print $2; exit } }')
[[ -n $VIP_IFACE ]] || die "no interface has the address $ADDR"
export VIP_IFACE

install -d -m 0755 "$(dirname "$LAB_DIR")" "$LAB_DIR"

install_keys() {
    local key
    install -d -m 0700 "$LAB_DIR/ssh"
    for key in ssh_host_ed25519_key id_ed25519; do
        [[ -r $KEYS_DIR/$NODE/$key ]] || die "$KEYS_DIR/$NODE/$key missing (made on the host by the Vagrantfile)"
        install -m 0600 "$KEYS_DIR/$NODE/$key" "$LAB_DIR/ssh/$key"
        install -m 0644 "$KEYS_DIR/$NODE/$key.pub" "$LAB_DIR/ssh/$key.pub"
    done
}

start_postgres() {
    if [[ -e $OWNED_MARKER ]]; then
        say "postgres left to failoverd, which owns it since its first start"
        return 0
    fi
    if [[ $NODE == "$INITIAL_PRIMARY" ]]; then
        PG_ROLE=primary role postgres start
    else
        PG_ROLE=replica role postgres start
    fi
}

metrics_enabled() {
    if "$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("failoverd.metrics") is None)'; then
        echo true
    else
        echo false
    fi
}

install_drop_in() {
    local text
    text="# Written by vagrant/node-up.sh: the lab's configuration and directory for $NODE.
[Service]
Environment=FAILOVERD_CONFIG=$CONFIG
ReadWritePaths=$LAB_DIR"
    mkdir -p "$(dirname "$DROP_IN")"
    if [[ ! -f $DROP_IN || $(<"$DROP_IN") != "$text" ]]; then
        printf '%s\n' "$text" >"$DROP_IN"
        systemctl daemon-reload
    fi
}

start_failoverd() {
    touch "$OWNED_MARKER"
    systemctl reset-failed failoverd.service 2>/dev/null || true
    systemctl enable --quiet failoverd.service
    # Type=notify: this returns when the daemon has judged its first full observation.
    if ! systemctl start failoverd.service; then
        journalctl -u failoverd.service -n 40 --no-pager >&2 || true
        die "failoverd did not start"
    fi
    say "failoverd: $(systemctl show -P StatusText failoverd.service)"
}

# wait_for_lease: on the initial primary's node, like the lab's bootstrap, until a node holds
# the lease, so that the peer, provisioned next, finds an active node.
wait_for_lease() {
    local i out holder=""
    for i in $(seq 1 100); do
        out=$("$VENV/bin/failoverctl" -c "$CONFIG" status 2>&1 || true)
        holder=$(sed -n 's/^active: \([^ ]*\).*/\1/p' <<<"$out" | head -n 1)
        if [[ -n $holder && $holder != none ]]; then
            say "lease held by $holder"
            return 0
        fi
        sleep 0.2
    done
    say "no lease holder after $((i / 5)) s (provisioning goes on); failoverctl status says:"
    printf '%s\n' "$out" >&2
}

install_keys
start_postgres
role app start
role squid start
PEER_CLIENT_KEY=$KEYS_DIR/$PEER/id_ed25519.pub PEER_HOST_KEY=$KEYS_DIR/$PEER/ssh_host_ed25519_key.pub \
    role sshd start
METRICS_ENABLED=$(metrics_enabled) role failoverd config
install_drop_in
start_failoverd
if [[ $NODE == "$INITIAL_PRIMARY" ]]; then
    wait_for_lease
fi
say "done"
