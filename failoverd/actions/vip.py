"""The service IP over netlink (pyroute2), announced with gratuitous ARP in the background.

Adding refuses to start past the action's ``not_after``: a node that cannot prove its lease is
still alive must not bring the address up. Removing is idempotent, so a self-fence or a peer's
``fence-self`` can run it on a node in any state.
"""

from __future__ import annotations

import errno
import ipaddress
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import NamedTuple

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from failoverd.clock import boottime
from failoverd.config import VipConfig


class VipError(Exception):
    """The VIP's interface cannot serve it."""


def _index(ipr: IPRoute, interface: str) -> int:
    found = ipr.link_lookup(ifname=interface)
    if not found:
        raise VipError(f"interface {interface!r} does not exist")
    return int(found[0])


def verify_interface(vip: VipConfig) -> None:
    """Raise VipError unless ``vip.interface`` exists with an address in the VIP's network."""
    network = vip.address.network
    try:
        with IPRoute() as ipr:
            index = _index(ipr, vip.interface)
            found = []
            for msg in ipr.get_addr(index=index):
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


def interface_addresses(interface: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Every address on ``interface`` with its prefix; VipError when it does not exist."""
    try:
        with IPRoute() as ipr:
            index = _index(ipr, interface)
            return [
                ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
                for msg in ipr.get_addr(index=index)
                if msg.get_attr("IFA_ADDRESS") is not None
            ]
    except NetlinkError as e:
        raise VipError(f"cannot read interface {interface!r}: {e}") from e


def local_addresses() -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Every address on every interface of this host (this network namespace), with prefix."""
    try:
        with IPRoute() as ipr:
            return [
                ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
                for msg in ipr.get_addr()
                if msg.get_attr("IFA_ADDRESS") is not None
            ]
    except NetlinkError as e:
        raise VipError(f"cannot read this host's addresses: {e}") from e


def is_local(address: str) -> bool:
    """Does this host answer on ``address``: one of its addresses, or inside a loopback
    network (all of 127.0.0.0/8 is local)? A host name is not judged (False)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(a.ip == ip or (a.ip.is_loopback and ip in a.network) for a in local_addresses())


def has_vip(vip: VipConfig) -> bool:
    """Is the VIP configured on its interface right now? (No interface: no VIP.)"""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=vip.interface)
        if not found:
            return False
        index = found[0]
        return any(
            msg.get_attr("IFA_ADDRESS") == str(vip.address.ip) for msg in ipr.get_addr(index=index)
        )


class VipResult(NamedTuple):
    ok: bool
    detail: str
    late: bool = False  # refused because not_after had passed: nothing was done


def add_vip(vip: VipConfig, not_after: float, clock: Callable[[], float] = boottime) -> VipResult:
    """Add the address unless ``not_after`` has passed; then announce it in the background."""
    late = clock() - not_after
    if late > 0:
        return VipResult(False, f"refused: {late:.3f} s past its not_after deadline", late=True)
    ip = str(vip.address.ip)
    try:
        with IPRoute() as ipr:
            index = _index(ipr, vip.interface)
            if clock() > not_after:  # the lookups took time: check again at the last moment
                return VipResult(False, "refused: not_after passed while preparing", late=True)
            try:
                ipr.addr("add", index=index, address=ip, prefixlen=vip.address.network.prefixlen)
                detail = f"added {vip.address} on {vip.interface}"
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
                detail = f"{vip.address} already on {vip.interface}"
    except (NetlinkError, VipError) as e:
        return VipResult(False, f"cannot add {vip.address} on {vip.interface}: {e}")
    announced = announce(vip)
    return VipResult(True, f"{detail}; {announced}")


def remove_vip(vip: VipConfig) -> tuple[bool, str]:
    """Remove the address; absent already is success."""
    ip = str(vip.address.ip)
    try:
        with IPRoute() as ipr:
            index = _index(ipr, vip.interface)
            try:
                ipr.addr("del", index=index, address=ip, prefixlen=vip.address.network.prefixlen)
            except NetlinkError as e:
                if e.code == errno.EADDRNOTAVAIL:
                    return True, f"{vip.address} was not on {vip.interface}"
                raise
    except VipError as e:
        return True, f"{e}: nothing to remove"
    except NetlinkError as e:
        return False, f"cannot remove {vip.address} from {vip.interface}: {e}"
    return True, f"removed {vip.address} from {vip.interface}"


def announce(vip: VipConfig) -> str:
    """Gratuitous ARP so neighbours switch at once; in the background, since arping takes
    about a second per packet and the address already serves."""
    if vip.arp_count <= 0 or vip.address.version != 4:
        return "no gratuitous ARP"
    arping = shutil.which("arping")
    if arping is None:
        return "arping not installed: no gratuitous ARP"
    argv = [arping, "-U", "-c", str(vip.arp_count), "-I", vip.interface, str(vip.address.ip)]
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    except OSError as e:
        return f"gratuitous ARP failed to start: {e}"
    # Reap it when done, so no zombie is left behind.
    threading.Thread(target=proc.wait, name="arping-reaper", daemon=True).start()
    return f"gratuitous ARP x{vip.arp_count} in the background (pid {proc.pid})"
