"""lab/scenarios.py's choice of the follower to isolate with the active (zk-isolated-follower):
the active's session must end on it, the passive's off it, with as few moves as can be."""

from __future__ import annotations

import itertools

from lab.ensemble import SERVERS
from lab.scenarios import isolation_plan


def test_the_actives_own_follower_is_isolated_without_moving_anything() -> None:
    assert isolation_plan("flzk", {"fln1": "flzk2", "fln2": "flzk3"}, "fln1") == ("flzk2", {})
    assert isolation_plan("flzk", {"fln1": "flzk2", "fln2": "flzk"}, "fln1") == ("flzk2", {})


def test_an_active_on_the_leader_moves_to_the_follower_the_passive_is_not_on() -> None:
    assert isolation_plan("flzk2", {"fln1": "flzk2", "fln2": "flzk"}, "fln1") == (
        "flzk3",
        {"fln1": "flzk3"},
    )


def test_a_passive_on_the_actives_follower_moves_to_the_leader() -> None:
    assert isolation_plan("flzk3", {"fln1": "flzk", "fln2": "flzk"}, "fln2") == (
        "flzk",
        {"fln1": "flzk3"},
    )


def test_every_placement_ends_with_the_active_alone_on_a_follower() -> None:
    places = [*SERVERS, None]  # None: not found (a session being re-established)
    pairs = (("fln1", "fln2"), ("fln2", "fln1"))
    for leader, (active, passive) in itertools.product(SERVERS, pairs):
        for on_active, on_passive in itertools.product(places, places):
            sessions = {active: on_active, passive: on_passive}
            follower, moves = isolation_plan(leader, sessions, active)
            after = sessions | moves
            assert follower != leader
            assert after[active] == follower and after[passive] != follower, (sessions, moves)
            assert len(moves) <= 2
            if on_active != leader and on_active is not None and on_passive != on_active:
                assert moves == {}  # already in place
