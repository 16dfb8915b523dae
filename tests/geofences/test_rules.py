"""The clock rules of window instances (docs/interface.md, Semantics: windows, coverage and
alerts) against their wording there, and the ledger and the status following them."""

from __future__ import annotations

from datetime import time

from hypothesis import given
from hypothesis import strategies as st

from geofences.hotspots import Window
from geofences.presence import PresenceSettings
from geofences.rules import (
    at_risk_due,
    at_risk_from,
    gap_due,
    judged,
    met_due,
    settled,
    settled_from,
)
from geofences.status import hotspot_status
from geofences.windows import WindowInstance
from tests.geofences.test_coverage import MIN, at, ledger, visit, window

ms = st.integers(min_value=0, max_value=10 * 60 * MIN)


@st.composite
def instances(draw: st.DrawFn) -> WindowInstance:
    start = draw(ms)
    end = start + draw(st.integers(min_value=1, max_value=5 * 60 * MIN))
    required = draw(st.integers(min_value=1, max_value=300)) / 2
    return WindowInstance("HS-03", start, end, required, 0.0, None, f"HS-03|{start}|{end}|x")


@given(instances(), ms, ms, st.integers(min_value=0, max_value=30 * MIN))
def test_at_risk_is_the_documented_inequality(
    instance: WindowInstance, now: int, covered: int, lead: int
) -> None:
    """``start <= now < end``, coverage short, and ``end - now <= (required - covered) +
    lead``; and the first clock value it holds from is where it begins."""
    required = instance.required_ms
    documented = (
        instance.start_ms <= now < instance.end_ms
        and covered < required
        and instance.end_ms - now <= required - covered + lead
    )
    assert at_risk_due(instance, now, covered, lead) == documented
    trigger = at_risk_from(instance, covered, lead)
    if trigger is None:
        assert not documented
    else:
        assert instance.start_ms <= trigger < instance.end_ms
        assert documented == (trigger <= now < instance.end_ms)
        assert at_risk_due(instance, trigger, covered, lead)
        assert trigger == instance.start_ms or not at_risk_due(instance, trigger - 1, covered, lead)


@given(instances(), ms, ms, st.integers(min_value=0, max_value=5 * MIN))
def test_gap_met_and_settling_are_the_documented_inequalities(
    instance: WindowInstance, now: int, covered: int, grace: int
) -> None:
    """``gap`` when the clock passes ``end + exit grace`` with coverage short; ``met`` when
    coverage reaches the required minutes; an instance settles when ``gap`` would be due, and
    a ledger watching from a clock value judges the instances not settled by then."""
    end = instance.end_ms
    assert met_due(instance, covered) == (covered >= instance.required_ms)
    assert settled(end, now, grace) == (now > end + grace)
    assert settled_from(end, grace) == end + grace + 1
    assert settled(end, settled_from(end, grace), grace)
    assert not settled(end, settled_from(end, grace) - 1, grace)
    assert gap_due(instance, now, covered, grace) == (
        now > end + grace and covered < instance.required_ms
    )
    assert judged(end, now, grace) == (end + grace >= now)


def test_the_ledger_fires_gap_the_first_millisecond_past_end_and_grace() -> None:
    cov = ledger(window("14:00", "15:00", 30), presence=PresenceSettings(exit_grace_s=90))
    cov.advance(at("13:00"))
    visit(cov, "P1", "police", at("14:00"), at("14:10"))
    assert cov.advance(at("15:01:30")) == []
    assert cov.next_wakeup_ms() == at("15:01:30.001")
    assert [a.type for a in cov.advance(at("15:01:30.001"))] == ["gap"]


def test_an_instance_settled_before_the_ledger_watched_is_not_judged() -> None:
    for since, judged_ in ((at("15:01"), True), (at("15:01:00.001"), False)):
        cov = ledger(window("14:00", "15:00", 30))
        cov.advance(since)
        assert any(i.start_ms == at("14:00") for i in cov.instances()) == judged_
        assert [a.type for a in cov.advance(at("15:05"))] == (["gap"] if judged_ else [])
        status = hotspot_status(cov, at("15:05"))
        assert status.state == ("gap" if judged_ else "idle")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["P1", "P2", "O1"]),
            st.integers(min_value=0, max_value=150),
            st.integers(min_value=1, max_value=40),
        ),
        max_size=6,
    ),
    st.integers(min_value=0, max_value=20),
)
def test_the_status_shows_each_alert_the_ledger_fires(
    visits: list[tuple[str, int, int]], lead: int
) -> None:
    """Minute by minute, whenever the ledger fires ``at_risk``, ``gap`` or ``met``, the status
    at that clock shows it (or ``covered``, which wins, where a unit may be present then)."""
    cov = ledger(
        Window(frozenset(range(7)), time(14), time(16), 45.0, unit_types=frozenset({"police"})),
        at_risk_lead_minutes=lead,
    )
    cov.advance(at("13:30"))
    events: dict[int, list[tuple[str, str]]] = {}
    for unit, start, length in visits:
        enter = at("13:30") + start * MIN
        events.setdefault(enter, []).append(("start", unit))
        events.setdefault(enter + length * MIN, []).append(("end", unit))
    for minute in range(0, 200):
        now = at("13:30") + minute * MIN
        for kind, unit in events.get(now, []):
            unit_type = "outreach" if unit == "O1" else "police"
            if kind == "start" and unit not in cov.present_units():
                cov.visit_started(unit, unit_type, now)
            elif kind == "end":
                cov.visit_ended(unit, now)
        for unit in cov.present_units():
            cov.visit_progress(unit, now)
        fired = [a.type for a in cov.advance(now)]
        state = hotspot_status(cov, now).state
        if "at_risk" in fired:
            assert state == "at_risk"
        if "gap" in fired:
            assert state == "gap" or (state == "covered" and cov.present_units())
        if "met" in fired:
            assert state in {"met", "covered"}
