"""The failover tests' oracle must itself be right: analysis of client and sampler records."""

from __future__ import annotations

from lab.workload import analyze


def ack(i: int, sent: float, ok: bool = True, epoch: int = 1, node: str = "fln1") -> dict:
    rec: dict = {"id": f"id{i}", "sent": sent, "done": sent + 0.01, "ok": ok}
    if ok:
        rec.update(epoch=epoch, node=node)
    return rec


def test_outage_is_fault_to_first_ack_under_a_new_epoch() -> None:
    acks = [
        ack(1, 0.9),
        ack(2, 1.05),  # the failing node still answers while it shuts down: not recovery
        ack(3, 1.1, ok=False),
        ack(4, 2.0, ok=False),
        ack(5, 3.5, epoch=2, node="fln2"),
    ]
    v = analyze(acks, [], fault_at=1.0, surviving_ids=None)
    assert v.outage_s is not None and abs(v.outage_s - 2.51) < 1e-9
    assert (v.acknowledged, v.failed) == (3, 2)
    assert v.nodes_after == ["fln1", "fln2"]
    assert v.served_after == "fln2"


def test_no_takeover_means_no_outage_figure() -> None:
    v = analyze([ack(1, 0.9), ack(2, 1.5, ok=False)], [], fault_at=1.0, surviving_ids=None)
    assert v.outage_s is None and v.served_after is None


def test_split_brain_samples_counted() -> None:
    samples = [
        {"t": 1, "vip": ["fln1"], "writable": ["fln1"]},
        {"t": 2, "vip": ["fln1", "fln2"], "writable": ["fln2"]},
        {"t": 3, "vip": ["fln2"], "writable": ["fln1", "fln2"]},
        {"t": 4, "vip": [], "writable": []},
    ]
    assert analyze([], samples, 0.0, None).split_brain_samples == 2


def test_old_epoch_acknowledged_after_new_epoch_is_a_violation() -> None:
    good = [ack(1, 1.0, epoch=1), ack(2, 2.0, epoch=2), ack(3, 3.0, epoch=3)]
    assert analyze(good, [], 0.0, None).epoch_order_violations == []
    bad = [ack(1, 1.0, epoch=1), ack(2, 2.0, epoch=2), ack(3, 2.5, epoch=1)]
    (violation,) = analyze(bad, [], 0.0, None).epoch_order_violations
    assert "epoch 1" in violation and "epoch 2" in violation


def test_lost_writes_are_acknowledged_ids_missing_from_the_survivor() -> None:
    acks = [ack(1, 1.0), ack(2, 2.0), ack(3, 3.0, ok=False)]
    assert analyze(acks, [], 0.0, {"id1"}).lost == ["id2"]
    assert analyze(acks, [], 0.0, {"id1", "id2"}).lost == []
