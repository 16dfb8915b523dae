"""The evaluation's figures on a small data set worked out by hand (``small_case``), exactly."""

from __future__ import annotations

import math
from datetime import date

import pytest

from geofences.errors import InputFileError
from geofences.evaluation.daily import daily
from geofences.evaluation.inputs import (
    local_day_ms,
    parse_costs,
    parse_crimes,
    parse_harm_weights,
    parse_ledger,
)
from geofences.evaluation.summary import daily_record, dosage, residual, summary
from tests.geofences.evaluation.small_case import (
    COLLECTION,
    COSTS,
    CRIMES,
    HARM_WEIGHTS,
    LEDGER,
)

FIRST, LAST = date(2026, 10, 24), date(2026, 10, 26)


@pytest.fixture(scope="module")
def figures():  # type: ignore[no-untyped-def]
    visits = parse_ledger(LEDGER, "ledger.jsonl")
    weights = parse_harm_weights(HARM_WEIGHTS, "harm.csv")
    costs = parse_costs(COSTS, "costs.csv")
    crimes = parse_crimes(CRIMES, "crimes.csv", "Europe/London", weights)
    result = daily(COLLECTION, visits, crimes, FIRST, LAST, costs)
    return visits, costs, result


def test_the_clock_change_day_has_25_hours() -> None:
    lo, hi = local_day_ms(date(2026, 10, 25), "Europe/London")
    assert hi - lo == 25 * 3_600_000


def test_duplicates_are_dropped(figures) -> None:  # type: ignore[no-untyped-def]
    visits, _, _ = figures
    assert [v.event_id for v in visits].count("a1") == 1
    assert len(visits) == 8


def test_daily_rows(figures) -> None:  # type: ignore[no-untyped-def]
    _, _, result = figures
    assert result.unit_types == ["outreach", "pcso", "police", "security"]
    rows = {
        (r["hotspot_id"], r["date"]): r
        for r in (daily_record(x, result.unit_types) for x in result.rows)
    }
    cols = ("unit_minutes", "covered_minutes", "minutes_outreach", "minutes_pcso", "minutes_police",
            "minutes_security", "visits", "units", "windows", "windows_met", "patrol_day",
            "uncosted_minutes", "crimes", "harm", "harm_unknown")  # fmt: skip
    expected = {
        ("A", "2026-10-24"): (30, 30, 0, 0, 30, 0, 1, 1, 1, 1, True, 0, 1, 120, 0),
        ("A", "2026-10-25"): (44, 40, 40, 0, 4, 0, 2, 2, 1, 0, False, 0, 1, 365, 0),
        ("A", "2026-10-26"): (30, 30, 0, 0, 20, 10, 2, 2, 1, 1, True, 10, 0, 0, 0),
        # across midnight: 10 minutes on Saturday, 20 on Sunday; no window: 15 minutes make a day
        ("B", "2026-10-24"): (10, 10, 0, 10, 0, 0, 1, 1, 0, 0, False, 0, 0, 0, 0),
        ("B", "2026-10-25"): (20, 20, 0, 20, 0, 0, 1, 1, 0, 0, True, 0, 1, 365, 0),
        ("B", "2026-10-26"): (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, False, 0, 1, 0, 1),
        # Saturday's 22:00-02:00 window is met by Sunday's early visit
        ("C", "2026-10-24"): (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, True, 0, 0, 0, 0),
        ("C", "2026-10-25"): (40, 40, 40, 0, 0, 0, 1, 1, 1, 0, False, 0, 0, 0, 0),
        ("C", "2026-10-26"): (0, 0, 0, 0, 0, 0, 0, 0, 1, 0, False, 0, 1, 5, 0),
    }
    assert list(rows) == list(expected)
    for key, values in expected.items():
        assert tuple(rows[key][c] for c in cols) == values, key
    costs = {key: rows[key]["cost_gbp"] for key in rows}
    assert costs[("A", "2026-10-24")] == pytest.approx(30 * 3.38, abs=1e-12)
    assert costs[("A", "2026-10-25")] == pytest.approx(40 * 2.28 + 4 * 3.38, abs=1e-12)
    assert costs[("A", "2026-10-26")] == pytest.approx(20 * 3.38, abs=1e-12)
    assert costs[("B", "2026-10-25")] == pytest.approx(20 * 2.5, abs=1e-12)
    assert result.unknown_hotspots == {"HS-X": 1}
    assert (result.crimes_outside, result.crimes_off_dates) == (1, 1)


