"""The fork point: may a stopped node follow the active as it is, or must it be rewound?

The cases are PostgreSQL's own: a replica may follow when it replayed no further than the point
where the active's history left its timeline; a former primary only when that point is exactly
the end of its shutdown checkpoint (the active got everything, the checkpoint too).
"""

from __future__ import annotations

import pytest

from failoverd.core.model import RejoinFacts
from failoverd.core.policy import fork_verdict, format_lsn

CKPT, CKPT_END = 0x3000028, 0x30000A0  # a shutdown checkpoint record on timeline 1
HISTORY = ((1, CKPT_END), (2, 0x5000000))  # the active: 1 -> 2 at CKPT_END, 2 -> 3 later


def facts(**kw: object) -> RejoinFacts:
    base: dict[str, object] = {
        "was_primary": True,
        "clean": True,
        "local_timeline": 1,
        "local_lsn": CKPT,
        "local_checkpoint_end": CKPT_END,
        "primary_timeline": 3,
        "primary_history": HISTORY,
    }
    base.update(kw)
    return RejoinFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "kw", "verdict"),
    [
        ("clean ex-primary, the active got its shutdown checkpoint", {}, "follow"),
        ("the active forked before its shutdown checkpoint", {"local_checkpoint_end": CKPT_END + 8},
         "rewind"),
        ("checkpoint end unknown", {"local_checkpoint_end": None}, "rewind"),
        ("it wrote past the fork", {"local_lsn": CKPT_END + 0x100}, "rewind"),
        ("crashed: end of WAL unknown", {"clean": False}, "rewind"),
        ("a replica that replayed up to the fork", {"was_primary": False,
         "local_lsn": CKPT_END, "local_checkpoint_end": None}, "follow"),
        ("a replica past the fork", {"was_primary": False, "local_lsn": CKPT_END + 1},
         "rewind"),
        ("on the active's own timeline", {"local_timeline": 3, "local_lsn": 0x6000000}, "follow"),
        ("on a later timeline than the active", {"local_timeline": 4}, "rewind"),
        ("a timeline the active's history does not hold", {"local_timeline": 2,
         "primary_history": ((1, CKPT_END),)}, "rewind"),
        ("a sibling timeline the active never had", {"local_timeline": 2, "primary_timeline": 3,
         "primary_history": ((1, CKPT_END), (1, 0x4000000))}, "rewind"),
        ("another initdb", {"same_system": False}, "clone"),
    ],
)  # fmt: skip
def test_fork_verdict(case: str, kw: dict[str, object], verdict: str) -> None:
    got, why = fork_verdict(facts(**kw))
    assert got == verdict, f"{case}: {why}"
    assert why


def test_the_reason_names_the_timeline_and_lsns_as_postgresql_writes_them() -> None:
    _, why = fork_verdict(facts(local_lsn=CKPT_END + 0x100))
    assert f"timeline 1 at {format_lsn(CKPT_END + 0x100)}" in why
    assert format_lsn(CKPT_END) == "0/30000A0"
    assert format_lsn(0x1_0000_0010) == "1/10"
