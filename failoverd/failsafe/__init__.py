"""The failsafe channel: pledges between the two nodes, over UDP, signed with a shared secret.

DESIGN, "ZooKeeper trouble": an active that cannot complete a ZooKeeper round-trip may keep
serving while its peer has pledged, over this channel, not to take the lease before the peer's
receipt time r + ``pledge_ttl``; the active counts from its send time s < r, less
``pledge_margin``. This package is the adapter: it asks (``AskPledge``), grants only to the
epoch the core names (``SetGranting``), keeps what it promised across restarts, and reports
``Observation.pledge``, ``pledged_until`` and ``granting``. It decides nothing else.

    protocol.py  the wire format and its checks (pure), the replay guard
    secret.py    the shared secret, read once at start
    store.py     the promise kept under store_dir, dated by boot id
    server.py    the passive's end: grant, persist, answer
    client.py    the active's end: one request, one bounded wait
    channel.py   both ends for the daemon, the background asker, the observation
    stats.py     counts for the metrics
"""

from failoverd.failsafe.channel import FailsafeChannel
from failoverd.failsafe.client import AskOutcome, PledgeClient
from failoverd.failsafe.errors import FailsafeError
from failoverd.failsafe.protocol import MAX_DATAGRAM, Kind, Message, Refused, ReplayGuard
from failoverd.failsafe.secret import Secret, read_secret
from failoverd.failsafe.server import PledgeServer
from failoverd.failsafe.stats import ASK_RESULTS, FailsafeStats
from failoverd.failsafe.store import PromiseStore, StoredPromise, read_boot_id, restored_until

__all__ = [
    "ASK_RESULTS",
    "MAX_DATAGRAM",
    "AskOutcome",
    "FailsafeChannel",
    "FailsafeError",
    "FailsafeStats",
    "Kind",
    "Message",
    "PledgeClient",
    "PledgeServer",
    "PromiseStore",
    "Refused",
    "ReplayGuard",
    "Secret",
    "StoredPromise",
    "read_boot_id",
    "read_secret",
    "restored_until",
]
