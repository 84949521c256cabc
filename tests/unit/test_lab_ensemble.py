"""lab/ensemble.py's reading of ZooKeeper's four-letter answers: which server leads, and which
server a node's session is connected to. The samples are real ZooKeeper 3.8 answers (a
three-server ensemble, two kazoo clients)."""

from __future__ import annotations

from lab.ensemble import (
    DOWN,
    NOT_SERVING,
    Connection,
    connect_string,
    ephemeral_owners,
    parse_cons,
    parse_mode,
    server_of_session,
    server_spec,
)
from lab.zookeeper import EPHEMERAL_RANGE, PORTS_BELOW_EPHEMERAL, free_port

SRVR_FOLLOWER = """Zookeeper version: 3.8.0-${mvngit.commit.id}, built on 2024-12-29 17:54 UTC
Latency min/avg/max: 0/6.4545/18
Received: 17
Sent: 16
Connections: 2
Outstanding: 0
Zxid: 0x100000009
Mode: follower
Node count: 11
"""

CONS_1 = """ /127.0.0.1:46176[0](queued=0,recved=1,sent=0)
 /10.77.0.11:46160[1](queued=0,recved=11,sent=11,sid=0x1000149c5630000,lop=CREA,\
est=1796094826094,to=2000,lcxid=0xa,lzxid=0x100000007,lresp=21612588,llat=5,minlat=0,avglat=6,\
maxlat=18)

"""
CONS_2 = """ /127.0.0.1:52268[0](queued=0,recved=1,sent=0)
 /10.77.0.12:52258[1](queued=0,recved=2,sent=2,sid=0x2000149c5670000,lop=CREA,\
est=1796094826195,to=2000,lcxid=0x1,lzxid=0x100000009,lresp=21612627,llat=17,minlat=0,avglat=12,\
maxlat=17)

"""
CONS_3 = """ /127.0.0.1:52570[0](queued=0,recved=1,sent=0)

"""

DUMP = """SessionTracker dump:
Global Sessions(2):
0x1000149c5630000\t2000ms
0x2000149c5670000\t2000ms
ephemeral nodes dump:
Sessions with Ephemerals (2):
0x1000149c5630000:
\t/failoverd/lab/lease
\t/failoverd/lab/members/fln1
0x2000149c5670000:
\t/failoverd/lab/members/fln2
Connections dump:
Connections Sets (2)/(2):
1 expire at Tue Dec 01 03:13:53 UTC 2026:
\tip: /127.0.0.1:46160 sessionId: 0x1000149c5630000
1 expire at Tue Dec 01 03:14:03 UTC 2026:
\tip: /127.0.0.1:46188 sessionId: 0x0
"""


def test_the_mode_of_a_server() -> None:
    assert parse_mode(SRVR_FOLLOWER) == "follower"
    assert parse_mode(SRVR_FOLLOWER.replace("follower", "leader")) == "leader"
    assert parse_mode("Mode: standalone\n") == "standalone"
    assert parse_mode("This ZooKeeper instance is not currently serving requests\n") == NOT_SERVING
    assert parse_mode("") == DOWN


def test_cons_lists_each_connection_with_its_session() -> None:
    four_letter, daemon = parse_cons(CONS_1)
    assert four_letter == Connection("127.0.0.1", 46176, None, None, None)
    assert daemon == Connection("10.77.0.11", 46160, 0x1000149C5630000, 1796094826094, 2000)
    assert parse_cons("") == []
    assert parse_cons("This ZooKeeper instance is not currently serving requests\n") == []


def test_dump_names_the_owner_of_each_ephemeral_node() -> None:
    assert ephemeral_owners(DUMP) == {
        "/failoverd/lab/lease": 0x1000149C5630000,
        "/failoverd/lab/members/fln1": 0x1000149C5630000,
        "/failoverd/lab/members/fln2": 0x2000149C5670000,
    }
    assert ephemeral_owners("") == {}
    none = "ephemeral nodes dump:\nSessions with Ephemerals (0):\nConnections dump:\n"
    assert ephemeral_owners(none) == {}


def test_a_session_is_found_on_the_server_it_is_connected_to() -> None:
    cons = {"flzk": CONS_1, "flzk2": CONS_2, "flzk3": CONS_3}
    assert server_of_session(0x1000149C5630000, cons) == "flzk"
    assert server_of_session(0x2000149C5670000, cons) == "flzk2"
    assert server_of_session(0x3000000000000000, cons) is None


def test_a_session_a_server_still_lists_after_it_moved_is_where_it_connected_last() -> None:
    """A server cut off from its client has not noticed yet: the newer connection wins."""
    moved = CONS_1.replace("est=1796094826094", "est=1796094999999").replace("flzk", "")
    cons = {"flzk": CONS_1, "flzk3": moved}
    assert server_of_session(0x1000149C5630000, cons) == "flzk3"


def test_the_daemons_and_the_role_script_are_given_every_server() -> None:
    assert connect_string() == "10.77.0.5:2181,10.77.0.6:2181,10.77.0.7:2181"
    assert server_spec() == "1=10.77.0.5 2=10.77.0.6 3=10.77.0.7"


def test_free_ports_are_drawn_below_the_kernels_ephemeral_range() -> None:
    """The kernel hands its own picks out again at once (to the next connection or port-0
    bind): a server started a moment later on one could find it taken."""
    low = int(EPHEMERAL_RANGE.read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert all(max(1024, low - PORTS_BELOW_EPHEMERAL) <= p < low for p in ports), ports
    assert len(set(ports)) > 1  # drawn, not one fixed port
