"""The failover tests' oracle must itself be right: analysis of client and sampler records."""

from __future__ import annotations

from pathlib import Path

from lab.workload import JsonlFollower, analyze, percentile


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


# -- N writers: latency, throughput, and the verdicts above on an interleaved history ----------


def closed_loop_history(
    writers: int, latency: float, fault_at: float, back_at: float, end: float
) -> list[dict]:
    """What N closed-loop writers record: each posts as soon as it has its last answer; fln1
    (epoch 1) acknowledges until the fault, fln2 (epoch 2) from ``back_at``; in between every
    request fails at once and the writer waits 0.05 s."""
    records: list[dict] = []
    for w in range(writers):
        t = w * latency / writers  # the writers are out of step
        n = 0
        while t < end:
            if t < fault_at or t >= back_at:
                node, epoch = ("fln1", 1) if t < fault_at else ("fln2", 2)
                records.append(
                    {"id": f"w{w}-{n}", "writer": w, "sent": t, "done": t + latency,
                     "ok": True, "node": node, "epoch": epoch}
                )  # fmt: skip
                t += latency
            else:
                records.append(
                    {"id": f"w{w}-{n}", "writer": w, "sent": t, "done": t + 0.001, "ok": False}
                )
                t += 0.001 + 0.05
            n += 1
    return sorted(records, key=lambda r: r["done"])  # the order they reach the file


def test_n_writers_keep_the_outage_epoch_order_and_lost_verdicts() -> None:
    acks = closed_loop_history(writers=8, latency=0.02, fault_at=10.0, back_at=12.5, end=20.0)
    assert len({a["writer"] for a in acks}) == 8
    ids = {a["id"] for a in acks if a["ok"]}
    v = analyze(acks, [], fault_at=10.0, surviving_ids=ids)
    assert v.writers == 8
    # Back at 12.5 s: seen by the first post after it (a retry at most 51 ms on), 20 ms later.
    assert v.outage_s is not None and 2.5 <= v.outage_s <= 2.5 + 0.051 + 0.02
    assert v.served_after == "fln2" and v.epoch_order_violations == [] and v.lost == []


def test_an_acknowledged_id_missing_from_the_survivor_is_lost_whichever_writer_sent_it() -> None:
    acks = closed_loop_history(writers=4, latency=0.02, fault_at=10.0, back_at=12.5, end=20.0)
    ok = [a for a in acks if a["ok"]]
    # The last writes of writer 3 before the crash never reached the replica.
    missing = sorted(a["id"] for a in ok if a["writer"] == 3 and 9.95 <= a["done"] < 10.0)
    assert missing
    survivors = {a["id"] for a in ok} - set(missing)
    v = analyze(acks, [], fault_at=10.0, surviving_ids=survivors)
    assert v.lost == missing
    # A failed request's id is never "lost": nothing was promised.
    failed = next(a["id"] for a in acks if not a["ok"])
    assert failed not in v.lost


def test_latency_percentiles_are_of_acknowledged_donations_only() -> None:
    acks = [
        {"id": f"id{i}", "writer": i % 4, "sent": float(i), "done": i + (i + 1) / 1000,
         "ok": True, "node": "fln1", "epoch": 1}
        for i in range(100)
    ]  # fmt: skip  # latencies 1 ms .. 100 ms
    acks.append({"id": "slow-failure", "writer": 0, "sent": 50.0, "done": 55.0, "ok": False})
    v = analyze(acks, [], fault_at=None, surviving_ids=None)
    assert v.latency_p50_s is not None and abs(v.latency_p50_s - 0.050) < 1e-9
    assert v.latency_p99_s is not None and abs(v.latency_p99_s - 0.099) < 1e-9
    assert (v.acknowledged, v.failed) == (100, 1)


def test_donations_per_second_over_the_run_and_outside_the_outage() -> None:
    # 4 writers, 20 ms each: 200 acknowledged per second while the site serves; 2.5 s out of 20.
    acks = closed_loop_history(writers=4, latency=0.02, fault_at=10.0, back_at=12.5, end=20.0)
    v = analyze(acks, [], fault_at=10.0, surviving_ids=None)
    ok = sum(1 for a in acks if a["ok"])
    assert v.run_s is not None and abs(v.run_s - 20.0) < 0.1
    assert v.rate_per_s is not None and abs(v.rate_per_s - ok / v.run_s) < 1e-9
    assert v.outage_s is not None
    assert v.rate_outside_outage_per_s is not None
    assert abs(v.rate_outside_outage_per_s - 200.0) < 2.0
    assert v.rate_per_s < 0.9 * v.rate_outside_outage_per_s


def test_without_a_fault_both_rates_agree_and_nothing_is_an_outage() -> None:
    acks = closed_loop_history(writers=2, latency=0.01, fault_at=99.0, back_at=99.0, end=5.0)
    v = analyze(acks, [], fault_at=None, surviving_ids={a["id"] for a in acks})
    assert v.outage_s is None and v.served_after is None and v.lost == []
    assert v.rate_per_s is not None and abs(v.rate_per_s - 200.0) < 2.0
    assert v.rate_outside_outage_per_s == v.rate_per_s


def test_a_service_that_never_comes_back_counts_the_rest_of_the_run_as_outage() -> None:
    acks = closed_loop_history(writers=2, latency=0.01, fault_at=4.0, back_at=99.0, end=8.0)
    v = analyze(acks, [], fault_at=4.0, surviving_ids=None)
    assert v.outage_s is None
    assert v.rate_outside_outage_per_s is not None
    assert abs(v.rate_outside_outage_per_s - 200.0) < 3.0  # the 4 s before the fault


