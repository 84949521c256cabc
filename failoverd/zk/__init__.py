"""ZooKeeper adapter (kazoo): the lease, the epoch, member records, requests and history.

It decides nothing: it does I/O and reports what it saw as the core's types (``ZkStatus``,
``ClusterView``). Everything kazoo raises is turned into a ``LeaseError`` at this edge.

Layout under the cluster's chroot (``/failoverd/<cluster>``; paths are prefixed here rather than
with kazoo's chroot, so that the chroot node itself can be created with its ACL)::

    lease          ephemeral  {"node", "epoch", "since"}
    epoch          persistent ASCII integer, +1 on every acquisition
    last_leader    persistent {"node", "epoch", "final_lsn", "clean", "left_serving",
                   "timeline"} (empty: none yet)
    members/<node> ephemeral  a MemberStatus (without ``age``)
    switchover     persistent {"target", "from_epoch", "requested_by", "deadline", "force"}
    paused         persistent, present while in maintenance
    history/event- persistent sequential records
    position       persistent {"node", "epoch", "lsn", "timeline", "written_at"}: the active's
                   flushed LSN (empty: none yet); written only under the epoch it names
    rejoin/<node>  persistent {"node", "reclone", "requested_by", "requested_at"}: an operator
                   asks the node to rejoin; deleted by the node once it acted on it
    sync           persistent {"standby", "epoch", "written_at"}: the standby holding every
                   commit the active of ``epoch`` acknowledged, or null (empty: never written);
                   written only by the session holding the lease of that epoch

Modules, one concern each (Patroni's split: the snapshot types apart from the store adapter):

    errors     the exceptions callers see
    records    JSON codecs, strict on types
    session    the kazoo client, negotiated timeout, connection state, listeners, and the
               liveness round-trip (a sync, which only the leader answers)
    fourletter four-letter words asked of each server: conf (timing), cons (negotiated timeout)
    view       the watches that build the immutable ``ClusterView``
    layout     the fixed nodes and the chroot's ACL
    lease      acquire and release (one transaction each), the epoch
    members    this node's member record: claim and publish
    position   the active's persisted WAL position
    sync       the sync record: who holds every acknowledged commit
    requests   pause, switchover and rejoin
    history    the event log
    cluster    ``ZkCluster``, composing the above: the one class callers use
"""

from __future__ import annotations

from failoverd.zk.cluster import ZkCluster
from failoverd.zk.errors import (
    DuplicateNode,
    LeaseConflict,
    LeaseError,
    MalformedRecord,
    ZkOperationFailed,
    ZkUnreachable,
)
from failoverd.zk.records import (
    MALFORMED_LEASE_NODE,
    UNKNOWN_EPOCH,
    epoch_from_bytes,
    epoch_to_bytes,
    history_to_json,
    last_leader_from_json,
    last_leader_to_json,
    lease_from_json,
    lease_to_json,
    member_from_json,
    member_to_json,
    position_from_json,
    position_to_json,
    rejoin_from_json,
    rejoin_to_json,
    switchover_from_json,
    switchover_to_json,
    sync_from_json,
    sync_to_json,
)

__all__ = [
    "MALFORMED_LEASE_NODE",
    "UNKNOWN_EPOCH",
    "DuplicateNode",
    "LeaseConflict",
    "LeaseError",
    "MalformedRecord",
    "ZkCluster",
    "ZkOperationFailed",
    "ZkUnreachable",
    "epoch_from_bytes",
    "epoch_to_bytes",
    "history_to_json",
    "last_leader_from_json",
    "last_leader_to_json",
    "lease_from_json",
    "lease_to_json",
    "member_from_json",
    "member_to_json",
    "position_from_json",
    "position_to_json",
    "rejoin_from_json",
    "rejoin_to_json",
    "switchover_from_json",
    "switchover_to_json",
    "sync_from_json",
    "sync_to_json",
]
