#!/usr/bin/env bash
# Vagrant provisioning, "install" (first `vagrant up`, and `vagrant provision`): what a VM of the
# failoverd cluster needs before its components can start.
#
# Environment:
#   ROLE   zookeeper | node (required)
#   REPO   the project, synced by Vagrant (default /vagrant)
#   VENV   failoverd's virtual environment (default /opt/failoverd)
#
# zookeeper: the zookeeper package (its JRE) and curl (lab/roles/zookeeper.sh asks `srvr` with it).
# node: PostgreSQL 15, Squid, OpenSSH, iputils-arping, iproute2, python3-venv; the virtual
# environment $VENV built from Debian's /usr/bin/python3 with failoverd installed in it (not
# editable: the unit's ProtectSystem= and ProtectHome= must not depend on where the source is);
# systemd/failoverd.service as /etc/systemd/system/failoverd.service and its ExecStopPost
# helper as $VENV/libexec/failoverd-stop-post.
#
# Packages are installed under a temporary policy-rc.d that forbids starting services: Debian
# would otherwise start a 15/main PostgreSQL cluster on 5432, Squid on 3128 and sshd, before the
# lab's own configurations exist. The distribution's PostgreSQL cluster is dropped and Squid's
# service disabled: the role scripts run the lab's. A running failoverd is never restarted here
# (restarting the active one is a switchover): that is left to the operator.
set -euo pipefail

ROLE=${ROLE:?ROLE must be zookeeper or node}
REPO=${REPO:-/vagrant}
VENV=${VENV:-/opt/failoverd}
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

say() { printf 'install (%s): %s\n' "$ROLE" "$*" >&2; }

case $ROLE in
    zookeeper) packages=(zookeeper curl procps) ;;
    node)
        packages=(postgresql-15 postgresql-client-15 squid openssh-server openssh-client
            iputils-arping iproute2 python3-venv curl procps util-linux)
        ;;
    *)
        say "error: ROLE must be zookeeper or node, not '$ROLE'"
        exit 1
        ;;
esac

install_packages() {
    local missing=() p policy=/usr/sbin/policy-rc.d own_policy=no
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} > 0)) || return 0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        own_policy=yes
    fi
    say "installing ${missing[*]}"
    apt-get update -qq
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        [[ $own_policy == no ]] || rm -f "$policy"
        say "error: apt-get install failed"
        exit 1
    fi
    [[ $own_policy == no ]] || rm -f "$policy"
}

# quiet_distribution_services: nothing of Debian's own that would take the lab's ports.
quiet_distribution_services() {
    local unit
    for unit in "$@"; do
        systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
    done
}

install_venv() {
    local src
    if [[ ! -x $VENV/bin/python ]]; then
        say "virtual environment $VENV from /usr/bin/python3"
        /usr/bin/python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
    fi
    # Built from a copy: pip would write build/ and *.egg-info into the synced tree.
    src=$(mktemp -d)
    cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/failoverd" "$src/"
    "$VENV/bin/pip" install -q "$src"
    "$VENV/bin/pip" install -q --no-deps --force-reinstall "$src"
    rm -rf "$src"
    say "failoverd $("$VENV/bin/failoverd" --version | awk '{ print $NF }') in $VENV"
}

install_unit() {
    install -d -m 0755 "$VENV/libexec"
    install -m 0755 "$REPO/systemd/failoverd-stop-post" "$VENV/libexec/failoverd-stop-post"
    install -m 0644 "$REPO/systemd/failoverd.service" /etc/systemd/system/failoverd.service
    systemctl daemon-reload
    if systemctl is-active --quiet failoverd.service; then
        say "failoverd is running: restart it yourself to use the new code (passive node first)"
    fi
}

install_packages "${packages[@]}"
case $ROLE in
    zookeeper) quiet_distribution_services zookeeper ;;
    node)
        quiet_distribution_services squid
        if [[ -d /etc/postgresql/15/main ]]; then
            say "dropping the distribution's PostgreSQL cluster 15/main"
            pg_dropcluster --stop 15 main
        fi
        install_venv
        install_unit
        ;;
esac
say "done"
