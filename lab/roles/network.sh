#!/usr/bin/env bash
# The lab network: one network namespace per host and a switch in a namespace of its own.
#
#   network.sh start|stop|status
#
# Environment (all optional):
#   LAB_HOSTS   "NAME=ADDRESS ..."   (default "flzk=10.77.0.5 flzk2=10.77.0.6 flzk3=10.77.0.7
#                                     fln1=10.77.0.11 fln2=10.77.0.12 flcli=10.77.0.50")
#   LAB_PREFIX  prefix length of the lab subnet (default 24)
#   LAB_SWITCH  namespace holding the bridge (default flsw)
#   LAB_BRIDGE  the bridge inside LAB_SWITCH (default br0)
#   LAB_IFACE   each host's interface name (default eth0)
#
# Each host namespace gets `lo` up and LAB_IFACE, one end of a veth pair whose other end
# (p-NAME) is a port of the bridge inside LAB_SWITCH. Every command here runs with `ip -n NS`:
# the host's own namespace, interfaces and routes are never touched, and the bridge has no
# address. On Vagrant VMs the network is the VMs' own and this script is not used.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LAB_HOSTS=${LAB_HOSTS:-"flzk=10.77.0.5 flzk2=10.77.0.6 flzk3=10.77.0.7 fln1=10.77.0.11 \
fln2=10.77.0.12 flcli=10.77.0.50"}
LAB_PREFIX=${LAB_PREFIX:-24}
LAB_SWITCH=${LAB_SWITCH:-flsw}
LAB_BRIDGE=${LAB_BRIDGE:-br0}
LAB_IFACE=${LAB_IFACE:-eth0}

ns_exists() { [[ -e /run/netns/$1 ]]; }
link_exists() { ip -n "$1" link show dev "$2" >/dev/null 2>&1; }

ns_add() {
    ns_exists "$1" || ip netns add "$1"
    ip -n "$1" link set dev lo up
}

start() {
    local entry name addr port
    ns_add "$LAB_SWITCH"
    link_exists "$LAB_SWITCH" "$LAB_BRIDGE" || ip -n "$LAB_SWITCH" link add "$LAB_BRIDGE" type bridge
    ip -n "$LAB_SWITCH" link set dev "$LAB_BRIDGE" up
    for entry in $LAB_HOSTS; do
        name=${entry%%=*}
        addr=${entry#*=}
        port="p-$name"
        ns_add "$name"
        if ! link_exists "$name" "$LAB_IFACE"; then
            # Created inside the switch's namespace, the peer end straight in the host's one.
            ip -n "$LAB_SWITCH" link del dev "$port" 2>/dev/null || true
            ip -n "$LAB_SWITCH" link add "$port" type veth peer name "$LAB_IFACE" netns "$name"
        fi
        ip -n "$LAB_SWITCH" link set dev "$port" master "$LAB_BRIDGE" up
        ip -n "$name" addr replace "$addr/$LAB_PREFIX" dev "$LAB_IFACE"
        ip -n "$name" link set dev "$LAB_IFACE" up
    done
    say "up: $LAB_HOSTS on $LAB_SWITCH/$LAB_BRIDGE"
}

stop() {
    local entry name
    for entry in $LAB_HOSTS; do
        name=${entry%%=*}
        if ns_exists "$name"; then ip netns del "$name"; fi
    done
    if ns_exists "$LAB_SWITCH"; then ip netns del "$LAB_SWITCH"; fi
    say "namespaces removed"
}

status() {
    local entry name rc=0 addrs
    for entry in $LAB_SWITCH $LAB_HOSTS; do
        name=${entry%%=*}
        if ! ns_exists "$name"; then
            printf '%s absent\n' "$name"
            rc=3
        elif [[ $name == "$LAB_SWITCH" ]]; then
            printf '%s present (bridge %s, %s ports)\n' "$name" "$LAB_BRIDGE" \
                "$(ip -n "$name" -o link show master "$LAB_BRIDGE" 2>/dev/null | wc -l)"
        else
            addrs=$(ip -n "$name" -o -4 addr show dev "$LAB_IFACE" 2>/dev/null \
                | awk '{ printf "%s ", $4 }')
            printf '%s present %s: %s%s\n' "$name" "$LAB_IFACE" "${addrs:-none }" \
                "$(ip -n "$name" -o link show dev "$LAB_IFACE" 2>/dev/null \
                | grep -q 'state UP\|,UP' && echo '(up)' || echo '(down)')"
        fi
    done
    return "$rc"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage "start|stop|status" ;;
esac
