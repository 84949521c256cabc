"""Where WAL ends, from what pg_waldump says when it stops: one parser for the postgres check
(a stopped server's position) and the rewind's inspection (where a shutdown checkpoint ends)."""

from __future__ import annotations

import pytest

from failoverd.pgconn import wal_end_from_waldump

SEGMENT = 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("said", "end"),
    [
        (
            "pg_waldump: error: error in WAL record at 0/3000060: invalid record length at "
            "0/30000D8: wanted 24, got 0",
            0x30000D8,
        ),
        (
            "pg_waldump: error: error in WAL record at 1/A0000028: record with incorrect "
            "prev-link 0/0 at 1/A00000A0",
            (1 << 32) | 0xA00000A0,
        ),
        (
            "pg_waldump: error: error in WAL record at 0/3FFFFD8: invalid magic number 0000 in "
            "log segment 000000010000000000000004, offset 8192",
            0x4000000 + 8192,
        ),
        (
            'pg_waldump: error: could not find file "00000002000000010000000A": No such file '
            "or directory",
            (1 << 32) | 0x0A000000,
        ),
    ],
)
def test_the_end_is_read_from_each_way_pg_waldump_says_it(said: str, end: int) -> None:
    assert wal_end_from_waldump(said, SEGMENT) == end


def test_without_the_segment_size_only_an_lsn_said_outright_counts() -> None:
    page = "error in WAL record at 0/3FFFFD8: invalid magic number 0000 in log segment " + (
        "000000010000000000000004, offset 8192"
    )
    assert wal_end_from_waldump(page, None) is None
    assert wal_end_from_waldump("invalid record length at 0/30000D8", SEGMENT) is None
    assert wal_end_from_waldump("pg_waldump: error: could not open directory", SEGMENT) is None
