"""The ensemble timing check (failoverd.quorum): conf answers in, findings out."""

from __future__ import annotations

import pytest

from failoverd.quorum import Assessment, ConfAnswer, ServerSettings, assess, negotiated, parse_conf

ENSEMBLE_CONF = """clientPort=2181
secureClientPort=-1
dataDir=/var/lib/zookeeper/version-2
tickTime=2000
maxClientCnxns=60
minSessionTimeout=4000
maxSessionTimeout=40000
serverId=3
initLimit=10
syncLimit=5
electionAlg=3
electionPort=3888
quorumPort=2888
peerType=0
membership:
server.1=10.77.0.5:2888:3888:participant
server.2=10.77.0.6:2888:3888:participant
server.3=10.77.0.7:2888:3888:participant
version=0"""

STANDALONE_CONF = """clientPort=2181
dataDir=/tmp/zk/data/version-2
tickTime=100
maxClientCnxns=60
minSessionTimeout=200
maxSessionTimeout=20000
serverId=0"""


def server(
    tick_ms: int, sync_limit: int | None = 10, lo: int | None = None, hi: int | None = None
) -> ServerSettings:
    return ServerSettings(tick_ms, lo, hi, sync_limit)


def answers(*settings: ServerSettings | None) -> list[ConfAnswer]:
    return [
        ConfAnswer(f"zk{i}:2181", s, None if s is not None else "Connection refused")
        for i, s in enumerate(settings, 1)
    ]


def levels(a: Assessment) -> list[tuple[str, str]]:
    return [(f.level, f.key) for f in a.findings]


def test_parse_an_ensemble_member_and_a_standalone_server() -> None:
    member = parse_conf(ENSEMBLE_CONF)
    assert member == ServerSettings(2000, 4000, 40000, 5, 10, 3)
    assert not member.standalone
    alone = parse_conf(STANDALONE_CONF)
    assert alone.tick_time_ms == 100 and alone.standalone


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("conf is not executed because it is not in the whitelist.\n", "4lw.commands.whitelist"),
        ("", "tickTime"),
        ("imok", "tickTime"),
    ],
)
def test_parse_says_why_there_is_nothing(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_conf(text)


def test_negotiation_clamps_into_the_servers_bounds() -> None:
    stock = [server(2000)]  # no explicit bounds: [2, 20] x tickTime
    assert negotiated(2.0, stock) == 4.0
    assert negotiated(10.0, stock) == 10.0
    assert negotiated(60.0, stock) == 40.0
    assert negotiated(2.0, [server(100, lo=200, hi=20000)]) == 2.0
    assert negotiated(2.0, []) == 2.0


def test_a_healthy_ensemble_is_a_note_with_the_numbers() -> None:
    a = assess(answers(*[server(100, 20)] * 3), requested_timeout=2.0, self_fence_after=1.0)
    assert not a.refused
    assert levels(a) == [("note", "cluster.zookeeper_hosts")]
    assert a.tick_time == 0.1 and a.exposure == 0.1 and a.sync_limit == 20
    assert a.follower_read_window == pytest.approx(2.0)
    assert a.session_timeout == 2.0 and a.margin == 1.0
    text = a.findings[0].text
    assert "3 of 3 ensemble servers" in text and "tickTime 0.1 s" in text and "2 s" in text


def test_tick_time_at_or_above_the_margin_is_refused() -> None:
    # Stock tickTime 2 s with T = 4 s and self_fence_after = 2.5 s: the margin is 1.5 s.
    a = assess(
        answers(server(2000)), requested_timeout=4.0, self_fence_after=2.5, negotiated_timeout=4.0
    )
    assert a.refused
    error = next(f for f in a.findings if f.level == "error")
    assert error.key == "timings.self_fence_after"
    assert "tickTime is 2 s" in error.text and "1.5 s" in error.text


def test_tick_time_above_half_the_margin_is_a_warning() -> None:
    a = assess(
        answers(server(2000)), requested_timeout=4.0, self_fence_after=1.0, negotiated_timeout=4.0
    )
    assert not a.refused
    assert ("warning", "timings.self_fence_after") in levels(a)


def test_the_stock_ensemble_with_the_default_timings_passes() -> None:
    """tickTime 2 s turns a requested 2 s into 4 s; self_fence_after stays 1 s: margin 3 s."""
    stock = answers(server(2000), server(2000), None)
    a = assess(stock, requested_timeout=2.0, self_fence_after=1.0)
    assert not a.refused
    assert a.session_timeout == 4.0 and a.margin == 3.0
    assert ("warning", "timings.session_timeout") in levels(a)  # 2 s would become 4 s
    assert ("note", "cluster.zookeeper_hosts") in levels(a)
    assert any("zk3:2181: Connection refused" in f.text for f in a.findings)


def test_self_fence_after_not_below_the_granted_timeout_is_refused() -> None:
    a = assess(answers(server(100, lo=200, hi=800)), requested_timeout=2.0, self_fence_after=1.0)
    assert a.session_timeout == 0.8
    assert a.refused
    assert "not below the session timeout the servers grant, 0.8 s" in a.findings[-2].text


def test_nothing_learnt_is_a_warning_naming_each_server() -> None:
    a = assess(
        [ConfAnswer("zk1:2181", None, "'conf' is not in the server's 4lw.commands.whitelist")],
        requested_timeout=2.0,
        self_fence_after=1.0,
    )
    assert not a.refused and a.answered == 0 and a.tick_time is None
    assert levels(a) == [("warning", "cluster.zookeeper_hosts")]
    assert "zk1:2181" in a.findings[0].text and "whitelist" in a.findings[0].text


def test_disagreeing_servers_are_judged_by_the_largest_tick() -> None:
    a = assess(
        answers(server(100), server(2000)),
        requested_timeout=4.0,
        self_fence_after=2.0,
        negotiated_timeout=4.0,
    )
    assert a.tick_time == 2.0
    assert ("warning", "cluster.zookeeper_hosts") in levels(a)
    assert a.refused  # 2 s is not below 4 - 2


def test_a_standalone_server_has_no_follower_to_cut_off() -> None:
    a = assess(answers(server(100, None)), requested_timeout=2.0, self_fence_after=1.0)
    assert not a.refused and a.sync_limit is None and a.follower_read_window is None
    assert "standalone" in a.findings[-1].text
