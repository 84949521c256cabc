"""A ZooKeeper client in a child process, so tests can freeze (SIGSTOP) or kill it by PID.

usage: lease_child.py HOSTS CHROOT NODE SESSION_TIMEOUT MODE
  MODE lease:  acquire the lease, print "EPOCH <n>"
  MODE member: claim members/NODE, print "CLAIMED"
Prints "READY <session id> <negotiated timeout>" once connected. Afterwards it makes a
round-trip every 50 ms, like a daemon's loop, so its session was touched just before any
signal; it exits by itself after 120 s at the latest.
"""

from __future__ import annotations

import sys
import time

from failoverd.core import MemberStatus
from failoverd.zk import ZkCluster


def main(argv: list[str]) -> int:
    hosts, chroot, node, session_timeout, mode = argv
    cluster = ZkCluster([hosts], chroot, node, float(session_timeout))
    cluster.start(timeout=5.0)
    cluster.ensure_layout()
    view = cluster.wait_view(5.0)
    print(f"READY {cluster.session_id:#x} {cluster.negotiated_timeout}", flush=True)
    if mode == "lease":
        print(f"EPOCH {cluster.acquire(view.epoch)}", flush=True)
    elif mode == "member":
        cluster.claim_member(MemberStatus(node, "passive", 0, False, True, "child"), wait=0.0)
        print("CLAIMED", flush=True)
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    for _ in range(2400):  # 120 s at most
        cluster.roundtrip(0.5)
        time.sleep(0.05)
    cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
