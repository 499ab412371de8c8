"""The API clock's timestamps: ``stamp()`` writes what ``iso(now())`` writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mockserver.clock import Clock, iso, parse_clock


@pytest.mark.parametrize(
    "offset",
    [
        timedelta(0),
        timedelta(days=3, microseconds=999),
        timedelta(microseconds=-1),
        timedelta(hours=-5, microseconds=123_456),
        timedelta(days=400, seconds=59, microseconds=999_999),
    ],
)
def test_a_stamp_is_now_in_the_api_format(offset, monkeypatch):
    clock = Clock()
    clock.advance(offset)
    # Milliseconds across a second's end, and twice the same one (remembered).
    for now_ns in (1_764_394_223_998_700_000, 1_764_394_223_999_000_001, 1_764_394_224_000_000_000,
                   1_764_394_224_000_999_999, 1_764_394_224_001_000_000):  # fmt: skip
        monkeypatch.setattr("mockserver.clock.time.time_ns", lambda now_ns=now_ns: now_ns)
        moment = datetime.fromtimestamp(now_ns // 1_000_000 / 1000, UTC) + offset
        assert clock.stamp() == iso(moment)


def test_a_frozen_clock_stamps_its_instant_plus_the_offset():
    clock = parse_clock("frozen:2024-02-29T23:59:59.999Z")
    assert clock.stamp() == "2024-02-29T23:59:59.999Z"
    clock.advance(timedelta(microseconds=1000))
    assert clock.stamp() == "2024-03-01T00:00:00.000Z"
