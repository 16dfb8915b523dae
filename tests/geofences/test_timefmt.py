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


#: RFC 3339-like text around the usual shape: digits, separators and zones varied
near_usual = st.builds(
    lambda date, sep, time, fraction, zone: f"{date}{sep}{time}{fraction}{zone}",
    st.sampled_from(["2026-11-22", "2026-02-29", "2024-02-29", "1970-01-01", "9999-12-31"]),
    st.sampled_from(["T", "t", " ", "x"]),
    st.sampled_from(["14:03:05", "23:59:59", "23:59:60", "24:00:00", "00:00:00", "1:03:05"]),
    st.sampled_from(["", ".1", ".12", ".123", ".1234", ".12a", ".\u0661\u0662\u0663", ".+12"]),
    st.sampled_from(["Z", "z", "+00:00", "+01:30", "", "ZZ"]),
)


def slow_parse(text: str) -> int | str:
    """The reading without the cache of seconds, or the error."""
    if len(text) < 20 or text[10] not in "Tt ":
        return "error"
    try:
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError:
        return "error"
    if dt.tzinfo is None:
        return "error"
    return (dt - EPOCH) // timedelta(milliseconds=1)


@given(near_usual)
def test_reading_the_usual_shape_from_the_cache_gives_what_parsing_gives(text: str) -> None:
    for _ in range(2):  # the second time from the cache
        try:
            got: int | str = parse_rfc3339_ms(text)
        except ValueError:
            got = "error"
        assert got == slow_parse(text)