def test_summary(figures) -> None:  # type: ignore[no-untyped-def]
    _, costs, result = figures
    records = {r["hotspot_id"]: r for r in summary(result.rows, result.unit_types, costs)}
    a = records["A"]
    assert (a["patrol_days"], a["non_patrol_days"], a["crimes_patrol"], a["crimes_non_patrol"]) == (
        2,
        1,
        1,
        1,
    )
    assert (a["crimes_per_day_patrol"], a["crimes_per_day_non_patrol"]) == (0.5, 1.0)
    assert a["rate_ratio"] == 0.5 and a["change_pct"] == -50.0
    # Clopper-Pearson for 1 of 2: [1 - sqrt(.975), sqrt(.975)], times d0/d1 = 1/2 as odds
    root = math.sqrt(0.975)
    assert a["ci_low"] == pytest.approx((1 - root) / root / 2, rel=1e-9)
    assert a["ci_high"] == pytest.approx(root / (1 - root) / 2, rel=1e-9)
    assert (a["harm_per_day_patrol"], a["harm_per_day_non_patrol"]) == (60.0, 365.0)
    assert a["harm_change_pct"] == pytest.approx((60 / 365 - 1) * 100, rel=1e-12)
    assert a["unit_minutes"] == 104 and a["uncosted_minutes"] == 10
    assert a["minutes_security"] == 10 and a["cost_security"] is None
    assert a["cost_gbp"] == pytest.approx(54 * 3.38 + 40 * 2.28, abs=1e-9)
    assert a["cost_per_patrol_day"] == pytest.approx((54 * 3.38 + 40 * 2.28) / 2, abs=1e-9)
    b = records["B"]
    # no crime on B's one patrol day: the ratio and its lower bound are undefined, not 0
    assert (b["crimes_patrol"], b["crimes_non_patrol"]) == (1, 1)
    c = records["C"]
    assert (c["crimes_patrol"], c["crimes_non_patrol"]) == (0, 1)
    assert c["rate_ratio"] is None and c["change_pct"] is None and c["ci_low"] is None
    assert c["ci_high"] == pytest.approx(0.975 / 0.025 * 2 / 1, rel=1e-9)
    assert c["harm_change_pct"] is None
    every = records["ALL"]
    assert (every["patrol_days"], every["non_patrol_days"]) == (4, 5)
    assert (every["crimes_patrol"], every["crimes_non_patrol"]) == (2, 3)
    assert every["rate_ratio"] == pytest.approx((2 / 4) / (3 / 5), rel=1e-12)
    assert every["harm_unknown"] == 1


def test_residual(figures) -> None:  # type: ignore[no-untyped-def]
    _, _, result = figures
    got = {
        (r["hotspot_id"], r["days_since_patrol"]): (r["days"], r["crimes"], r["crimes_per_day"])
        for r in residual(result.rows)
    }
    assert got[("A", "1")] == (1, 1, 1.0)
    assert got[("B", "none")] == (1, 0, 0.0)
    assert got[("B", "1")] == (1, 1, 1.0)
    assert got[("C", "1")] == (1, 0, 0.0)
    assert got[("C", "2")] == (1, 1, 1.0)
    assert got[("ALL", "1")] == (3, 2, 2 / 3)
    assert got[("ALL", "2")] == (1, 1, 1.0)
    assert got[("ALL", "3")] == (0, 0, None)
    assert got[("ALL", "4+")] == (0, 0, None)
    assert got[("ALL", "none")] == (1, 0, 0.0)


def test_dosage(figures) -> None:  # type: ignore[no-untyped-def]
    visits, _, _ = figures
    known = [v for v in visits if v.hotspot_id != "HS-X"]
    records = {r["hotspot_id"]: r for r in dosage(["A", "B", "C"], known)}
    a = records["A"]  # 4, 10, 20, 30, 40 minutes
    assert (a["visits"], a["median_minutes"]) == (5, 20.0)
    assert (a["share_under_5"], a["share_5_to_10"], a["share_10_to_15"], a["share_over_15"]) == (
        0.2,
        0.0,
        0.2,
        0.6,
    )
    assert records["ALL"]["visits"] == 7
    assert records["ALL"]["median_minutes"] == 30.0


def test_bad_rows_are_refused_with_file_line_and_reason() -> None:
    text = "occurred_at,lat,lon,crime_type\n2026-10-24T15:00:00Z,51,0,theft\nyesterday,51,0,theft\n2026-10-24T15:00:00Z,95,0,theft\n2026-10-24T15:00:00Z,51,0,\n"
    with pytest.raises(InputFileError) as caught:
        parse_crimes(text, "crimes.csv", "Europe/London")
    assert caught.value.problems == [
        "crimes.csv:3: occurred_at: not an ISO 8601 date and time: 'yesterday'",
        "crimes.csv:4: lat: out of range: 95",
        "crimes.csv:5: crime_type empty",
    ]
    with pytest.raises(InputFileError) as caught:
        parse_costs("unit_type,gbp_per_minute\npolice,-1\npolice,2\npolice,3\n", "costs.csv")
    assert caught.value.problems == [
        "costs.csv:2: gbp_per_minute: must be 0 or more, not -1",
        "costs.csv:4: unit_type 'police' given twice",
    ]
    with pytest.raises(InputFileError) as caught:
        parse_harm_weights("type,harm\n", "harm.csv")
    assert caught.value.problems == ["harm.csv:1: header lacks crime_type"]
    with pytest.raises(InputFileError) as caught:
        parse_ledger('{"event_id":"e"}\nnot json\n', "ledger.jsonl")
    assert caught.value.problems[0] == "ledger.jsonl:1: enter_ts: missing or empty"
    assert caught.value.problems[1].startswith("ledger.jsonl:2: not JSON")
