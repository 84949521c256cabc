"""The pure judgements of check-config's node-side checks (failoverd/preflight.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from failoverd.config import VipConfig
from failoverd.preflight import (
    data_dir_problem,
    known_hosts_name,
    missing_capabilities,
    unprotected,
    vip_network_problem,
)

KEY = Path("/etc/failoverd/id_ed25519")


def vip(address: str, interface: str = "eth0") -> VipConfig:
    return VipConfig(ipaddress.ip_interface(address), interface)


def addrs(*texts: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    return [ipaddress.ip_interface(t) for t in texts]


def test_secret_files_only_for_their_owner() -> None:
    assert unprotected(KEY, 0o100600) is None
    assert unprotected(KEY, 0o100400) is None
    for mode in (0o100644, 0o100640, 0o100604, 0o100620, 0o100602, 0o100660):
        text = unprotected(KEY, mode)
        assert text is not None, oct(mode)
        assert text.startswith("UNPROTECTED: ")
        assert f"mode {mode & 0o777:04o}" in text
        assert text.endswith(f"chmod 600 {KEY}")


def test_known_hosts_names_the_port_unless_22() -> None:
    assert known_hosts_name("192.0.2.11", 22) == "192.0.2.11"
    assert known_hosts_name("192.0.2.11", 2222) == "[192.0.2.11]:2222"


def test_vip_inside_a_network_of_its_interface() -> None:
    assert vip_network_problem(vip("192.0.2.100/24"), addrs("192.0.2.11/24")) is None
    # Several addresses: one in the VIP's network is enough.
    assert vip_network_problem(vip("192.0.2.100/24"), addrs("10.0.0.1/8", "192.0.2.11/24")) is None


def test_vip_with_another_prefix_says_which() -> None:
    text = vip_network_problem(vip("192.0.2.100/16"), addrs("192.0.2.11/24"))
    assert text == (
        "192.0.2.100/16 has prefix /16, but eth0's network is 192.0.2.0/24 (192.0.2.11/24): "
        "write 192.0.2.100/24"
    )


def test_vip_outside_every_network() -> None:
    text = vip_network_problem(vip("198.51.100.7/24"), addrs("192.0.2.11/24", "fe80::1/64"))
    assert text == "198.51.100.7/24 is outside every network of eth0 (it has 192.0.2.11/24)"
    # The VIP itself on the interface (the active holds it) is not a network of the interface.
    text = vip_network_problem(vip("192.0.2.100/24"), addrs("192.0.2.100/24"))
    assert (
        text == "192.0.2.100/24 is outside every network of eth0 (it has no address of its family)"
    )


def test_data_dir_owned_by_the_service_user_and_closed() -> None:
    assert data_dir_problem(0o40700, "postgres", "postgres") is None
    assert data_dir_problem(0o40750, "postgres", "postgres") is None
    assert data_dir_problem(0o40755, "root", "postgres") == (
        "owned by root, not by postgres.service_user 'postgres'; mode 0755, not 0700 or 0750"
    )


def test_missing_capabilities_by_bit() -> None:
    need = [(12, "CAP_NET_ADMIN"), (5, "CAP_KILL")]
    assert missing_capabilities(0x1FFFFFFFFFF, need) == []
    assert missing_capabilities(1 << 5, need) == ["CAP_NET_ADMIN"]
    assert missing_capabilities(0, need) == ["CAP_NET_ADMIN", "CAP_KILL"]
