"""The service IP over netlink (pyroute2). For now: the start-up check that the configured
interface exists and carries an address in the VIP's prefix, which only the running node can
verify. Adding and removing the address arrive with the lab."""

from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from failoverd.config import VipConfig


class VipError(Exception):
    """The VIP's interface cannot serve it."""


def verify_interface(vip: VipConfig) -> None:
    """Raise VipError unless ``vip.interface`` exists with an address in the VIP's network."""
    network = vip.address.network
    try:
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=vip.interface)
            if not index:
                raise VipError(f"interface {vip.interface!r} does not exist")
            found = []
            for msg in ipr.get_addr(index=index[0]):
                addr = msg.get_attr("IFA_ADDRESS")
                if addr is None:
                    continue
                found.append(f"{addr}/{msg['prefixlen']}")
                if ipaddress.ip_address(addr) in network and str(addr) != str(vip.address.ip):
                    return
    except NetlinkError as e:
        raise VipError(f"cannot read interface {vip.interface!r}: {e}") from e
    have = ", ".join(found) or "no addresses"
    raise VipError(
        f"interface {vip.interface!r} has no address in {network} (has {have}): "
        "the VIP would not be reachable on its subnet"
    )
