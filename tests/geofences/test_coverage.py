"""The coverage ledger: coverage, met, at_risk, gap and co_patrol (docs/interface.md, Semantics:
windows, coverage and alerts)."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from geofences.coverage import (
    Alert,
    CoverageSettings,
    HotspotCoverage,
    render_text,
    union_length,
)
from geofences.hotspots import Window
from geofences.windows import instances_between

LONDON = "Europe/London"
DAILY = frozenset(range(7))
MIN = 60_000
DAY = "2026-11-22"  # a Sunday in winter: London local time is UTC


def at(hhmm: str, day: str = DAY) -> int:
    """Epoch ms of a UTC wall time like ``14:05`` or ``14:05:30.250``."""
    return int(datetime.fromisoformat(f"{day}T{hhmm}+00:00").timestamp() * 1000)


def window(start: str = "14:00", end: str = "20:00", required: float = 40.0, **kw: Any) -> Window:
    days = kw.pop("days", DAILY)
    return Window(days, time.fromisoformat(start), time.fromisoformat(end), required, **kw)


def ledger(*windows: Window, **kw: Any) -> HotspotCoverage:
    return HotspotCoverage("HS-03", list(windows) or [window()], LONDON, CoverageSettings(**kw))


def visit(cov: HotspotCoverage, unit: str, kind: str, enter: int, exit_: int | None) -> None:
    """A whole visit: enter, inside pings every 10 s, and an exit unless ``exit_`` is None."""
    cov.visit_started(unit, kind, enter)
    if exit_ is None:
        return
    for t in range(enter + 10_000, exit_, 10_000):
        cov.visit_progress(unit, t)
    cov.visit_ended(unit, exit_)


def kinds(alerts: list[Alert]) -> list[str]:
    return [a.type for a in alerts]


def restored(cov: HotspotCoverage, *windows: Window) -> HotspotCoverage:
    data = orjson.loads(orjson.dumps(cov.to_dict()))
    return HotspotCoverage.from_dict(data, list(windows) or [window()], LONDON, cov.settings)


def only_instance(cov: HotspotCoverage, w: Window | None = None) -> Any:
    found = instances_between("HS-03", [w or window()], LONDON, at("14:00"), at("15:00"))
    assert len(found) == 1
    return found[0]


# -- coverage ---------------------------------------------------------------------------------


def test_two_officers_at_once_count_once() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:30"))
    visit(cov, "P2", "police", at("14:10"), at("14:35"))
    cov.advance(at("14:40"))
    assert cov.covered_ms(only_instance(cov)) == 35 * MIN


def test_visit_is_clipped_to_the_window() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("13:30"), at("14:20"))
    visit(cov, "P2", "police", at("19:50"), at("20:30"))
    cov.advance(at("20:30"))
    assert cov.covered_ms(only_instance(cov)) == 30 * MIN


def test_ineligible_unit_types_earn_nothing() -> None:
    w = window(unit_types=frozenset({"outreach"}))
    cov = ledger(w)
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:30"))
    visit(cov, "O1", "outreach", at("15:00"), at("15:10"))
    cov.advance(at("16:00"))
    assert cov.covered_ms(only_instance(cov, w)) == 10 * MIN


def test_completed_visit_shorter_than_min_visit_is_excluded() -> None:
    w = window(min_visit_minutes=5)
    cov = ledger(w)
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:04:59.999"))
    visit(cov, "P2", "police", at("15:00"), at("15:05"))
    cov.advance(at("16:00"))
    assert cov.covered_ms(only_instance(cov, w)) == 5 * MIN


def test_min_visit_counts_the_whole_visit_not_the_clipped_part() -> None:
    w = window(min_visit_minutes=5)
    cov = ledger(w)
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("13:50"), at("14:02"))
    cov.advance(at("14:10"))
    assert cov.covered_ms(only_instance(cov, w)) == 2 * MIN


def test_ongoing_visit_counts_once_it_reaches_min_visit() -> None:
    w = window(min_visit_minutes=5)
    cov = ledger(w)
    cov.advance(at("13:00"))
    cov.visit_started("P1", "police", at("14:00"))
    cov.visit_progress("P1", at("14:04:59.999"))
    cov.advance(at("14:06"))
    assert cov.covered_ms(only_instance(cov, w)) == 0
    cov.visit_progress("P1", at("14:05"))
    cov.advance(at("14:06"))
    assert cov.covered_ms(only_instance(cov, w)) == 5 * MIN


def test_ongoing_visit_counts_only_up_to_the_latest_inside_ping() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    cov.visit_started("P1", "police", at("14:00"))
    cov.visit_progress("P1", at("14:12"))
    cov.advance(at("19:00"))  # the tracker went silent: the clock earns nothing
    assert cov.covered_ms(only_instance(cov)) == 12 * MIN


def test_midnight_crossing_window_counts_across_midnight() -> None:
    night = window("23:30", "00:30", 45)
    cov = ledger(night)
    cov.advance(at("23:00"))
    assert cov.next_wakeup_ms() == at("23:30")  # 60 min long, 45 required, 15 lead
    cov.visit_started("P1", "police", at("23:25"))
    assert cov.advance(at("23:30")) == []  # present: not at risk
    for t in range(at("23:30:10"), at("00:10", "2026-11-23"), 10_000):
        cov.visit_progress("P1", t)
    cov.visit_ended("P1", at("00:10", "2026-11-23"))
    # 40 of 45 done, 20 min left and nobody there: end - now <= 5 + 15.
    assert kinds(cov.advance(at("00:10", "2026-11-23"))) == ["at_risk"]
    cov.visit_started("P1", "police", at("00:21", "2026-11-23"))
    cov.visit_progress("P1", at("00:26", "2026-11-23"))
    (met,) = cov.advance(at("00:26", "2026-11-23"))
    assert met.type == "met"
    assert met.to_json_dict()["window_start"] == "2026-11-22T23:30:00.000Z"
    assert met.to_json_dict()["window_end"] == "2026-11-23T00:30:00.000Z"
    assert met.covered_minutes == 45


def test_clock_change_day_window_bounds_and_coverage() -> None:
    day = "2026-03-29"
    cov = ledger()
    cov.advance(at("12:00", day))
    visit(cov, "P1", "police", at("12:30", day), at("13:10", day))  # 13:30-14:10 BST
    alerts = cov.advance(at("19:01:00.001", day))
    assert kinds(alerts) == ["gap"]
    body = alerts[0].to_json_dict()
    assert body["window_start"] == "2026-03-29T13:00:00.000Z"
    assert body["window_end"] == "2026-03-29T19:00:00.000Z"
    assert body["covered_minutes"] == 10


# -- met --------------------------------------------------------------------------------------


def test_met_fires_exactly_when_coverage_reaches_required_and_once() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    cov.visit_started("P1", "police", at("14:00"))
    cov.visit_progress("P1", at("14:39:59.999"))
    assert cov.advance(at("14:40")) == []
    cov.visit_progress("P1", at("14:40"))
    (met,) = cov.advance(at("14:40"))
    assert (met.type, met.covered_minutes, met.ts_ms) == ("met", 40.0, at("14:40"))
    cov.visit_progress("P1", at("14:50"))
    assert cov.advance(at("14:50")) == []
    assert restored(cov).advance(at("14:51")) == []
    assert cov.advance(at("21:00")) == []  # met excludes gap


def test_met_decided_after_the_window_from_late_updates_excludes_gap() -> None:
    cov = ledger(window("14:00", "14:30", 20))
    cov.advance(at("13:59"))
    assert kinds(cov.advance(at("14:05"))) == ["at_risk"]
    visit(cov, "P1", "police", at("14:05"), at("14:29"))  # arrives late, after the window
    (met,) = cov.advance(at("14:30:30"))
    assert (met.type, met.covered_minutes) == ("met", 24)
    assert cov.advance(at("15:00")) == []


# -- at_risk ----------------------------------------------------------------------------------


def test_at_risk_fires_at_its_boundary_once_and_not_after_restart() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:12"))
    cov.advance(at("14:15"))
    # end - now <= (40 - 12) + 15 min  <=>  now >= 20:00 - 43 min = 19:17
    assert cov.next_wakeup_ms() == at("19:17")
    assert cov.advance(at("19:16:59.999")) == []
    (risk,) = cov.advance(at("19:17"))
    assert (risk.type, risk.covered_minutes, risk.required_minutes) == ("at_risk", 12, 40)
    assert cov.advance(at("19:18")) == []
    assert restored(cov).advance(at("19:19")) == []
    assert cov.next_wakeup_ms() == at("20:01:00.001")


def test_at_risk_at_window_start_when_the_window_is_too_short_to_wait() -> None:
    cov = ledger(window("14:00", "14:15", 15))
    cov.advance(at("13:00"))
    assert cov.next_wakeup_ms() == at("14:00")
    assert cov.advance(at("13:59:59.999")) == []
    assert kinds(cov.advance(at("14:00"))) == ["at_risk"]


def test_at_risk_not_while_an_eligible_unit_is_present() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    cov.visit_started("P1", "police", at("19:00"))
    assert cov.advance(at("19:10")) == []
    assert cov.next_wakeup_ms() == at("20:01:00.001")
    cov.visit_ended("P1", at("19:10"))
    assert cov.advance(at("19:11")) == []
    assert cov.next_wakeup_ms() == at("19:15")  # 20:00 - (40 - 10) - 15
    (risk,) = cov.advance(at("19:15"))
    assert (risk.type, risk.covered_minutes) == ("at_risk", 10)


def test_at_risk_fires_at_once_when_the_last_unit_leaves_after_it_was_due() -> None:
    """An exit is not a full look (``_unit_left``): at_risk, due since 14:40 (15:00 - (20 - 15)
    - 15) but held off by the unit present, fires at the first clock after the unit leaves,
    though the exit lengthened the visit too little to look at every rule."""
    cov = ledger(window("14:00", "15:00", 20))
    cov.advance(at("13:00"))
    cov.visit_started("P1", "police", at("14:30"))
    for minute in range(31, 46):
        cov.visit_progress("P1", at(f"14:{minute}"))
        assert cov.advance(at(f"14:{minute}")) == []  # present: no at_risk
    cov.visit_ended("P1", at("14:45:30"))
    assert cov.next_wakeup_ms() == at("14:45")
    (risk,) = cov.advance(at("14:45:30"))
    assert (risk.type, risk.ts_ms, risk.covered_minutes) == ("at_risk", at("14:45:30"), 15.5)


def test_at_risk_fires_while_only_an_ineligible_unit_is_present() -> None:
    cov = ledger(window(unit_types=frozenset({"police", "pcso"})))
    cov.advance(at("13:00"))
    cov.visit_started("O1", "outreach", at("19:00"))
    cov.visit_progress("O1", at("19:05"))
    assert kinds(cov.advance(at("19:05"))) == ["at_risk"]


def test_at_risk_needs_the_clock_inside_the_window() -> None:
    cov = ledger(window("14:00", "14:15", 15))
    cov.advance(at("13:00"))
    assert kinds(cov.advance(at("14:15:30"))) == []
    assert kinds(cov.advance(at("14:16:00.001"))) == ["gap"]


def test_at_risk_then_saved_then_met() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    assert kinds(cov.advance(at("19:05"))) == ["at_risk"]
    visit(cov, "P1", "police", at("19:10"), at("19:50"))
    assert kinds(cov.advance(at("19:50"))) == ["met"]
    assert cov.advance(at("21:00")) == []


# -- gap --------------------------------------------------------------------------------------


def test_gap_fires_just_after_end_plus_grace_once_and_not_after_restart() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:25:30"))
    alerts = cov.advance(at("19:30:30"))
    assert kinds(alerts) == ["at_risk"]
    assert cov.advance(at("20:01")) == []
    (gap,) = cov.advance(at("20:01:00.001"))
    body = gap.to_json_dict()
    assert body["type"] == "gap"
    assert body["covered_minutes"] == 25.5
    assert body["ts"] == "2026-11-22T20:01:00.001Z"
    assert cov.advance(at("20:30")) == []
    assert restored(cov).advance(at("20:31")) == []


def test_restart_between_end_and_gap_still_gaps_once() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    cov.advance(at("20:00:30"))
    again = restored(cov)
    assert kinds(again.advance(at("23:00"))) == ["gap"]
    assert again.advance(at("23:01")) == []


def test_gap_when_every_tracker_goes_silent() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    cov.visit_started("P1", "police", at("14:00"))
    cov.visit_progress("P1", at("14:07"))
    # No updates at all from here on, only the clock (the unit is still "present").
    alerts: list[Alert] = []
    t = at("14:10")
    while t <= at("21:00"):
        alerts += cov.advance(t)
        t += 60_000
    assert kinds(alerts) == ["gap"]
    assert alerts[0].covered_minutes == 7


def test_instances_before_the_first_clock_are_not_alerted() -> None:
    cov = ledger()
    assert cov.advance(at("20:01:00.001")) == []
    cov2 = ledger()
    assert cov2.advance(at("20:01")) == []
    assert kinds(cov2.advance(at("20:01:00.001"))) == ["gap"]


def test_window_open_at_the_first_clock_counts_earlier_visits() -> None:
    cov = ledger()
    visit(cov, "P1", "police", at("14:00"), at("14:30"))
    cov.advance(at("15:00"))
    visit(cov, "P1", "police", at("15:00"), at("15:10"))
    assert kinds(cov.advance(at("15:10"))) == ["met"]


def test_nothing_due_is_cheap_and_wakeup_moves_on() -> None:
    cov = ledger()
    assert cov.next_wakeup_ms() == 0
    cov.advance(at("10:00"))
    assert cov.next_wakeup_ms() == at("19:05")
    cov.visit_started("P1", "police", at("10:30"))
    # a unit arriving cannot make anything fire sooner: the ledger need not look again
    assert cov.next_wakeup_ms() == at("19:05")
    cov.advance(at("10:30"))
    assert cov.next_wakeup_ms() == at("19:05")
    cov.visit_ended("P1", at("10:40"))
    assert cov.next_wakeup_ms() == at("10:30")
    cov.advance(at("10:41"))
    assert cov.next_wakeup_ms() == at("19:05")
    assert kinds(cov.advance(at("20:01:00.001"))) == ["gap"]
    assert cov.next_wakeup_ms() == at("19:05", "2026-11-23")


def test_clock_going_back_is_ignored() -> None:
    cov = ledger()
    cov.advance(at("19:06"))
    assert cov.advance(at("19:00")) == []
    assert cov.now_ms == at("19:06")


# -- idempotency, alert ids, snapshot ---------------------------------------------------------


def test_redelivered_updates_change_nothing() -> None:
    def run(times: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        cov = ledger()
        cov.advance(at("13:00"))
        out: list[Alert] = []
        for _ in range(times):
            visit(cov, "P1", "police", at("14:00"), at("14:20"))
            cov.visit_started("P2", "police", at("14:10"))
            cov.visit_progress("P2", at("14:30"))
            out += cov.advance(at("14:30"))
        out += cov.advance(at("19:20"))
        return [a.to_json_dict() for a in out], cov.to_dict()

    assert run(1) == run(3)


def test_stale_start_after_a_newer_visit_is_ignored() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:10"))
    cov.visit_started("P1", "police", at("14:20"))
    cov.visit_started("P1", "police", at("14:00"))
    cov.visit_started("P1", "police", at("13:50"))
    assert cov.present_units() == {"P1": "police"}
    assert [v[2] for v in cov.to_dict()["visits"]] == [at("14:00"), at("14:20")]


def test_whole_visit_from_a_dwell_without_its_start() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    cov.visit_ended("P1", at("14:30"), enter_ms=at("14:00"), unit_type="police")
    cov.visit_ended("P1", at("14:30"), enter_ms=at("14:00"), unit_type="police")
    cov.advance(at("14:30"))
    assert cov.covered_ms(only_instance(cov)) == 30 * MIN


def test_alert_ids_are_deterministic_and_distinct() -> None:
    def run() -> list[str]:
        cov = ledger()
        cov.advance(at("13:00"))
        ids = [a.alert_id for a in cov.advance(at("19:05"))]
        return ids + [a.alert_id for a in cov.advance(at("20:02"))]

    first, second = run(), run()
    assert first == second
    assert len(set(first)) == 2


def test_alert_json_is_the_documented_shape() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:00:20"))
    (risk,) = cov.advance(at("19:06"))
    body = risk.to_json_dict()
    assert body == {
        "alert_id": risk.alert_id,
        "type": "at_risk",
        "hotspot_id": "HS-03",
        "window_start": "2026-11-22T14:00:00.000Z",
        "window_end": "2026-11-22T20:00:00.000Z",
        "required_minutes": 40.0,
        "covered_minutes": 0.33,
        "ts": "2026-11-22T19:06:00.000Z",
    }
    assert Alert.from_json_dict(orjson.loads(orjson.dumps(body))).to_json_dict() == body


def test_snapshot_is_plain_json_and_round_trips() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:20"))
    visit(cov, "O1", "outreach", at("14:05"), at("14:15"))
    cov.visit_started("P2", "pcso", at("14:30"))
    cov.visit_progress("P2", at("14:31"))
    cov.advance(at("19:30"))
    data = cov.to_dict()
    assert orjson.loads(orjson.dumps(data)) == data
    assert restored(cov).to_dict() == data
    assert set(data) == {"v", "hotspot_id", "now_ms", "since_ms", "visits", "fired"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["start", "progress", "end", "advance"]),
            st.sampled_from(["P1", "P2", "O1"]),
            st.integers(min_value=0, max_value=600),
        ),
        max_size=40,
    )
)
def test_changes_rebuild_the_ledger(steps: list[tuple[str, str, int]]) -> None:
    """Keeping only what ``take_changes`` reports (the header, as ``to_dict`` without visits,
    when it changed; rows by key; removed ones deleted) always rebuilds the same ledger,
    whenever it is called: the header's clock may be behind (a clock alone is no change), and
    from the current clock on both decide the same. A visit reported removed was reported
    before."""
    cov = ledger(visit_retention_minutes=60)
    cov.advance(at("13:00"))
    stored: dict[tuple[str, int], list[Any]] = {}
    header: dict[str, Any] = {}

    def take() -> None:
        nonlocal header
        changed_header, changed, removed = cov.take_changes()
        if changed_header:
            header = cov.to_dict(with_visits=False)
        stored.update(((row[0], row[2]), row) for row in changed)
        for key in removed:
            del stored[key]

    for number, (kind, unit, minute) in enumerate(steps):
        t = at("13:00") + minute * 60_000
        if kind == "start":
            cov.visit_started(unit, "outreach" if unit == "O1" else "police", t)
        elif kind == "progress":
            cov.visit_progress(unit, t)
        elif kind == "end":
            cov.visit_ended(unit, t)
        else:
            cov.advance(t)
        if number % 3 == 0:
            take()
    take()
    assert not cov.has_changes
    assert cov.take_changes() == (False, [], []), "an unchanged part is reported again"
    rows = sorted(stored.values(), key=lambda r: (r[2], r[0]))
    rebuilt = HotspotCoverage.from_dict(
        {**header, "visits": rows}, [window()], LONDON, cov.settings
    )
    assert cov.now_ms is not None and rebuilt.now_ms is not None
    assert rebuilt.now_ms <= cov.now_ms
    assert {**rebuilt.to_dict(), "now_ms": cov.now_ms} == cov.to_dict()
    for later in (0, 30 * MIN, 12 * 60 * MIN):
        assert rebuilt.advance(cov.now_ms + later) == cov.advance(cov.now_ms + later)


def test_snapshot_of_another_version_is_refused() -> None:
    data = ledger().to_dict()
    with pytest.raises(ValueError, match="version"):
        HotspotCoverage.from_dict({**data, "v": 99}, [window()], LONDON)
    with pytest.raises(ValueError, match="malformed"):
        HotspotCoverage.from_dict({"v": 1}, [window()], LONDON)


def test_state_stays_bounded_over_weeks() -> None:
    cov = ledger(window("14:00", "20:00"), window("08:00", "09:00", 10))
    start = at("00:00")
    alerts = 0
    for day in range(30):
        base = start + day * 86_400_000
        for k in range(20):
            enter = base + 14 * 3_600_000 + k * 10 * MIN
            visit(cov, f"P{k % 3}", "police", enter, enter + 5 * MIN)
        for hour in range(24):
            alerts += len(cov.advance(base + hour * 3_600_000 + 1))
    data = cov.to_dict()
    assert len(data["visits"]) <= 40  # at most a day of retention and a day's visits
    assert {s: len(v) for s, v in cov._visits_of_service.items()} == {0: len(data["visits"])}
    assert len(data["fired"]) <= 4
    assert alerts > 30


# -- assignments ------------------------------------------------------------------------------


def test_assignment_added_mid_window_counts_visits_already_made() -> None:
    file_window = window("08:00", "09:00", 10)
    slot = window("14:00", "14:30", 15)
    cov = ledger(file_window)
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:16"))
    assert cov.advance(at("14:16")) == []
    cov.set_windows([file_window, slot])
    (met,) = cov.advance(at("14:17"))
    assert (met.type, met.window_start_ms, met.required_minutes) == ("met", at("14:00"), 15.0)
    cov.set_windows([file_window, slot, slot])
    assert cov.advance(at("14:18")) == []


def test_assignment_for_a_settled_window_is_not_alerted() -> None:
    cov = ledger(window("08:00", "09:00", 10))
    cov.advance(at("13:00"))
    cov.set_windows([window("08:00", "09:00", 10), window("10:00", "11:00", 10)])
    assert cov.advance(at("13:01")) == []


# -- co_patrol --------------------------------------------------------------------------------


def test_co_patrol_fires_for_more_than_the_limit_once() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    cov.visit_started("P1", "police", at("14:00"))
    cov.visit_started("O1", "outreach", at("14:02"))
    cov.visit_progress("P1", at("14:07"))
    cov.visit_progress("O1", at("14:07"))
    assert cov.advance(at("14:07")) == []  # exactly 5 min together: not more
    cov.visit_progress("P1", at("14:07:00.001"))
    assert cov.advance(at("14:07")) == []  # the outreach worker's fix is still 14:07
    cov.visit_progress("O1", at("14:08"))
    (alert,) = cov.advance(at("14:08"))
    body = alert.to_json_dict()
    assert body["type"] == "co_patrol"
    assert body["unit_ids"] == ["O1", "P1"]
    assert body["unit_types"] == ["outreach", "police"]
    for key in ("window_start", "window_end", "required_minutes", "covered_minutes"):
        assert body[key] is None
    cov.visit_progress("O1", at("14:20"))
    cov.visit_progress("P1", at("14:20"))
    assert cov.advance(at("14:20")) == []
    assert restored(cov).advance(at("14:21")) == []


def test_co_patrol_id_is_stable_and_new_visit_pair_fires_again() -> None:
    def run() -> list[Alert]:
        cov = ledger()
        cov.advance(at("13:00"))
        visit(cov, "P1", "police", at("14:00"), at("14:10"))
        visit(cov, "O1", "outreach", at("14:00"), at("14:10"))
        out = cov.advance(at("14:10"))
        visit(cov, "P1", "police", at("15:00"), at("15:10"))
        visit(cov, "O1", "outreach", at("15:00"), at("15:10"))
        return out + cov.advance(at("15:10"))

    first, second = run(), run()
    assert kinds(first) == ["co_patrol", "co_patrol"]
    assert [a.alert_id for a in first] == [a.alert_id for a in second]
    assert first[0].alert_id != first[1].alert_id


def test_no_co_patrol_within_a_service_or_for_unlisted_types() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:30"))
    visit(cov, "C1", "pcso", at("14:00"), at("14:30"))
    visit(cov, "S1", "security", at("14:00"), at("14:30"))
    visit(cov, "U1", "unknown", at("14:00"), at("14:30"))
    assert "co_patrol" not in kinds(cov.advance(at("14:30")))


def test_co_patrol_from_out_of_order_updates_across_units() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:30"))
    cov.advance(at("14:30"))
    visit(cov, "O1", "outreach", at("14:10"), at("14:20"))  # arrives late
    assert kinds(cov.advance(at("14:31"))) == ["co_patrol"]


# -- rendering --------------------------------------------------------------------------------


def test_render_text() -> None:
    cov = ledger()
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:12"))
    (risk,) = cov.advance(at("19:17"))
    assert render_text(risk, "Clock Tower", LONDON) == (
        "HS-03 Clock Tower: at risk — 12 of 40 min done, window ends 20:00"
    )
    (gap,) = cov.advance(at("20:02"))
    assert render_text(gap, "Clock Tower", LONDON) == (
        "HS-03 Clock Tower: gap — only 12 of 40 min done, window 14:00-20:00 on Sun 22 Nov missed"
    )
    summer = ledger()
    summer.advance(at("12:00", "2026-07-01"))
    visit(summer, "P1", "police", at("13:00", "2026-07-01"), at("13:40:30", "2026-07-01"))
    (met,) = summer.advance(at("13:41", "2026-07-01"))
    assert (
        render_text(met, "HS-03", LONDON) == "HS-03: met — 40.5 of 40 min done, window 14:00-20:00"
    )
    visit(summer, "P1", "police", at("14:00", "2026-07-01"), at("14:10", "2026-07-01"))
    visit(summer, "O1", "outreach", at("14:00", "2026-07-01"), at("14:10", "2026-07-01"))
    (co,) = summer.advance(at("14:10", "2026-07-01"))
    assert render_text(co, "Clock Tower", LONDON) == (
        "HS-03 Clock Tower: co-patrol — O1 (outreach) and P1 (police) patrolling together at 15:10"
    )


# -- properties -------------------------------------------------------------------------------

intervals = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(intervals, st.integers(0, 150), st.integers(0, 150))
def test_union_length_matches_a_brute_force_measure(
    spans: list[tuple[int, int]], lo: int, width: int
) -> None:
    hi = lo + width
    covered = {t for a, b in spans for t in range(max(a, lo), min(b, hi))}
    length = union_length(spans, lo, hi)
    assert length == len(covered)
    assert length <= hi - lo
    assert length <= sum(b - a for a, b in spans)
    assert union_length(list(reversed(spans)), lo, hi) == length
    assert union_length(spans + spans, lo, hi) == length


UNITS = [("P1", "police"), ("P2", "pcso"), ("O1", "outreach"), ("S1", "security")]


@st.composite
def days_of_updates(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """A random afternoon of in-order presence updates per unit, interleaved with clock steps."""
    streams: list[list[tuple[int, tuple[str, Any]]]] = []
    for unit, kind in UNITS:
        t = at("13:30") + draw(st.integers(0, 60)) * MIN
        events: list[tuple[int, tuple[str, Any]]] = []
        for _ in range(draw(st.integers(0, 4))):
            enter = t
            events.append((enter, ("start", (unit, kind, enter))))
            for _ in range(draw(st.integers(0, 4))):
                t += draw(st.integers(1, 20)) * MIN
                events.append((t, ("progress", (unit, t))))
            t += draw(st.integers(0, 3)) * MIN
            events.append((t, ("end", (unit, t))))
            t += draw(st.integers(1, 90)) * MIN
        streams.append(events)
    return merged_with_clock(
        streams, lambda ts: ts + draw(st.integers(0, 5)) * MIN if draw(st.booleans()) else None
    )


def merged_with_clock(
    streams: list[list[tuple[int, tuple[str, Any]]]], clock_after: Any
) -> list[tuple[str, Any]]:
    """The units' updates in ts order, each followed by a clock step when ``clock_after(ts)``
    gives one, and the clock at 23:00 last."""
    merged = sorted((e for s in streams for e in s), key=lambda e: e[0])
    out: list[tuple[str, Any]] = []
    for ts, event in merged:
        out.append(event)
        clock = clock_after(ts)
        if clock is not None:
            out.append(("clock", clock))
    out.append(("clock", at("23:00")))
    return out


def apply(cov: HotspotCoverage, event: tuple[str, Any], clock: list[int]) -> list[Alert]:
    name, args = event
    if name == "start":
        cov.visit_started(*args)
    elif name == "progress":
        cov.visit_progress(*args)
    elif name == "end":
        cov.visit_ended(*args)
    else:
        clock[0] = max(clock[0], args)
        return cov.advance(clock[0])
    return []


def at_minute(minute: int) -> int:
    """Epoch ms of 13:30 UTC on the test day, plus ``minute`` minutes."""
    return at("13:30") + minute * 60_000


def windows_for_properties() -> list[Window]:
    return [
        window("14:00", "20:00", 40, min_visit_minutes=3),
        window("15:00", "15:30", 15, unit_types=frozenset({"outreach"})),
    ]


@settings(max_examples=60, deadline=None)
@given(days_of_updates(), st.sets(st.integers(0, 200), max_size=6))
# co_patrol alerts of two pairs decided at once, after a restart: the restored ledger looks at
# every visit, the running one only at those that changed, and the order must not differ
@example(
    updates=[
        ("start", ("P1", "police", at_minute(0))),
        ("start", ("P2", "pcso", at_minute(0))),
        ("start", ("O1", "outreach", at_minute(0))),
        ("progress", ("P1", at_minute(1))),
        ("progress", ("P2", at_minute(1))),
        ("progress", ("O1", at_minute(1))),
        ("progress", ("P1", at_minute(2))),
        ("progress", ("P2", at_minute(2))),
        ("progress", ("O1", at_minute(2))),
        ("end", ("O1", at_minute(2))),
        ("progress", ("P1", at_minute(3))),
        ("progress", ("P2", at_minute(3))),
        ("start", ("O1", "outreach", at_minute(3))),
        ("progress", ("P1", at_minute(4))),
        ("end", ("P1", at_minute(4))),
        ("progress", ("O1", at_minute(4))),
        ("start", ("P1", "police", at_minute(5))),
        ("progress", ("O1", at_minute(5))),
        ("progress", ("P1", at_minute(6))),
        ("progress", ("O1", at_minute(6))),
        ("end", ("O1", at_minute(6))),
        ("progress", ("P1", at_minute(7))),
        ("start", ("O1", "outreach", at_minute(7))),
        ("progress", ("P1", at_minute(8))),
        ("progress", ("O1", at_minute(8))),
        ("progress", ("O1", at_minute(10))),
        ("end", ("O1", at_minute(13))),
        ("start", ("O1", "outreach", at_minute(14))),
        ("clock", at_minute(14)),
        ("end", ("O1", at_minute(14))),
        ("progress", ("P1", at_minute(15))),
        ("end", ("P1", at_minute(15))),
        ("progress", ("P2", at_minute(15))),
        ("end", ("P2", at_minute(15))),
        ("clock", at_minute(570)),
    ],
    restart_at={29},
)
def test_restarts_change_no_alert_and_snapshots_round_trip(
    updates: list[tuple[str, Any]], restart_at: set[int]
) -> None:
    ws = windows_for_properties()
    plain = HotspotCoverage("HS-03", ws, LONDON)
    crashing = HotspotCoverage("HS-03", ws, LONDON)
    clock_a, clock_b = [at("13:00")], [at("13:00")]
    plain.advance(clock_a[0])
    crashing.advance(clock_b[0])
    expected: list[dict[str, Any]] = []
    got: list[dict[str, Any]] = []
    for i, event in enumerate(updates):
        expected += [a.to_json_dict() for a in apply(plain, event, clock_a)]
        got += [a.to_json_dict() for a in apply(crashing, event, clock_b)]
        if i in restart_at:
            data = orjson.loads(orjson.dumps(crashing.to_dict()))
            crashing = HotspotCoverage.from_dict(data, ws, LONDON)
            assert crashing.to_dict() == data
            # Redelivery of the latest update after the restart changes nothing.
            got += [a.to_json_dict() for a in apply(crashing, event, clock_b)]
    assert got == expected

    per_instance: dict[tuple[str, str], list[str]] = {}
    for body in expected:
        if body["type"] != "co_patrol":
            per_instance.setdefault((body["window_start"], body["window_end"]), []).append(
                body["type"]
            )
    for types in per_instance.values():
        assert types in (["met"], ["gap"], ["at_risk", "met"], ["at_risk", "gap"])
    instances = instances_between("HS-03", ws, LONDON, at("13:00"), at("23:00"))
    assert len(per_instance) == len(instances)
    for instance in instances:
        assert plain.covered_ms(instance) <= instance.end_ms - instance.start_ms
    assert len({b["alert_id"] for b in expected}) == len(expected)


class EagerLedger(HotspotCoverage):
    """A ledger that evaluates everything at every ``advance``, and finds co_patrol rivals by
    a plain scan of every visit: what the lazy one must match."""

    def advance(self, now_ms: int) -> list[Alert]:
        self._dirty = True
        return super().advance(now_ms)

    def _rivals(
        self, visit: Any, more_than_ms: int, ordered: bool = True
    ) -> list[tuple[Any, int, int]]:
        services = {v.service for v in self._visits.values()} - {None}
        assert {s: set(of) for s, of in self._visits_of_service.items()} == {
            s: {k for k, v in self._visits.items() if v.service == s} for s in services
        }
        service = self.settings.service_of(visit.unit_type)
        found = []
        for other in self._visits.values():
            start = max(visit.enter_ms, other.enter_ms)
            overlap = min(visit.end_ms, other.end_ms) - start
            other_service = self.settings.service_of(other.unit_type)
            if (
                service is not None
                and other_service is not None
                and other_service != service
                and overlap > more_than_ms
                and other.unit_id != visit.unit_id
            ):
                found.append((other, start, overlap))
        return sorted(found, key=lambda f: (f[0].enter_ms, f[0].unit_id))


@st.composite
def fixes_of_units(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """In-order updates at tracker pace (seconds to minutes apart) from units of different
    services, some overlapping, each followed by the clock at its ts or a bit later."""
    streams: list[list[tuple[int, tuple[str, Any]]]] = []
    for unit, kind in UNITS:
        t = at("13:50") + draw(st.integers(0, 40)) * MIN
        events: list[tuple[int, tuple[str, Any]]] = []
        for _ in range(draw(st.integers(0, 3))):
            events.append((t, ("start", (unit, kind, t))))
            for _ in range(draw(st.integers(0, 40))):
                t += draw(st.sampled_from([1, 10_000, 10_000, 10_000, 30_000, 180_000]))
                events.append((t, ("progress", (unit, t))))
            if draw(st.integers(0, 4)):
                t += draw(st.integers(0, 60_000))
                events.append((t, ("end", (unit, t))))
            t += draw(st.integers(1, 60)) * MIN
        streams.append(events)
    return merged_with_clock(
        streams, lambda ts: ts + draw(st.sampled_from([0, 0, 0, 1, 20_000, 4 * MIN]))
    )


@settings(max_examples=150, deadline=None)
@given(fixes_of_units(), st.sampled_from([0.0, 3.0]), st.sampled_from([1.0, 5.0]))
def test_looking_only_when_something_could_fire_changes_no_alert(
    updates: list[tuple[str, Any]], min_visit: float, co_patrol: float
) -> None:
    """``advance`` skips evaluating while visits have grown too little for met or co_patrol
    (``_quiet_span``) and the clock is short of the next wake: the alerts, their times and
    their figures are exactly those of evaluating at every step."""
    ws = [
        window("14:00", "15:00", 12, min_visit_minutes=min_visit),
        window("14:30", "16:00", 20, unit_types=frozenset({"outreach", "pcso"})),
        window("15:30", "15:45", 4),
    ]
    settings_ = CoverageSettings(co_patrol_minutes=co_patrol)
    lazy = HotspotCoverage("HS-03", ws, LONDON, settings_)
    eager = EagerLedger("HS-03", ws, LONDON, settings_)
    clock_a, clock_b = [at("13:00")], [at("13:00")]
    lazy.advance(clock_a[0])
    eager.advance(clock_b[0])
    got: list[dict[str, Any]] = []
    want: list[dict[str, Any]] = []
    for event in updates:
        got += [a.to_json_dict() for a in apply(lazy, event, clock_a)]
        want += [a.to_json_dict() for a in apply(eager, event, clock_b)]
    assert got == want


def test_a_visit_reaching_the_minimum_counts_whole_at_once() -> None:
    """A visit shorter than ``min_visit_minutes`` adds nothing until it is long enough, then
    all of it: met must fire at that very fix, however little the fix itself added."""
    cov = ledger(window("14:00", "15:00", 12, min_visit_minutes=3))
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:10"))
    assert cov.advance(at("14:10")) == []
    cov.visit_started("P2", "police", at("14:20"))
    fired: dict[int, list[str]] = {}
    for t in range(at("14:20:10"), at("14:25"), 10_000):
        cov.visit_progress("P2", t)
        fired[t] = kinds(cov.advance(t))
    assert {t: k for t, k in fired.items() if k} == {at("14:23"): ["met"]}


def test_co_patrol_with_a_visit_that_already_ended_fires_on_time() -> None:
    """A lagging unit's visit can still grow into an overlap with one that has ended: the
    ledger must look again in time for it (``_quiet_span`` counts ended visits too)."""
    cov = ledger()
    cov.advance(at("13:00"))
    cov.visit_started("P1", "police", at("14:00"))
    cov.visit_started("O1", "outreach", at("14:00"))
    cov.visit_progress("P1", at("14:02"))
    assert cov.advance(at("14:02")) == []
    cov.visit_ended("O1", at("14:06"))
    assert cov.advance(at("14:06")) == []
    cov.visit_progress("P1", at("14:07"))
    (alert,) = cov.advance(at("14:07"))
    assert (alert.type, alert.unit_ids, alert.ts_ms) == ("co_patrol", ("O1", "P1"), at("14:07"))
