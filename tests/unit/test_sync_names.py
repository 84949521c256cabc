"""``synchronous_standby_names``, read as PostgreSQL reads it and written so that it cannot be
misread; and what the postgres check makes of a primary's synchronous replication.

The parser's cases are the forms PostgreSQL 15 accepts (checked against a real server: each
value below was set with ALTER SYSTEM and read back with SHOW), and the forms it rejects, which
must read as unknown (None), never as "no standby named".
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failoverd.checks.postgres import database_status
from failoverd.core import DbRole, StandbyStatus
from failoverd.pgconn import format_sync_standby_names, parse_sync_standby_names


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("", ()),
        ("*", ("*",)),
        ("n2", ("n2",)),
        ('"n2"', ("n2",)),
        ("FIRST 1 (n2)", ("n2",)),
        ("first 1 (n2)", ("n2",)),
        ("1 (a, b)", ("a", "b")),
        ('ANY 1 ("a", b)', ("a", "b")),
        ("any 2 (x,y,z)", ("x", "y", "z")),
        ("a, b", ("a", "b")),
        ("a,b", ("a", "b")),
        ("  n2\t", ("n2",)),
        ('"a""b"', ('a"b',)),
        ('"first"', ("first",)),  # a keyword, quoted: a name
        ('FIRST 1 ("any", "two words")', ("any", "two words")),
        ("1", ("1",)),  # a number alone is a standby's name
        ("1 (2, 3)", ("2", "3")),
        ("N2", ("N2",)),  # case kept (PostgreSQL matches ignoring it)
        ("a$1, _b", ("a$1", "_b")),
        ("ä", ("ä",)),
        ("*, n2", ("*", "n2")),
        ('ANY 1 ("*")', ("*",)),
        ("anything, firsts", ("anything", "firsts")),  # keywords only as whole words
    ],
)
def test_parse_reads_the_member_names(value: str, names: tuple[str, ...]) -> None:
    assert parse_sync_standby_names(value) == names


@pytest.mark.parametrize(
    "value",
    [
        "first",  # FIRST is a keyword
        "any",
        "a b",
        '"',
        '"n2',  # unterminated
        "1 (a,)",
        "(a)",
        "FIRST (a)",
        "FIRST 1 a",
        "ANY 1 (a",
        "a, any",
        "1 (a) b",
        "a; b",
        "a-b",
        "$a",
    ],
)
def test_parse_of_what_postgresql_rejects_is_unknown(value: str) -> None:
    assert parse_sync_standby_names(value) is None


def test_format_quotes_every_name_and_leaves_star_bare() -> None:
    assert format_sync_standby_names(()) == ""
    assert format_sync_standby_names(("n2",)) == '"n2"'
    assert format_sync_standby_names(("*",)) == "*"
    assert format_sync_standby_names(('a"b', "first", "x y")) == '"a""b", "first", "x y"'
    assert format_sync_standby_names(("it's",)) == '"it\'s"'  # SQL quoting is the caller's
    for bad in ("", "a\0b"):
        with pytest.raises(ValueError, match="not a standby name"):
            format_sync_standby_names(("n2", bad))


names_st = st.lists(
    st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1),
    max_size=4,
)


@given(names_st)
def test_format_then_parse_gives_back_the_names(names: list[str]) -> None:
    assert parse_sync_standby_names(format_sync_standby_names(names)) == tuple(names)


def test_database_status_of_a_primary_reads_its_synchronous_replication() -> None:
    facts: dict[str, object] = {
        "role": "primary",
        "lsn": 100,
        "synchronous_standby_names": 'FIRST 1 ("n2")',
        "synchronous_commit": "on",
        "standbys": [
            {
                "application_name": "n2",
                "client_addr": "127.0.0.1",
                "state": "streaming",
                "sync_state": "sync",
                "flush_lsn": 96,
                "replay_lag_bytes": 8,
                "replay_lag_s": 0.01,
            },
            {
                "application_name": "pg_basebackup",
                "state": "backup",
                "sync_state": "async",
                "flush_lsn": None,
            },
            {"application_name": None, "state": "streaming", "sync_state": "async"},  # not ours
        ],
    }
    db = database_status(facts)
    assert db.role is DbRole.PRIMARY
    assert db.sync_standby_names == ("n2",)
    assert db.synchronous_commit == "on"
    assert db.standbys == (
        StandbyStatus("n2", "streaming", "sync", 96),
        StandbyStatus("pg_basebackup", "backup", "async", None),
    )
    assert db.standby("n2") == StandbyStatus("n2", "streaming", "sync", 96)
    assert db.standby("n3") is None


def test_database_status_says_unknown_rather_than_guessing() -> None:
    # An older check's facts (no settings), or a value that does not parse: unknown, not ().
    assert database_status({"role": "primary", "lsn": 1}).sync_standby_names is None
    garbled = database_status({"role": "primary", "synchronous_standby_names": "a b"})
    assert garbled.sync_standby_names is None
    empty = database_status({"role": "primary", "synchronous_standby_names": ""})
    assert empty.sync_standby_names == ()
    assert database_status({"role": "primary", "standbys": "junk"}).standbys == ()
    # A replica reports none of it.
    replica = database_status({"role": "replica", "lsn": 1, "streaming": True})
    assert (replica.sync_standby_names, replica.synchronous_commit, replica.standbys) == (
        None,
        None,
        (),
    )
