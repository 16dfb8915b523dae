"""Window instances (docs/interface.md, The hot spot file: windows, and Semantics: windows,
coverage and alerts) and assignments."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.errors import InvalidAssignment
from geofences.hotspots import Window
from geofences.timefmt import format_ms
from geofences.windows import (
    add_window,
    instances_between,
    merge_windows,
    parse_assignment,
    window_instance,
)

LONDON = "Europe/London"
DAILY = frozenset(range(7))
HOUR = 3_600_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def window(start: str, end: str, required: float = 40.0, **kw: object) -> Window:
    days = kw.pop("days", DAILY)
    return Window(days, time.fromisoformat(start), time.fromisoformat(end), required, **kw)  # type: ignore[arg-type]


def day_instances(w: Window, day: str, tz: str = LONDON) -> list[tuple[str, str]]:
    start = ms(f"{day}T00:00:00+00:00")
    found = instances_between("HS-01", [w], tz, start - 12 * HOUR, start + 36 * HOUR)
    return [(format_ms(i.start_ms), format_ms(i.end_ms)) for i in found]


@pytest.mark.parametrize(
    ("day", "start", "end"),
    [
        ("2026-03-28", "2026-03-28T14:00:00.000Z", "2026-03-28T20:00:00.000Z"),
        ("2026-03-29", "2026-03-29T13:00:00.000Z", "2026-03-29T19:00:00.000Z"),
        ("2026-10-24", "2026-10-24T13:00:00.000Z", "2026-10-24T19:00:00.000Z"),
        ("2026-10-25", "2026-10-25T14:00:00.000Z", "2026-10-25T20:00:00.000Z"),
    ],
)
def test_afternoon_window_on_clock_change_days_is_six_hours_and_moves_in_utc(
    day: str, start: str, end: str
) -> None:
    w = window("14:00", "20:00")
    instance = window_instance("HS-01", w, date.fromisoformat(day), LONDON)
    assert instance is not None
    assert (format_ms(instance.start_ms), format_ms(instance.end_ms)) == (start, end)
    assert instance.end_ms - instance.start_ms == 6 * HOUR


def test_spring_forward_night_window_is_one_hour_shorter() -> None:
    # 00:30 GMT to 02:30 BST: the clock skips 01:00-02:00.
    instance = window_instance("HS-01", window("00:30", "02:30"), date(2026, 3, 29), LONDON)
    assert instance is not None
    assert format_ms(instance.start_ms) == "2026-03-29T00:30:00.000Z"
    assert format_ms(instance.end_ms) == "2026-03-29T01:30:00.000Z"
    assert instance.end_ms - instance.start_ms == 1 * HOUR


def test_fall_back_night_window_is_one_hour_longer() -> None:
    # 00:30 BST to 02:30 GMT: 01:00-02:00 happens twice.
    instance = window_instance("HS-01", window("00:30", "02:30"), date(2026, 10, 25), LONDON)
    assert instance is not None
    assert format_ms(instance.start_ms) == "2026-10-24T23:30:00.000Z"
    assert format_ms(instance.end_ms) == "2026-10-25T02:30:00.000Z"
    assert instance.end_ms - instance.start_ms == 3 * HOUR


def test_nonexistent_and_ambiguous_times_read_with_fold_zero() -> None:
    # Skipped 01:30 is read with the winter offset (01:30Z = 02:30 BST).
    spring = window_instance("HS-01", window("01:30", "03:00"), date(2026, 3, 29), LONDON)
    assert spring is not None
    assert format_ms(spring.start_ms) == "2026-03-29T01:30:00.000Z"
    assert format_ms(spring.end_ms) == "2026-03-29T02:00:00.000Z"
    # Repeated 01:30 is its first occurrence (BST).
    autumn = window_instance("HS-01", window("01:30", "03:00"), date(2026, 10, 25), LONDON)
    assert autumn is not None
    assert format_ms(autumn.start_ms) == "2026-10-25T00:30:00.000Z"
    assert format_ms(autumn.end_ms) == "2026-10-25T03:00:00.000Z"


def test_windows_touching_the_skipped_hour() -> None:
    # Wholly inside it: both ends read with the winter offset, so it runs 02:10-02:50 BST.
    inside = window_instance("HS-01", window("01:10", "01:50"), date(2026, 3, 29), LONDON)
    assert inside is not None
    assert format_ms(inside.start_ms) == "2026-03-29T01:10:00.000Z"
    assert inside.end_ms - inside.start_ms == 40 * 60_000
    # Starting in it and ending less than an hour of wall time later: no instance that day.
    assert window_instance("HS-01", window("01:30", "02:10"), date(2026, 3, 29), LONDON) is None
    assert window_instance("HS-01", window("01:30", "02:10"), date(2026, 3, 30), LONDON) is not None


def test_midnight_crossing_window_days_apply_to_the_start_date() -> None:
    friday_only = window("23:30", "00:30", 15, days=frozenset({4}))
    # 2026-11-20 is a Friday: the instance runs into Saturday.
    assert day_instances(friday_only, "2026-11-20") == [
        ("2026-11-20T23:30:00.000Z", "2026-11-21T00:30:00.000Z")
    ]
    # Queried around Saturday: the Friday instance overlaps Saturday's first half hour, and no
    # Saturday instance exists.
    sat = ms("2026-11-21T00:00:00+00:00")
    found = instances_between("HS-01", [friday_only], LONDON, sat, sat + 24 * HOUR)
    assert [format_ms(i.start_ms) for i in found] == ["2026-11-20T23:30:00.000Z"]
    after = instances_between("HS-01", [friday_only], LONDON, sat + HOUR, sat + 24 * HOUR)
    assert after == []


def test_midnight_crossing_window_in_summer_time() -> None:
    w = window("23:30", "00:30", 15)
    assert day_instances(w, "2026-07-01")[1] == (
        "2026-07-01T22:30:00.000Z",
        "2026-07-01T23:30:00.000Z",
    )


def test_several_windows_a_day_in_order_and_duplicates_once() -> None:
    morning = window("09:00", "10:00", 15)
    evening = window("18:00", "19:00", 15)
    start = ms("2026-11-22T00:00:00+00:00")
    found = instances_between(
        "HS-01", [evening, morning, evening], LONDON, start, start + 24 * HOUR
    )
    assert [format_ms(i.start_ms) for i in found] == [
        "2026-11-22T09:00:00.000Z",
        "2026-11-22T18:00:00.000Z",
    ]


def test_same_instance_from_daily_and_weekday_window_has_one_key() -> None:
    daily = window("14:00", "20:00")
    sunday = window("14:00", "20:00", days=frozenset({6}))
    start = ms("2026-11-22T00:00:00+00:00")  # a Sunday
    found = instances_between("HS-01", [daily, sunday], LONDON, start, start + 24 * HOUR)
    assert len(found) == 1
    other_required = window("14:00", "20:00", 15.0)
    found = instances_between("HS-01", [daily, other_required], LONDON, start, start + 24 * HOUR)
    assert len(found) == 2
    assert found[0].key != found[1].key


def test_overlap_is_half_open() -> None:
    w = window("14:00", "20:00")
    start = ms("2026-11-22T14:00:00+00:00")
    end = ms("2026-11-22T20:00:00+00:00")
    assert instances_between("HS-01", [w], LONDON, end, end + HOUR) == []
    assert len(instances_between("HS-01", [w], LONDON, end - 1, end + HOUR)) == 1
    assert instances_between("HS-01", [w], LONDON, start - HOUR, start) == []
    assert len(instances_between("HS-01", [w], LONDON, start - HOUR, start + 1)) == 1


def test_instance_fields_and_eligibility() -> None:
    w = window("14:00", "20:00", 40, min_visit_minutes=2.5, unit_types=frozenset({"outreach"}))
    instance = window_instance("HS-01", w, date(2026, 11, 22), LONDON)
    assert instance is not None
    assert instance.required_ms == 40 * 60_000
    assert instance.min_visit_ms == 150_000
    assert instance.eligible("outreach")
    assert not instance.eligible("police")
    assert instance.key.startswith(f"HS-01|{instance.start_ms}|{instance.end_ms}|")
    anyone = window_instance("HS-01", window("14:00", "20:00"), date(2026, 11, 22), LONDON)
    assert anyone is not None and anyone.eligible("security")


def test_other_timezone() -> None:
    w = window("14:00", "20:00")
    assert day_instances(w, "2026-11-22", "America/New_York")[1] == (
        "2026-11-22T19:00:00.000Z",
        "2026-11-23T01:00:00.000Z",
    )


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=23),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=1, max_value=23 * 60 + 59),
    st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31)),
)
def test_every_instance_starts_on_its_local_date_and_lasts_its_wall_length(
    hour: int, minute: int, length_min: int, day: date
) -> None:
    start = time(hour, minute)
    end_dt = datetime.combine(day, start) + timedelta(minutes=length_min)
    w = Window(DAILY, start, end_dt.time(), 10.0)
    instance = window_instance("HS-01", w, day, LONDON)
    if instance is None:
        return
    local_start = datetime.fromtimestamp(instance.start_ms / 1000, UTC).astimezone(ZoneInfo(LONDON))
    assert local_start.date() == day
    # Wall length, give or take one clock change.
    assert abs(instance.end_ms - instance.start_ms - length_min * 60_000) <= HOUR


# -- assignments ------------------------------------------------------------------------------


def test_parse_assignment() -> None:
    hotspot_id, w = parse_assignment(
        {
            "hotspot_id": "HS-03",
            "days": ["mon", "wed"],
            "start": "14:00",
            "end": "14:15",
            "required_minutes": 15,
            "unit_types": ["police"],
        }
    )
    assert hotspot_id == "HS-03"
    assert w == Window(frozenset({0, 2}), time(14), time(14, 15), 15.0, 0.0, frozenset({"police"}))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([1, 2], "not a JSON object"),
        ({"start": "14:00", "end": "15:00", "required_minutes": 5}, "hotspot_id"),
        ({"hotspot_id": 3, "start": "14:00", "end": "15:00", "required_minutes": 5}, "hotspot_id"),
        ({"hotspot_id": "HS-01", "start": "25:00", "end": "15:00", "required_minutes": 5}, "start"),
        ({"hotspot_id": "HS-01", "start": "14:00", "end": "15:00"}, "required_minutes"),
        ({"hotspot_id": "HS-01", "start": "14:00", "end": "15:00", "required_minutes": 0}, "> 0"),
        (
            {"hotspot_id": "HS-99", "start": "14:00", "end": "15:00", "required_minutes": 5},
            "unknown",
        ),
    ],
)
def test_malformed_assignment_is_refused_with_one_line(value: object, reason: str) -> None:
    with pytest.raises(InvalidAssignment) as info:
        parse_assignment(value, known_hotspots={"HS-01"})
    message = str(info.value)
    assert reason in message
    assert "\n" not in message


def test_assignments_join_file_windows_and_identical_ones_are_ignored() -> None:
    file_window = window("14:00", "20:00")
    slot = window("16:00", "16:15", 15, days=frozenset({6}))
    merged = merge_windows(
        {"HS-01": [file_window], "HS-02": []},
        [("HS-01", slot), ("HS-01", slot), ("HS-01", file_window), ("HS-02", slot)],
    )
    assert merged == {"HS-01": (file_window, slot), "HS-02": (slot,)}
    assert add_window(merged["HS-01"], slot) is merged["HS-01"]

    start = ms("2026-11-22T00:00:00+00:00")  # Sunday
    found = instances_between("HS-01", merged["HS-01"], LONDON, start, start + 24 * HOUR)
    assert [(format_ms(i.start_ms), i.required_minutes) for i in found] == [
        ("2026-11-22T14:00:00.000Z", 40.0),
        ("2026-11-22T16:00:00.000Z", 15.0),
    ]