def test_no_records_no_figures() -> None:
    v = analyze([], [], fault_at=None, surviving_ids=set())
    assert (v.latency_p50_s, v.rate_per_s, v.rate_outside_outage_per_s) == (None, None, None)


def test_percentile_is_the_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0,
        99.0,
        100.0,
    )


def test_the_follower_reads_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "acks.jsonl"
    follower = JsonlFollower(path)
    assert follower.read() == []
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id"')
    assert [r["id"] for r in follower.read()] == ["a", "b"]
    with path.open("a") as f:
        f.write(': "c"}\n')
    assert [r["id"] for r in follower.read()] == ["a", "b", "c"]


# -- failovers the client saw, and the longest time without an acknowledged write -------------


def paced(
    start: float, end: float, serving: list[tuple[float, float, str, int]], step: float = 0.05
) -> list[dict]:
    """The paced probe: a donation every ``step`` s from ``start`` to ``end``; acknowledged by
    the node and epoch of the ``serving`` window (from, to, node, epoch) it is sent in, failed
    at once outside them."""
    records = []
    for k in range(round((end - start) / step)):
        t = start + k * step
        window = next((w for w in serving if w[0] <= t < w[1]), None)
        rec: dict = {"id": f"p{k}", "writer": 0, "sent": t, "done": t + 0.01, "ok": bool(window)}
        if window:
            rec.update(node=window[2], epoch=window[3])
        records.append(rec)
    return records


def test_a_leader_election_the_active_rides_out_is_no_failover_and_no_gap() -> None:
    acks = paced(0.0, 20.0, [(0.0, 20.0, "fln1", 3)])
    v = analyze(acks, [], fault_at=10.0, surviving_ids=None)
    assert v.failovers == 0 and v.failed == 0
    assert v.max_gap_s is not None and abs(v.max_gap_s - 0.05) < 1e-9
    assert v.outage_s is None  # no new epoch: nothing was taken over


def test_a_takeover_is_one_failover_and_the_gap_is_the_outage() -> None:
    acks = paced(0.0, 20.0, [(0.0, 10.0, "fln1", 3), (12.5, 20.0, "fln2", 4)])
    v = analyze(acks, [], fault_at=10.0, surviving_ids=None)
    assert v.failovers == 1
    # The last ack of fln1 answered at 9.96, the first of fln2 at 12.51.
    assert v.max_gap_s is not None and abs(v.max_gap_s - 2.55) < 1e-9
    assert v.outage_s is not None and v.outage_s <= v.max_gap_s


def test_the_same_node_leading_again_after_an_outage_is_a_gap_not_a_failover() -> None:
    """ZooKeeper gone for a minute without the failsafe: the active self-fences, and leads again
    at a new epoch once ZooKeeper is back."""
    acks = paced(0.0, 80.0, [(0.0, 10.0, "fln1", 3), (71.0, 80.0, "fln1", 4)])
    v = analyze(acks, [], fault_at=10.0, surviving_ids=None)
    assert v.failovers == 0
    assert v.max_gap_s is not None and abs(v.max_gap_s - 61.05) < 1e-9
    assert v.outage_s is not None and abs(v.outage_s - 61.01) < 1e-9


def test_writes_acknowledged_throughout_an_outage_of_zookeeper_leave_no_gap() -> None:
    """What the failsafe is for: ZooKeeper gone, the active serving under the peer's pledges,
    and leading at a new epoch once ZooKeeper is back, without a pause."""
    acks = paced(0.0, 80.0, [(0.0, 71.0, "fln1", 3), (71.0, 80.0, "fln1", 4)])
    v = analyze(acks, [], fault_at=10.0, surviving_ids=None)
    assert (v.failovers, v.failed) == (0, 0)
    assert v.max_gap_s is not None and v.max_gap_s < 0.06


def test_a_service_that_never_comes_back_is_a_gap_to_the_end_of_the_run() -> None:
    acks = paced(0.0, 20.0, [(0.0, 10.0, "fln1", 3)])
    v = analyze(acks, [], fault_at=10.0, surviving_ids=None)
    assert v.failovers == 0
    # From the last ack (9.96) to the last failed answer (19.96).
    assert v.max_gap_s is not None and abs(v.max_gap_s - 10.0) < 1e-9


def test_every_change_of_the_acknowledging_node_counts_in_the_order_answers_came() -> None:
    acks = paced(0.0, 30.0, [(0.0, 10.0, "fln1", 3), (12.0, 20.0, "fln2", 4), (22, 30, "fln1", 5)])
    v = analyze(list(reversed(acks)), [], fault_at=10.0, surviving_ids=None)  # file order aside
    assert v.failovers == 2


def test_n_writers_interleaved_see_one_failover() -> None:
    acks = closed_loop_history(writers=8, latency=0.02, fault_at=10.0, back_at=12.5, end=20.0)
    v = analyze(acks, [], fault_at=10.0, surviving_ids=None)
    assert v.failovers == 1
    assert v.max_gap_s is not None and 2.5 <= v.max_gap_s <= 2.5 + 0.051 + 0.02


def test_no_records_no_gap() -> None:
    v = analyze([], [], fault_at=1.0, surviving_ids=None)
    assert (v.failovers, v.max_gap_s) == (0, None)
    only_failures = [ack(1, 1.0, ok=False), ack(2, 3.0, ok=False)]
    v = analyze(only_failures, [], fault_at=1.0, surviving_ids=None)
    assert v.failovers == 0 and v.max_gap_s is not None and abs(v.max_gap_s - 2.01) < 1e-9
