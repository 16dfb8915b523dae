"""What the control room shows for a hot spot: its state now, its window and who is there.

A status is derived from a coverage ledger and a clock value, never stored (docs/interface.md,
Control room HTTP API), by the ledger's own rules (:mod:`geofences.rules`, its lead and exit
grace). The states, most urgent first:

- ``gap``: the latest window ended (within the last hour) with coverage short of required (a
  window the ledger does not judge, settled before it began to watch, is not shown);
- ``at_risk``: in a window, short, no eligible unit present, and the ``at_risk`` alert has fired
  or is due;
- ``pending``: in a window, short, not yet at risk;
- ``covered``: a unit is present now (an eligible one, when a window is open);
- ``met``: the window (current, or ended within the last hour) has its required minutes;
- ``idle``: outside any window and nobody present.

``urgency`` orders the board: the state's rank, plus for window states the share of the remaining
time that the shortfall needs (0..0.99), so of two hot spots at risk the one needing more of what
is left comes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from geofences.coverage import HotspotCoverage
from geofences.hotspots import Window
from geofences.rules import at_risk_due, judged, met_due
from geofences.timefmt import format_ms
from geofences.windows import WindowInstance, instances_between

HotspotState = Literal["covered", "met", "at_risk", "gap", "pending", "idle"]

#: how long an ended window's outcome (met or gap) stays the hot spot's state
RECENT_MS = 60 * 60_000
_RANK: dict[HotspotState, float] = {
    "gap": 5.0,
    "at_risk": 4.0,
    "pending": 3.0,
    "covered": 2.0,
    "met": 1.0,
    "idle": 0.0,
}


@dataclass(frozen=True, slots=True)
class PresentUnit:
    unit_id: str
    unit_type: str
    enter_ms: int
    last_inside_ms: int


@dataclass(frozen=True, slots=True)
class HotspotStatus:
    hotspot_id: str
    state: HotspotState
    now_ms: int
    window: WindowInstance | None
    covered_ms: int
    present: tuple[PresentUnit, ...]
    urgency: float
    #: when no window is current or recent: the next one to start (within a week), if any
    next_window: WindowInstance | None = None

    @property
    def minutes_left(self) -> float | None:
        if self.window is None:
            return None
        return max(0.0, (self.window.end_ms - self.now_ms) / 60_000)

    def to_json_dict(self) -> dict[str, Any]:
        window = self.window
        return {
            "id": self.hotspot_id,
            "state": self.state,
            "window": None
            if window is None
            else {
                "start": format_ms(window.start_ms),
                "end": format_ms(window.end_ms),
                "required_minutes": window.required_minutes,
                "covered_minutes": round(self.covered_ms / 60_000, 2),
                "min_visit_minutes": window.min_visit_minutes,
                "unit_types": None if window.unit_types is None else sorted(window.unit_types),
                "minutes_left": round(self.minutes_left or 0.0, 2),
            },
            "present": [
                {"unit_id": p.unit_id, "unit_type": p.unit_type, "enter_ts": format_ms(p.enter_ms)}
                for p in self.present
            ],
            "urgency": round(self.urgency, 4),
            "next_window": None
            if self.next_window is None
            else {
                "start": format_ms(self.next_window.start_ms),
                "end": format_ms(self.next_window.end_ms),
                "required_minutes": self.next_window.required_minutes,
            },
        }


def _need(window: WindowInstance, covered_ms: int, now_ms: int) -> float:
    """The share of the window's remaining time that its shortfall needs, 0..0.99."""
    short = max(0, window.required_ms - covered_ms)
    if short == 0:
        return 0.0
    left = max(window.end_ms - now_ms, 60_000)
    return min(short / left, 0.99)


@lru_cache(maxsize=8192)
def _instances_near(
    hotspot_id: str, windows: tuple[Window, ...], tz_name: str, minute: int
) -> tuple[WindowInstance, ...]:
    """Instances overlapping the recent hour up to the end of ``minute`` (a superset of what a
    status within that minute needs; cached, since screens ask every second)."""
    start = minute * 60_000
    return tuple(instances_between(hotspot_id, windows, tz_name, start - RECENT_MS, start + 60_000))


@lru_cache(maxsize=8192)
def _next_instance(
    hotspot_id: str, windows: tuple[Window, ...], tz_name: str, minute: int
) -> WindowInstance | None:
    """The first instance starting after ``minute``, within a week (cached per minute)."""
    start = (minute + 1) * 60_000
    upcoming = instances_between(hotspot_id, windows, tz_name, start, start + 7 * 86_400_000)
    return next((i for i in upcoming if i.start_ms >= start), None)


def hotspot_status(ledger: HotspotCoverage, now_ms: int) -> HotspotStatus:
    """The hot spot's state at ``now_ms``, from its ledger (see the module docstring)."""
    present = tuple(PresentUnit(*visit) for visit in ledger.open_visits())
    minute = now_ms // 60_000
    nearby = [
        i
        for i in _instances_near(ledger.hotspot_id, ledger.windows, ledger.tz_name, minute)
        if i.start_ms <= now_ms and i.end_ms > now_ms - RECENT_MS
    ]
    current = [i for i in nearby if i.start_ms <= now_ms < i.end_ms]
    watched_from = ledger.since_ms if ledger.since_ms is not None else now_ms
    grace_ms, lead_ms = ledger.settings.grace_ms, ledger.settings.lead_ms
    ended = [i for i in nearby if i.end_ms <= now_ms and judged(i.end_ms, watched_from, grace_ms)]

    def result(state: HotspotState, window: WindowInstance | None, covered: int) -> HotspotStatus:
        urgency = _RANK[state] + (0.0 if window is None else _need(window, covered, now_ms))
        upcoming = (
            _next_instance(ledger.hotspot_id, ledger.windows, ledger.tz_name, minute)
            if window is None
            else None
        )
        return HotspotStatus(
            ledger.hotspot_id, state, now_ms, window, covered, present, urgency, upcoming
        )

    if current:
        coverage = {i.key: ledger.covered_ms(i) for i in current}
        short = [i for i in current if not met_due(i, coverage[i.key])]
        window = min(short or current, key=lambda i: (i.end_ms, i.key))
        covered = coverage[window.key]
        fired = ledger.fired(window.key)
        if ledger.eligible_present(window):
            return result("covered", window, covered)
        if met_due(window, covered) or "met" in fired:
            return result("met", window, covered)
        if "at_risk" in fired or at_risk_due(window, now_ms, covered, lead_ms):
            return result("at_risk", window, covered)
        return result("pending", window, covered)
    if present:
        return result("covered", None, 0)
    if ended:
        window = max(ended, key=lambda i: (i.end_ms, i.key))
        covered = ledger.covered_ms(window)
        met = met_due(window, covered) or "met" in ledger.fired(window.key)
        return result("met" if met else "gap", window, covered)
    return result("idle", None, 0)
