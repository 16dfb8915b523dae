"""The control room's hot spot status: state, window, who is there, urgency."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from geofences.coverage import HotspotCoverage
from geofences.status import RECENT_MS, hotspot_status
from tests.geofences.test_coverage import MIN, at, ledger, visit, window


def status_at(cov: HotspotCoverage, hhmm: str) -> str:
    now = at(hhmm)
    cov.advance(now)
    return hotspot_status(cov, now).state


def test_idle_outside_any_window_with_nobody_there() -> None:
    assert status_at(ledger(), "09:00") == "idle"


def test_idle_says_when_the_next_window_starts() -> None:
    status = hotspot_status(ledger(window(start="14:00", end="15:00")), at("09:00"))
    assert status.to_json_dict()["next_window"] == {
        "start": "2026-11-22T14:00:00.000Z",
        "end": "2026-11-22T15:00:00.000Z",
        "required_minutes": 40.0,
    }
    late = hotspot_status(ledger(window(start="14:00", end="15:00")), at("16:30"))
    assert late.next_window is not None and late.next_window.start_ms == at("14:00", "2026-11-23")
    assert hotspot_status(ledger(), at("14:30")).next_window is None


def test_pending_in_a_window_with_time_to_spare() -> None:
    status = hotspot_status(ledger(), at("14:30"))
    assert status.state == "pending"
    assert status.window is not None
    assert status.minutes_left == 330.0
    assert status.to_json_dict()["window"]["required_minutes"] == 40.0


def test_covered_while_an_eligible_unit_is_present() -> None:
    cov = ledger(window(unit_types=frozenset({"police"})))
    cov.visit_started("u1", "police", at("14:10"))
    cov.visit_progress("u1", at("14:20"))
    status = hotspot_status(cov, at("14:20"))
    assert status.state == "covered"
    assert status.covered_ms == 10 * MIN
    assert [p.unit_id for p in status.present] == ["u1"]
    assert status.to_json_dict()["present"] == [
        {"unit_id": "u1", "unit_type": "police", "enter_ts": "2026-11-22T14:10:00.000Z"}
    ]


def test_an_ineligible_unit_does_not_cover_the_window() -> None:
    cov = ledger(window(unit_types=frozenset({"police"})))
    cov.visit_started("o1", "outreach", at("14:10"))
    assert hotspot_status(cov, at("14:20")).state == "pending"


def test_covered_outside_any_window_when_someone_is_there() -> None:
    cov = ledger()
    cov.visit_started("u1", "pcso", at("09:00"))
    assert hotspot_status(cov, at("09:05")).state == "covered"


def test_met_once_required_minutes_are_done() -> None:
    cov = ledger(window(required=20))
    visit(cov, "u1", "police", at("14:00"), at("14:25"))
    assert status_at(cov, "14:30") == "met"


def test_at_risk_when_the_remaining_time_runs_short() -> None:
    cov = ledger(window(start="14:00", end="15:00", required=40))
    assert hotspot_status(cov, at("14:04")).state == "pending"
    assert hotspot_status(cov, at("14:05")).state == "at_risk"


def test_at_risk_uses_the_ledgers_lead_time() -> None:
    cov = ledger(window(start="14:00", end="15:00", required=30), at_risk_lead_minutes=20)
    assert hotspot_status(cov, at("14:09")).state == "pending"
    assert hotspot_status(cov, at("14:10")).state == "at_risk"
    assert [a.type for a in cov.advance(at("14:10"))] == ["at_risk"]


def test_at_risk_stays_once_fired_while_short_and_nobody_there() -> None:
    cov = ledger(window(start="14:00", end="15:00", required=40))
    assert [a.type for a in cov.advance(at("14:05"))] == ["at_risk"]
    visit(cov, "u1", "police", at("14:06"), at("14:16"))
    assert status_at(cov, "14:17") == "at_risk"


def test_gap_after_a_short_window_then_idle_an_hour_later() -> None:
    cov = ledger(window(start="14:00", end="15:00", required=40))
    cov.advance(at("13:00"))
    visit(cov, "u1", "police", at("14:00"), at("14:10"))
    assert status_at(cov, "15:05") == "gap"
    late = at("15:00") + RECENT_MS + 1
    cov.advance(late)
    assert hotspot_status(cov, late).state == "idle"


def test_met_window_stays_met_after_it_ends() -> None:
    cov = ledger(window(start="14:00", end="15:00", required=10))
    cov.advance(at("13:00"))
    visit(cov, "u1", "police", at("14:00"), at("14:20"))
    assert status_at(cov, "15:30") == "met"


def test_a_window_that_ended_before_watching_began_is_not_judged() -> None:
    cov = ledger(window(start="14:00", end="15:00", required=30))
    assert status_at(cov, "15:30") == "idle"


def test_board_order_puts_the_neediest_first() -> None:
    tight = ledger(window(start="14:00", end="15:00", required=50))
    loose = ledger(window(start="14:00", end="15:00", required=20))
    now = at("14:20")
    assert hotspot_status(tight, now).urgency > hotspot_status(loose, now).urgency


@given(st.integers(min_value=0, max_value=24 * 60 - 1))
def test_every_minute_of_a_day_has_exactly_one_state(minute: int) -> None:
    cov = ledger(window(start="14:00", end="15:00", required=30))
    cov.advance(at("00:00"))
    visit(cov, "u1", "police", at("14:00"), at("14:20"))
    now = at("00:00") + minute * MIN
    status = hotspot_status(cov, now)
    judged = at("14:00") <= now < at("16:00")
    assert (status.window is not None) == judged
    assert status.state in {"covered", "met", "at_risk", "gap", "pending", "idle"}
