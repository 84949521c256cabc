"""Managed synchronous replication on the active: whom PostgreSQL waits for, and what the
``sync`` record says.

The invariant: **the standby named in ``sync`` has every commit the primary acknowledged.** A
takeover after an expired lease relies on it (``policy.sync_refusal``), so the two are only ever
changed in an order that keeps it:

* naming: ``synchronous_standby_names`` first, then, once ``pg_stat_replication`` shows the
  standby ``sync`` and streaming, the record;
* dropping (``sync`` mode, a standby that left commits waiting ``sync_drop_after``): the record
  to ``{standby: null}`` first, then clearing the names, so the waiting commits go through;
* ``strict`` never drops: writes wait until the standby is back;
* a record naming a standby PostgreSQL does not wait for is cleared before anything else.

One step at a time: each call emits at most one sequencing action (``SetSyncStandby`` or
``RecordSync``) and the next call sees its effect in the observation.
"""

from __future__ import annotations

from failoverd.core import context, policy
from failoverd.core.model import (
    DatabaseStatus,
    DbRole,
    RecordEvent,
    RecordSync,
    ReplicationMode,
    SetSyncStandby,
    StandbyStatus,
)

WAITING_COMMITS = ("on", "remote_apply")
"""synchronous_commit values under which an acknowledged commit is flushed on the standby."""


def start_names(st: context.Ctx) -> tuple[str, ...]:
    """What a newly promoted primary waits for from its first commit: strict never acknowledges
    a commit without the peer; sync starts without a standby and names it once it streams."""
    return (st.s.peer,) if st.s.replication is ReplicationMode.STRICT else ()


def waits_for(db: DatabaseStatus, name: str) -> bool:
    """Does this primary hold every commit until ``name`` has flushed it?"""
    names = db.sync_standby_names or ()
    return (name in names or "*" in names) and db.synchronous_commit in WAITING_COMMITS


def manage(st: context.Ctx) -> bool:
    """Take the next step towards the wanted synchronous state; True when one was emitted."""
    db = st.obs.database
    c = st.cluster
    if (
        c is None
        or st.state.pending is not None
        or not st.managed_db()
        or db.role is not DbRole.PRIMARY
        or db.sync_standby_names is None
    ):
        return False
    retry = st.state.retry_after
    if retry is not None and st.obs.now < retry:
        return False
    epoch, peer = st.state.epoch, st.s.peer
    record = c.sync
    named = record.standby if record is not None and record.epoch == epoch else None
    row = db.standby(peer)
    waiting = waits_for(db, peer)
    _track_waiting(st, db, row, waiting)

    written = st.state.sync_written
    # What the record may say: the view, or a write of ours that may have landed unseen.
    may_name = named or (written[0] if written is not None and written[1] == epoch else None)
    if may_name is not None and (may_name != peer or not waiting):
        reason = st.decide(
            "sync_reset",
            f"the sync record may name {may_name} but PostgreSQL does not wait for it: "
            "clearing the record first",
        )
        st.set(sync_written=(None, epoch))
        st.emit(RecordSync, reason, standby=None, epoch=epoch)
        return True
    if record is not None and record.epoch < epoch and record.standby not in (None, st.s.node):
        # Normally cleared before the takeover served (promoting); a restart may skip that.
        reason = st.decide(
            "sync_reset",
            f"the sync record still names {record.standby} for epoch {record.epoch}: "
            f"clearing it for epoch {epoch}",
        )
        st.set(sync_written=(None, epoch))
        st.emit(RecordSync, reason, standby=None, epoch=epoch)
        return True

    want, why = _wanted(st, db, row, waiting)
    have = tuple(db.sync_standby_names or ())
    if (want == have and db.synchronous_commit in WAITING_COMMITS) or want == () == have:
        if named is None and peer in want and _is_sync(row):
            reason = st.decide(
                "sync_named",
                f"{peer} is the synchronous standby: every acknowledged commit is on it",
            )
            st.set(sync_dropped_lsn=None, sync_written=(peer, epoch))
            st.emit(RecordSync, reason, standby=peer, epoch=epoch)
            return True
        return False
    if may_name == peer and peer not in want:
        reason = st.decide(
            "sync_dropped",
            f"dropping {peer} as synchronous standby ({why}): the record first, then "
            "PostgreSQL, so that the waiting commits go through",
        )
        st.set(sync_dropped_lsn=db.lsn, sync_written=(None, epoch))
        st.emit(RecordSync, reason, standby=None, epoch=epoch)
        st.emit(RecordEvent, reason, kind="sync_dropped", epoch=epoch, from_node=st.s.node,
                to_node=peer)  # fmt: skip
        return True
    shown = ", ".join(want) if want else "no standby"
    reason = st.decide("sync_setting", f"synchronous_standby_names: {shown} ({why})")
    st.emit(SetSyncStandby, reason, names=want)
    return True


