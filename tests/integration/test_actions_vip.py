"""The VIP adapter for real: netlink inside a throwaway network namespace, never the host's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys, ipaddress
from failoverd.actions.vip import add_vip, remove_vip, has_vip, verify_interface, VipError
from failoverd.config import VipConfig
from failoverd.clock import boottime
op, address, iface, offset = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
vip = VipConfig(address=ipaddress.ip_interface(address), interface=iface, arp_count=1)
out = {}
if op == "add":
    out["ok"], out["detail"], out["late"] = add_vip(vip, boottime() + offset)
elif op == "remove":
    out["ok"], out["detail"] = remove_vip(vip)
elif op == "verify":
    try:
        verify_interface(vip)
        out["ok"], out["detail"] = True, ""
    except VipError as e:
        out["ok"], out["detail"] = False, str(e)
out["present"] = has_vip(vip) if op != "verify" else None
print(json.dumps(out))
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=10).stdout


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    name = f"flvip{os.getpid()}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        sh("ip", "-n", name, "addr", "add", "10.77.0.11/24", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "link", "set", "peer0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=10)


def run(
    ns: str, op: str, address: str = "10.77.0.100/24", iface: str = "eth0", offset: float = 5.0
) -> dict[str, object]:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", CHILD, op, address, iface, str(offset)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_add_is_idempotent_and_announced(netns: str) -> None:
    first = run(netns, "add")
    assert first["ok"] and first["present"], first
    assert "gratuitous ARP" in str(first["detail"])
    again = run(netns, "add")
    assert again["ok"] and "already" in str(again["detail"])
    assert "10.77.0.100/24" in sh("ip", "-n", netns, "addr", "show", "eth0")
    run(netns, "remove")


def test_remove_is_idempotent(netns: str) -> None:
    run(netns, "add")
    gone = run(netns, "remove")
    assert gone["ok"] and not gone["present"]
    again = run(netns, "remove")
    assert again["ok"] and "was not on" in str(again["detail"])
    missing_iface = run(netns, "remove", iface="nosuch0")
    assert missing_iface["ok"] and "nothing to remove" in str(missing_iface["detail"])


def test_add_past_not_after_is_refused_and_changes_nothing(netns: str) -> None:
    late = run(netns, "add", offset=-0.5)
    assert not late["ok"] and late["late"] and "not_after" in str(late["detail"])
    assert not late["present"]
    assert "10.77.0.100" not in sh("ip", "-n", netns, "addr", "show", "eth0")


def test_verify_interface(netns: str) -> None:
    assert run(netns, "verify")["ok"]
    wrong_net = run(netns, "verify", address="10.88.0.100/24")
    assert not wrong_net["ok"] and "no address in 10.88.0.0/24" in str(wrong_net["detail"])
    no_iface = run(netns, "verify", iface="nosuch0")
    assert not no_iface["ok"] and "does not exist" in str(no_iface["detail"])


def test_host_interfaces_untouched(netns: str) -> None:
    assert "10.77.0." not in sh("ip", "addr")
