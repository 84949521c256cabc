"""The member record: published when it changes and at least every ``publish_every``."""

from __future__ import annotations

from failoverd.core import context, policy
from failoverd.core.model import (
    DbRole,
    MemberStatus,
    Position,
    Publish,
    RecordPosition,
    Role,
    ZkState,
)


def fingerprint(m: MemberStatus) -> tuple[object, ...]:
    """What makes a record worth publishing at once; LSNs and texts ride on the heartbeat."""
    return (
        m.role,
        m.epoch,
        m.eligible,
        m.healthy,
        m.db_role,
        m.reason_code,
        tuple((c.name, c.healthy) for c in m.checks),
    )


def maybe_publish(st: context.Ctx) -> None:
    if st.obs.zk.state is not ZkState.CONNECTED:
        return
    role = st.state.role
    eligible = role is Role.PASSIVE and policy.eligibility(st.s, st.state, st.obs)[0]
    db = st.obs.database
    status = MemberStatus(
        node=st.s.node,
        role=role.value,
        epoch=st.state.epoch,
        eligible=eligible,
        healthy=st.obs.local.healthy,
        reason=st.state.reason.text,
        reason_code=st.state.reason.code,
        lsn=db.lsn,
        timeline=db.timeline,
        lsn_exact=policy.wal_end_known(db),
        db_role=db.role.value,
        checks=st.obs.local.checks,
        published_at=st.obs.wall_now,
        version=st.s.version,
    )
    last = st.state.last_published
    due = st.state.last_publish_at is None or (
        st.obs.now - st.state.last_publish_at >= st.s.publish_every
    )
    if last is None or due or fingerprint(last) != fingerprint(status):
        st.emit(Publish, st.state.reason, status=status)
        st.set(last_publish_at=st.obs.now, last_published=status)
        if role is Role.ACTIVE and db.role is DbRole.PRIMARY and db.lsn is not None:
            # Persistent, unlike the member record: after a crash of this node, or a restart
            # of the passive, it is what the passive judges its lag by.
            position = Position(st.s.node, st.state.epoch, db.lsn, db.timeline, st.obs.wall_now)
            st.emit(RecordPosition, st.state.reason, position=position)