def on_result(st: context.Ctx, done: context.Done) -> None:
    """A failed step is tried again after fence_retry_after; nothing else changes."""
    if done.result.ok:
        return
    st.set(retry_after=st.obs.now + st.s.fence_retry_after)
    st.decide(
        "sync_failed",
        f"{done.kind} failed ({done.result.detail}); trying again in {st.s.fence_retry_after:g} s",
    )


def describe(st: context.Ctx) -> str:
    """The synchronous state in a few words for the active's status line ("" when async)."""
    if st.s.replication is ReplicationMode.ASYNC:
        return ""
    c = st.cluster
    record = None if c is None else c.sync
    if record is not None and record.epoch == st.state.epoch and record.standby is not None:
        return f", synchronous standby {record.standby}"
    written = st.state.sync_written
    if written is not None and written[1] == st.state.epoch and written[0] is not None:
        # PostgreSQL waits for it already; the record is on its way (the view shows it next).
        # Said so, or the log's one "active" line would deny the standby it has.
        return f", synchronous standby {written[0]} (being recorded)"
    return f", no synchronous standby ({st.s.replication.value} mode)"


def _wanted(
    st: context.Ctx, db: DatabaseStatus, row: StandbyStatus | None, waiting: bool
) -> tuple[tuple[str, ...], str]:
    peer = st.s.peer
    mode = st.s.replication
    if mode is ReplicationMode.ASYNC:
        return (), "asynchronous mode"
    if mode is ReplicationMode.STRICT:
        return (peer,), "strict mode: never acknowledged without the standby"
    since = st.state.sync_waiting
    if waiting and since is not None and st.obs.now - since[1] >= st.s.sync_drop_after:
        return (), (
            f"commits have waited {st.obs.now - since[1]:.1f} s for {peer} "
            f"(sync_drop_after {st.s.sync_drop_after:g} s)"
        )
    if waiting:
        return (peer,), f"{peer} confirms"
    if row is None or row.state != "streaming":
        state = "not connected" if row is None else row.state
        return (), f"{peer} is {state}"
    dropped = st.state.sync_dropped_lsn
    if dropped is not None and (row.flush_lsn is None or row.flush_lsn < dropped):
        return (), (
            f"{peer} was dropped at {policy.format_lsn(dropped)} and has flushed only "
            f"{'nothing' if row.flush_lsn is None else policy.format_lsn(row.flush_lsn)}"
        )
    return (peer,), f"{peer} streams"


def _is_sync(row: StandbyStatus | None) -> bool:
    return row is not None and row.state == "streaming" and row.sync_state == "sync"


def _track_waiting(
    st: context.Ctx, db: DatabaseStatus, row: StandbyStatus | None, waiting: bool
) -> None:
    """How long have commits waited on the standby? The write position it had not flushed when
    first seen behind, and since when; reset once it flushes that far. Measured on the primary
    alone (no clocks compared), and it counts an idle primary's gone standby too."""
    if not waiting or db.lsn is None:
        st.set(sync_waiting=None)
        return
    flushed = None if row is None or row.state != "streaming" else row.flush_lsn
    if flushed is not None and flushed >= db.lsn:
        st.set(sync_waiting=None)
        return
    current = st.state.sync_waiting
    if current is None or (flushed is not None and flushed >= current[0]):
        st.set(sync_waiting=(db.lsn, st.obs.now))
