"""The decision core: ``step(settings, state, observation) -> Step(state, actions, reason)``.

Theory of operation
-------------------
The core is pure: no I/O, no clock, no randomness, no logging. Time arrives as ``Observation.now``
(CLOCK_BOOTTIME seconds) and wall time as ``Observation.wall_now`` (only to compare deadlines
written by other hosts). Adapters do what the returned ``Action`` values say and report back as
``ActionResult`` values in a later observation; a failure is data, never an exception here.

At most one sequencing action (acquire, fence, promote, VIP, stop, release, start replica) is in
flight at a time (``State.pending``); publishing, history records and hooks are fire-and-forget.

Invariants kept, and why:

1. Leased actions. ``Promote`` and ``AddVip`` are only emitted while the observed lease is ours
   with the epoch we acquired, and carry ``not_after`` = send time of the last successful
   ZooKeeper round-trip + ``self_fence_after``; their adapters refuse to start later. A decision
   taken on a view that may already be stale can therefore never take effect after the point
   where the node would have self-fenced.
2. Self-fence. A node that may hold the VIP or the writable primary (active, promoting,
   demoting; paused from one of those or seen serving; a new process seen serving, after
   ``self_fence_after`` to make its first round-trip) emits ``RemoveVip`` (then
   ``StopDatabase``) in the very step in which ``self_fence_after`` has passed since that send
   time. ``self_fence_after`` < session timeout, so it is down before its session can expire and
   before the peer may take the lease. Time is counted from the send time, not from kazoo's
   SUSPENDED, which can arrive as late as 2/3 of the session timeout. Pause never suspends it:
   a paused active cut off from ZooKeeper and its peer was once seen serving beside a peer that
   took over after the pause ended. The daemon does not exit with a fence's actions queued (the
   runner would cancel them), and a demotion releases the lease only once the VIP removal and
   the database stop have succeeded.
3. Safe takeover. A free lease is never taken while a direct probe says the peer's PostgreSQL
   answers as a primary, unless a fence reached the peer after that probe. A lease that vanished
   without a clean ``last_leader`` record for its epoch expired: ``FencePeer`` is attempted before
   ``Promote``; a fence that reached the peer but failed blocks the promotion (the lease is given
   back with ``clean=False`` so that the next holder fences too).
4. Epochs only grow; a node promotes at most once per epoch (``State.promoted_epoch``).
5. Paused means paused: while the cluster's ``paused`` flag is set, only ``Publish`` is emitted,
   but for a self-fence (2.) and, when a serving node's daemon stops while paused, the record
   that it is left serving (``last_leader.left_serving``). Nothing on that node would stop it
   serving if it were then cut off, so the peer takes over from it only after a fence that
   reached it; "unreachable" proves nothing about a node nobody supervises.
6. No acknowledged write is lost on a voluntary hand-over: the active removes the VIP, stops its
   primary cleanly and releases with the final LSN and its timeline; the passive takes the lease
   only once it has replayed up to that LSN on that timeline (a diverged ex-primary's higher LSN
   on another timeline holds none of it). A forced switchover never goes to a node that could
   not become a working primary.
7. Anti-flap: rise/fall live in the checks; a failing active steps down only when the peer is
   eligible and ``min_failover_interval`` has passed since the last failover; nothing prefers a
   node, so there is no automatic fail-back.

Layout
------
``model`` holds the types; ``stepper.step`` is the single entry; one module per role
(``starting``, ``passive``, ``promoting``, ``active``, ``demoting``, ``fenced``, ``paused``), as
raft has ``stepLeader``/``stepFollower``; ``context`` is the step in the making; ``policy`` holds
the pure judgements that status reporting shares.
"""

from __future__ import annotations

from failoverd.core.context import OPERATOR_NEEDED, SERVING_ROLES
from failoverd.core.model import (
    SEQUENCING,
    UNMANAGED_DB,
    AcquireLease,
    Action,
    ActionResult,
    AddVip,
    AskPledge,
    CheckStatus,
    ClearRejoinRequest,
    ClearSwitchover,
    CloneDatabase,
    ClusterView,
    DatabaseStatus,
    DbRole,
    Demotion,
    FenceOutcome,
    FencePeer,
    InspectRejoin,
    LastLeader,
    LeaseInfo,
    LocalHealth,
    MalformedMember,
    MemberStatus,
    Observation,
    PeerDb,
    PeerProbe,
    Pending,
    Pledge,
    Position,
    Promote,
    Publish,
    Reason,
    RecordEvent,
    RecordPosition,
    RecordSync,
    Rejoin,
    RejoinFacts,
    RejoinRequest,
    ReleaseLease,
    RemoveVip,
    ReplicationMode,
    RewindDatabase,
    Role,
    RunHook,
    SetGranting,
    SetSyncStandby,
    Settings,
    StandbyStatus,
    StartPrimary,
    StartReplica,
    State,
    Step,
    StopDatabase,
    SwitchoverRequest,
    SyncRecord,
    Takeover,
    ZkState,
    ZkStatus,
)
from failoverd.core.policy import (
    active_position,
    eligibility,
    fork_verdict,
    format_bytes,
    format_lsn,
    peer_vouched_eligible,
    replayed_up_to,
    roundtrip_deadline,
)
from failoverd.core.stepper import step, supervision_role

__all__ = [
    "OPERATOR_NEEDED",
    "SEQUENCING",
    "SERVING_ROLES",
    "UNMANAGED_DB",
    "AcquireLease",
    "Action",
    "ActionResult",
    "AddVip",
    "AskPledge",
    "CheckStatus",
    "ClearRejoinRequest",
    "ClearSwitchover",
    "CloneDatabase",
    "ClusterView",
    "DatabaseStatus",
    "DbRole",
    "Demotion",
    "FenceOutcome",
    "FencePeer",
    "InspectRejoin",
    "LastLeader",
    "LeaseInfo",
    "LocalHealth",
    "MalformedMember",
    "MemberStatus",
    "Observation",
    "PeerDb",
    "PeerProbe",
    "Pending",
    "Pledge",
    "Position",
    "Promote",
    "Publish",
    "Reason",
    "RecordEvent",
    "RecordPosition",
    "RecordSync",
    "Rejoin",
    "RejoinFacts",
    "RejoinRequest",
    "ReleaseLease",
    "RemoveVip",
    "ReplicationMode",
    "RewindDatabase",
    "Role",
    "RunHook",
    "SetGranting",
    "SetSyncStandby",
    "Settings",
    "StandbyStatus",
    "StartPrimary",
    "StartReplica",
    "State",
    "Step",
    "StopDatabase",
    "SwitchoverRequest",
    "SyncRecord",
    "Takeover",
    "ZkState",
    "ZkStatus",
    "active_position",
    "eligibility",
    "fork_verdict",
    "format_bytes",
    "format_lsn",
    "peer_vouched_eligible",
    "replayed_up_to",
    "roundtrip_deadline",
    "step",
    "supervision_role",
]
