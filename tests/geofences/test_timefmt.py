"""Timestamps written and read by the core."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from geofences.timefmt import format_ms, parse_rfc3339_ms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: years 1970 to 9999
epoch_ms = st.integers(0, 253_402_300_799_999)


def expected(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")[:-6] + "Z"


@given(epoch_ms)
def test_format_ms_is_rfc3339_utc_with_milliseconds_and_reads_back(ms: int) -> None:
    assert format_ms(ms) == expected(ms)
    assert parse_rfc3339_ms(format_ms(ms)) == ms


def test_format_ms_stays_right_past_its_cache_of_seconds() -> None:
    start = 1_795_356_185_000
    for second in range(10_000):
        ms = start + second * 1000 + second % 1000
        assert format_ms(ms) == expected(ms)
    assert format_ms(start) == "2026-11-22T14:03:05.000Z"
