"""Demoting: VIP first, then a clean stop, then the release with the final LSN."""

from __future__ import annotations

from dataclasses import replace

from failoverd.core import context
from failoverd.core.model import (
    Demotion,
    RecordEvent,
    ReleaseLease,
    RemoveVip,
    Role,
    RunHook,
    StartReplica,
    StopDatabase,
)
from failoverd.core.policy import format_lsn


def begin(st: context.Ctx, kind: str, text: str) -> None:
    reason = st.decide(kind, text)
    st.set(
        role=Role.DEMOTING,
        takeover=None,
        pending=None,
        demotion=Demotion(kind=kind, started_at=st.obs.now),
    )
    st.emit(RemoveVip, reason)


def run(st: context.Ctx, done: context.Done | None) -> None:
    d = st.state.demotion
    if d is None:
        d = Demotion(kind="aborted", started_at=st.obs.now)
    reason = st.reason
    if done is not None:
        r = done.result
        if done.kind == "RemoveVip" and not r.ok:
            # Still configured, for all we know: keep the lease until it is gone for sure.
            reason = st.decide(
                "vip_removal_failed",
                f"removing the VIP failed ({r.detail}); keeping the lease so that "
                f"{st.s.peer} does not add it too; trying again",
            )
        elif done.kind == "RemoveVip":
            d = replace(d, vip_removed=True)
        elif done.kind == "StopDatabase" and not r.ok:
            # Not stopped: it may still take writes. The lease stays ours (the peer must not
            # promote beside it) and the stop is tried again, harder.
            d = replace(d, clean=False, stop_failures=d.stop_failures + 1)
            reason = st.decide(
                "stop_failed",
                f"stopping the database failed ({r.detail}); keeping the lease so that "
                f"{st.s.peer} does not promote beside a primary that may still take writes; "
                "trying again in immediate mode",
            )
        elif done.kind == "StopDatabase":
            d = replace(
                d,
                db_stopped=True,
                final_lsn=r.final_lsn,
                final_timeline=r.timeline,
                clean=d.clean and r.clean is not False,
            )
        elif done.kind == "ReleaseLease":
            d = replace(d, released=r.ok)
        elif done.kind == "StartReplica":
            if r.ok:
                st.set(role=Role.PASSIVE, demotion=None)
                st.decide("passive", f"back as a replica of {st.s.peer}")
            else:
                st.set(role=Role.FENCED, demotion=None)
                st.decide("must_rejoin", f"could not start as a replica: {r.detail}; must rejoin")
            return
        st.set(demotion=d)
    if st.state.pending is not None:
        return
    if not d.vip_removed:
        st.emit(RemoveVip, reason)
        return
    if st.managed_db() and not d.db_stopped:
        hung = st.obs.database.hung
        if hung:
            reason = st.decide(
                d.kind,
                f"{reason.text}; PostgreSQL does not answer: killing it at once, not asking it to "
                "shut down (unclean: the peer fences this node before it promotes)",
            )
        mode = "kill" if hung else "immediate" if d.stop_failures else "fast"
        voluntary = d.kind in ("stepdown", "switchover", "shutdown") and mode == "fast"
        # A CHECKPOINT first keeps the shutdown checkpoint short, so the stop stays clean and
        # quick under load.
        st.emit(StopDatabase, reason, mode=mode, checkpoint=voluntary)
        return
    if not d.released:
        if st.holds_lease():
            clean = d.clean and (d.final_lsn is not None or not st.managed_db())
            st.emit(
                ReleaseLease,
                reason,
                epoch=st.state.epoch,
                final_lsn=d.final_lsn,
                clean=clean,
                timeline=d.final_timeline,
            )
            return
        d = replace(d, released=True)
        st.set(demotion=d)
    # Handed over.
    now = st.obs.now
    lsn = "" if d.final_lsn is None else f" at LSN {format_lsn(d.final_lsn)}"
    text = f"stepped down ({d.kind}){lsn} in {now - d.started_at:.2f} s"
    if d.kind in ("stepdown", "switchover"):
        st.set(last_failover_at=now)
    if d.kind == "aborted":
        # A takeover that could not finish: not again at once (each try costs an epoch).
        st.set(retry_after=now + st.s.fence_retry_after, retry_reason=st.reason)
    if st.obs.shutdown_requested or d.kind == "shutdown":
        done_reason = st.decide("stopped", text + "; exiting")
        st.set(role=Role.PASSIVE, demotion=None, exit=True)
    elif st.managed_db() and d.clean:
        done_reason = st.decide("stepped_down", text + f"; restarting as a replica of {st.s.peer}")
        st.emit(StartReplica, done_reason, primary=st.s.peer)
    elif st.managed_db():
        done_reason = st.decide(
            "must_rejoin", text + "; the database did not stop cleanly: must rejoin"
        )
        st.set(role=Role.FENCED, demotion=None)
    else:
        done_reason = st.decide("stepped_down", text)
        st.set(role=Role.PASSIVE, demotion=None)
    st.emit(
        RecordEvent,
        done_reason,
        kind=d.kind,
        epoch=st.state.epoch,
        from_node=st.s.node,
        to_node=None,
        phases=(("stepdown", now - d.started_at),),
    )
    st.emit(RunHook, done_reason, role=st.state.role, epoch=st.state.epoch)
