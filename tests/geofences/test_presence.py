"""The presence state machine against docs/interface.md, Semantics, from "Valid and usable pings"
to "Hot spot removed, unit types".

Hot spots are real polygons in a real ``HotSpotIndex``: square A (150 m) near Leicester's clock
tower, and square B overlapping A's eastern half. Positions are given in metres east/north of A's
south-west corner and converted with ``metres_per_degree``.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofences.hotspots import HotSpot
from geofences.index import HotSpotIndex
from geofences.pings import Ping
from geofences.presence import (
    UNKNOWN_UNIT_TYPE,
    DwellEvent,
    Event,
    ExitReason,
    GeofenceEvent,
    Observation,
    Outcome,
    PresenceSettings,
    UnitState,
    Visit,
    expire,
    observe,
    remove_hotspots,
    signal_deadline_ms,
    visit_event_id,
    walk,
)
from geofences.projection import metres_per_degree

LON0, LAT0 = -1.13, 52.63
KX, KY = metres_per_degree(LAT0)
T0 = int(datetime(2026, 11, 22, 14, 3, 5, tzinfo=UTC).timestamp()) * 1000
SETTINGS = PresenceSettings()  # the documented defaults: 50 m, 20 m, 60 s, 300 s


def lonlat(x: float, y: float) -> tuple[float, float]:
    """Metres east / north of A's south-west corner to (lon, lat)."""
    return LON0 + x / KX, LAT0 + y / KY


def box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.box(*lonlat(x0, y0), *lonlat(x1, y1))


# A: 0..150 m east, 0..150 m north. B: 75..225 m east, 50..200 m north (overlaps A's east half).
A = HotSpot("A", "Clock Tower", box(0, 0, 150, 150), ())
B = HotSpot("B", "Haymarket", box(75, 50, 225, 200), ())
INDEX = HotSpotIndex([A, B])
INDEX_A = HotSpotIndex([A])

# Named spots (metres).
IN_A = (30, 75)  # A only
IN_AB = (110, 100)  # A and B
IN_B = (200, 180)  # B only
FAR = (3000, 3000)  # nowhere
WEST_EDGE = (0.0, 75)  # on A's western boundary


def ms(t_s: float) -> int:
    """Seconds after T0 as epoch ms."""
    return T0 + round(t_s * 1000)


def ping(
    t_s: float,
    xy: tuple[float, float],
    *,
    unit: str = "U1",
    accuracy_m: float | None = None,
    unit_type: str | None = None,
) -> Ping:
    lon, lat = lonlat(*xy)
    return Ping(unit, ms(t_s), lat, lon, accuracy_m, unit_type)


def feed(
    state: UnitState | None,
    p: Ping,
    index: HotSpotIndex = INDEX,
    cfg: PresenceSettings = SETTINGS,
) -> Observation:
    return observe(
        state,
        p,
        index.containing(p.lon, p.lat),
        lambda q, h: index.distance_m(q.lon, q.lat, h),
        cfg,
    )


@dataclass
class Unit:
    """One unit's pings through ``observe``, remembering its state, events and outcomes."""

    index: HotSpotIndex = INDEX
    cfg: PresenceSettings = SETTINGS
    state: UnitState | None = None
    events: list[Event] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def send(self, p: Ping) -> Observation:
        before = copy.deepcopy(self.state)
        result = feed(self.state, p, self.index, self.cfg)
        assert self.state == before, "observe must not modify the given state"
        self.state = result.state
        self.events.extend(result.events)
        self.outcomes.append(result.outcome)
        return result

    def at(self, t_s: float, xy: tuple[float, float], **kwargs: Any) -> tuple[Event, ...]:
        return self.send(ping(t_s, xy, **kwargs)).events

    def expire(self, now_s: float) -> tuple[Event, ...]:
        assert self.state is not None
        self.state, events = expire("U1", self.state, ms(now_s), self.cfg)
        self.events.extend(events)
        return events


def summary(events: Iterable[Event]) -> list[tuple[object, ...]]:
    """(kind, hotspot, ts seconds after T0, reason) of each event; dwell: enter and exit seconds."""
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, GeofenceEvent):
            reason = None if e.reason is None else e.reason.value
            out.append((e.type, e.hotspot_id, (e.ts_ms - T0) / 1000, reason))
        else:
            out.append(("dwell", e.hotspot_id, (e.enter_ms - T0) / 1000, (e.exit_ms - T0) / 1000))
    return out


def west_of_a(metres: float, y: float = 75) -> tuple[float, float]:
    """A point ``metres`` west of A's western edge (outside A, and far from B)."""
    return (-metres, y)


# --- enter -------------------------------------------------------------------------------------


def test_enter_at_the_pings_ts_and_position() -> None:
    u = Unit()
    p = ping(0, IN_A, unit_type="police")
    result = u.send(p)
    assert result.outcome is Outcome.USABLE
    assert result.still_inside == ()
    [enter] = result.events
    assert isinstance(enter, GeofenceEvent)
    assert (enter.type, enter.hotspot_id, enter.ts_ms, enter.reason) == (
        "enter",
        "A",
        p.ts_ms,
        None,
    )
    assert (enter.lat, enter.lon, enter.unit_id, enter.unit_type) == (p.lat, p.lon, "U1", "police")
    assert set(result.state.hotspot_ids) == {"A"}
    assert result.state.last_ms == p.ts_ms


def test_ping_outside_everything_enters_nothing() -> None:
    u = Unit()
    assert u.at(0, FAR) == ()
    assert u.at(10, west_of_a(5)) == ()
    assert u.state is not None and u.state.visits == ()
    assert u.state.last_ms == ms(10)
    assert u.outcomes == [Outcome.USABLE, Outcome.USABLE]


def test_later_ping_inside_while_present_is_no_new_enter() -> None:
    u = Unit()
    u.at(0, IN_A)
    result = u.send(ping(10, (60, 60)))
    assert result.events == ()
    assert result.still_inside == ("A",)
    assert result.state.visit("A").last_inside_ms == ms(10)
    assert result.state.visit("A").enter_ms == ms(0)
    # built with tuple.__new__ (no defaults filled in): the same as the plain constructor's
    assert result.state.visits == (Visit("A", ms(0), UNKNOWN_UNIT_TYPE, ms(10)),)


@pytest.mark.parametrize(
    "where",
    [WEST_EDGE, (75, 0.0), (0.0, 0.0), (150, 150)],
    ids=["west-edge", "south-edge", "sw-corner", "ne-corner"],
)
def test_boundary_counts_as_inside(where: tuple[float, float]) -> None:
    p = ping(0, where)
    # use the polygon's own coordinates where the point is meant to be exactly on it
    xmin, ymin, xmax, ymax = A.geometry.bounds
    lon = {0.0: xmin, 150: xmax}.get(where[0], p.lon)
    lat = {0.0: ymin, 150: ymax}.get(where[1], p.lat)
    on_edge = Ping("U1", p.ts_ms, lat, lon)
    assert shapely.touches(A.geometry, shapely.Point(lon, lat))
    result = feed(None, on_edge, INDEX_A)
    assert summary(result.events) == [("enter", "A", 0.0, None)]


def test_enter_needs_a_usable_ping() -> None:
    u = Unit()
    assert u.at(0, IN_A, accuracy_m=50.01) == ()
    assert u.outcomes == [Outcome.POOR_ACCURACY]
    assert summary(u.at(1, IN_A, accuracy_m=50)) == [("enter", "A", 1.0, None)]


# --- edge jitter -------------------------------------------------------------------------------


@pytest.mark.parametrize("outside_m", [0.5, 10, 19.5])
def test_jitter_at_the_edge_does_not_flap(outside_m: float) -> None:
    u = Unit()
    for i in range(180):  # 30 minutes, a ping every 10 s, alternating in / just out
        u.at(10 * i, (2, 75) if i % 2 == 0 else west_of_a(outside_m))
    assert summary(u.events) == [("enter", "A", 0.0, None)]
    assert u.state is not None and set(u.state.hotspot_ids) == {"A"}


def test_jitter_with_short_outside_runs_does_not_flap() -> None:
    u = Unit()
    t = 0
    for _ in range(20):  # in, then three pings out within the buffer over 50 s
        u.at(t, (1, 75))
        for k in (10, 30, 50):
            u.at(t + k, west_of_a(15))
        t += 55
    assert summary(u.events) == [("enter", "A", 0.0, None)]


# --- exit (left) by the buffer -----------------------------------------------------------------


def test_buffer_exit_at_the_first_ping_beyond_the_buffer() -> None:
    u = Unit()
    u.at(0, IN_A, unit_type="pcso")
    far = ping(10, west_of_a(30))
    result = u.send(far)
    assert summary(result.events) == [("exit", "A", 10.0, "left"), ("dwell", "A", 0.0, 10.0)]
    exit_, dwell = result.events
    assert isinstance(exit_, GeofenceEvent) and isinstance(dwell, DwellEvent)
    assert (exit_.lat, exit_.lon, exit_.unit_type) == (far.lat, far.lon, "pcso")
    assert dwell.exit_reason is ExitReason.LEFT and dwell.duration_s == 10.0
    assert result.state.visits == ()


@pytest.mark.parametrize(("metres", "exits"), [(19.5, False), (20.5, True), (21, True)])
def test_buffer_threshold(metres: float, exits: bool) -> None:
    u = Unit()
    u.at(0, IN_A)
    assert INDEX.distance_m(*lonlat(*west_of_a(metres)), "A") == pytest.approx(metres, abs=0.01)
    events = u.at(5, west_of_a(metres))
    assert summary(events) == (
        [("exit", "A", 5.0, "left"), ("dwell", "A", 0.0, 5.0)] if exits else []
    )


def test_streak_within_buffer_then_beyond_exits_at_the_streak_start() -> None:
    u = Unit()
    u.at(0, IN_A)
    first = ping(10, west_of_a(10))
    u.send(first)
    assert u.at(20, west_of_a(15)) == ()
    result = u.send(ping(30, west_of_a(40)))
    assert summary(result.events) == [("exit", "A", 10.0, "left"), ("dwell", "A", 0.0, 10.0)]
    exit_ = result.events[0]
    assert isinstance(exit_, GeofenceEvent)
    assert (exit_.lat, exit_.lon) == (first.lat, first.lon)  # the streak's first ping


def test_buffer_exit_then_return_enters_again() -> None:
    u = Unit()
    u.at(0, IN_A)
    u.at(10, west_of_a(50))
    u.at(20, west_of_a(5))  # within the buffer but not present: nothing
    u.at(30, IN_A)
    assert summary(u.events) == [
        ("enter", "A", 0.0, None),
        ("exit", "A", 10.0, "left"),
        ("dwell", "A", 0.0, 10.0),
        ("enter", "A", 30.0, None),
    ]


# --- exit (left) by the grace period -----------------------------------------------------------


def test_grace_exit_at_the_streak_start() -> None:
    u = Unit()
    u.at(0, IN_A)
    assert u.at(10, west_of_a(10)) == ()
    assert u.at(40, west_of_a(12)) == ()
    assert summary(u.at(70, west_of_a(8))) == [
        ("exit", "A", 10.0, "left"),
        ("dwell", "A", 0.0, 10.0),
    ]


def test_grace_one_millisecond_short_is_no_exit() -> None:
    u = Unit()
    u.at(0, IN_A)
    u.at(10, west_of_a(10))
    assert u.at(69.999, west_of_a(10)) == ()
    assert u.state is not None and u.state.visit("A").streak_ms == ms(10)
    assert summary(u.at(70, west_of_a(10))) == [
        ("exit", "A", 10.0, "left"),
        ("dwell", "A", 0.0, 10.0),
    ]


def test_grace_with_a_gap_in_the_streak_counts_ping_ts_not_ping_count() -> None:
    u = Unit()
    u.at(0, IN_A)
    u.at(100, west_of_a(10))
    # one ping 200 s later, still within the buffer: the streak has lasted 200 s >= 60 s
    assert summary(u.at(300, west_of_a(10))) == [
        ("exit", "A", 100.0, "left"),
        ("dwell", "A", 0.0, 100.0),
    ]


def test_inside_ping_ends_the_streak_and_a_later_streak_restarts_the_clock() -> None:
    u = Unit()
    u.at(0, IN_A)
    u.at(10, west_of_a(10))  # streak 1 starts
    u.at(40, (1, 75))  # inside: streak 1 ends
    assert u.state is not None and u.state.visit("A").streak_ms is None
    u.at(50, west_of_a(10))  # streak 2 starts
    assert u.at(100, west_of_a(10)) == ()  # 90 s after streak 1 began, 50 s into streak 2
    assert u.at(109.999, west_of_a(10)) == ()
    assert summary(u.at(110, west_of_a(10))) == [
        ("exit", "A", 50.0, "left"),
        ("dwell", "A", 0.0, 50.0),
    ]


def test_custom_settings_are_used() -> None:
    cfg = PresenceSettings(max_accuracy_m=10, exit_buffer_m=5, exit_grace_s=5, signal_timeout_s=30)
    assert (cfg.exit_grace_ms, cfg.signal_timeout_ms) == (5000, 30000)
    u = Unit(cfg=cfg)
    u.at(0, IN_A)
    assert u.at(1, IN_A, accuracy_m=11) == ()
    assert summary(u.at(2, west_of_a(6))) == [("exit", "A", 2.0, "left"), ("dwell", "A", 0.0, 2.0)]
    u.at(3, IN_A)
    u.at(4, west_of_a(2))
    assert summary(u.at(9, west_of_a(2))) == [("exit", "A", 4.0, "left"), ("dwell", "A", 3.0, 4.0)]
    u.at(10, IN_A)
    assert summary(u.at(40.001, IN_A)) == [
        ("exit", "A", 10.0, "signal_lost"),
        ("dwell", "A", 10.0, 10.0),
        ("enter", "A", 40.001, None),
    ]


# --- exit (signal lost) ------------------------------------------------------------------------


def test_signal_loss_noticed_by_the_next_ping_then_it_enters_again() -> None:
    u = Unit()
    u.at(0, IN_A, unit_type="police")
    last = ping(100, (40, 40))
    u.send(last)
    result = u.send(ping(401, IN_A))
    assert summary(result.events) == [
        ("exit", "A", 100.0, "signal_lost"),
        ("dwell", "A", 0.0, 100.0),
        ("enter", "A", 401.0, None),
    ]
    exit_, dwell, enter = result.events
    assert isinstance(exit_, GeofenceEvent) and isinstance(dwell, DwellEvent)
    assert (exit_.lat, exit_.lon) == (last.lat, last.lon)  # the last usable ping's position
    assert dwell.exit_reason is ExitReason.SIGNAL_LOST
    assert isinstance(enter, GeofenceEvent) and enter.unit_type == "police"
    assert result.still_inside == ()
    assert result.state.visit("A").enter_ms == ms(401)


def test_signal_loss_then_fresh_ping_outside_only_exits() -> None:
    u = Unit()
    u.at(0, IN_A)
    assert summary(u.at(300.001, west_of_a(5))) == [
        ("exit", "A", 0.0, "signal_lost"),
        ("dwell", "A", 0.0, 0.0),
    ]
    assert u.state is not None and u.state.visits == ()  # no streak left behind


def test_silence_of_exactly_the_timeout_is_not_signal_loss() -> None:
    u = Unit()
    u.at(0, IN_A)
    assert u.at(300, IN_A) == ()
    assert u.at(600, (60, 60)) == ()
    assert summary(u.at(900.001, IN_A)) == [
        ("exit", "A", 600.0, "signal_lost"),
        ("dwell", "A", 0.0, 600.0),
        ("enter", "A", 900.001, None),
    ]


def test_signal_loss_with_an_open_streak_is_left_at_the_streak_start() -> None:
    u = Unit()
    u.at(0, IN_A)
    first = ping(10, west_of_a(10))
    u.send(first)
    u.at(20, west_of_a(10))
    result = u.send(ping(321, IN_A))
    assert summary(result.events) == [
        ("exit", "A", 10.0, "left"),
        ("dwell", "A", 0.0, 10.0),
        ("enter", "A", 321.0, None),
    ]
    exit_ = result.events[0]
    assert isinstance(exit_, GeofenceEvent) and (exit_.lat, exit_.lon) == (first.lat, first.lon)


def test_signal_loss_when_not_present_is_silent() -> None:
    u = Unit()
    u.at(0, FAR)
    assert u.at(5000, FAR) == ()
    assert summary(u.at(10000, IN_A)) == [("enter", "A", 10000.0, None)]


def test_signal_deadline() -> None:
    u = Unit()
    u.at(0, FAR)
    assert u.state is not None and signal_deadline_ms(u.state, SETTINGS) is None  # not present
    assert signal_deadline_ms(UnitState(), SETTINGS) is None
    u.at(10, IN_A)
    assert signal_deadline_ms(u.state, SETTINGS) == ms(310)
    u.at(20, IN_A, accuracy_m=99)  # an unusable ping does not move the deadline
    assert signal_deadline_ms(u.state, SETTINGS) == ms(310)
    u.at(30, west_of_a(10))
    assert signal_deadline_ms(u.state, SETTINGS) == ms(330)


def test_expire_by_clock() -> None:
    u = Unit()
    u.at(0, IN_A, unit_type="outreach")
    last = ping(100, IN_AB)
    u.send(last)
    before = u.state
    assert before is not None
    assert u.expire(400) == ()  # exactly the timeout: nothing
    assert u.state is before
    events = u.expire(400.001)
    assert summary(events) == [
        ("exit", "A", 100.0, "signal_lost"),
        ("dwell", "A", 0.0, 100.0),
        ("exit", "B", 100.0, "signal_lost"),
        ("dwell", "B", 100.0, 100.0),
    ]
    for e in events:
        assert e.unit_type == "outreach"
        if isinstance(e, GeofenceEvent):
            assert (e.lat, e.lon) == (last.lat, last.lon)
    assert u.state is not None and u.state.visits == ()
    assert set(before.hotspot_ids) == {"A", "B"}  # the given state was not modified
    assert u.state.last_ms == ms(100)  # the last usable ping is still remembered
    assert u.expire(10_000) == ()  # nothing left to close


def test_expire_with_an_open_streak_is_left_at_the_streak_start() -> None:
    u = Unit()
    u.at(0, IN_A)
    u.at(10, west_of_a(10))
    u.at(30, west_of_a(10))
    assert u.expire(330) == ()
    assert summary(u.expire(330.001)) == [("exit", "A", 10.0, "left"), ("dwell", "A", 0.0, 10.0)]


def test_expire_on_a_fresh_state() -> None:
    state = UnitState()
    assert expire("U1", state, ms(10**6), SETTINGS) == (state, ())


SCRIPT: list[tuple[float, tuple[float, float]]] = [
    (0, IN_A),
    (30, IN_AB),
    (60, west_of_a(10)),  # outside both: A streak (within buffer), B beyond its buffer
    (400, IN_B),  # silence: A exits left at 60 (streak), B is not present; enters B
    (450, IN_AB),
    (1000, FAR),  # silence: signal lost in A and B at 450
    (1100, IN_A),
    (1500, IN_A),  # silence again, re-enter
]


@pytest.mark.parametrize("clock_at", [None, "deadline+1", "just-before-next", "at-next"])
def test_expire_then_ping_gives_the_same_events_as_ping_only(clock_at: str | None) -> None:
    ping_only = Unit()
    for t, xy in SCRIPT:
        ping_only.at(t, xy)
    with_clock = Unit()
    for t, xy in SCRIPT:
        state = with_clock.state
        if clock_at is not None and state is not None and state.last_ms is not None:
            deadline = (state.last_ms - T0) / 1000 + 300
            now = {"deadline+1": deadline + 0.001, "just-before-next": t - 0.001, "at-next": t}
            if now[clock_at] <= t:
                with_clock.expire(now[clock_at])
        with_clock.at(t, xy)
    assert with_clock.events == ping_only.events
    assert with_clock.state == ping_only.state
    assert summary(ping_only.events) == [
        ("enter", "A", 0.0, None),
        ("enter", "B", 30.0, None),
        ("exit", "B", 60.0, "left"),
        ("dwell", "B", 30.0, 60.0),
        ("exit", "A", 60.0, "left"),
        ("dwell", "A", 0.0, 60.0),
        ("enter", "B", 400.0, None),
        ("enter", "A", 450.0, None),
        ("exit", "A", 450.0, "signal_lost"),
        ("dwell", "A", 450.0, 450.0),
        ("exit", "B", 450.0, "signal_lost"),
        ("dwell", "B", 400.0, 450.0),
        ("enter", "A", 1100.0, None),
        ("exit", "A", 1100.0, "signal_lost"),
        ("dwell", "A", 1100.0, 1100.0),
        ("enter", "A", 1500.0, None),
    ]


# --- late, duplicate and unusable pings --------------------------------------------------------


@pytest.mark.parametrize("dt", [0, -0.001, -5, -1000], ids=["duplicate", "1ms-late", "5s", "long"])
@pytest.mark.parametrize("where", [IN_A, IN_B, FAR, west_of_a(50)])
def test_late_and_duplicate_pings_change_nothing(dt: float, where: tuple[float, float]) -> None:
    u = Unit()
    u.at(0, IN_A)
    u.at(20, west_of_a(10))  # an open streak
    before = u.state
    result = u.send(ping(20 + dt, where, unit_type="security"))
    assert result.outcome is Outcome.LATE
    assert result.events == ()
    assert result.still_inside == ()
    assert result.state == before
    assert result.state.unit_type == "unknown"


def test_late_ping_when_not_present() -> None:
    u = Unit()
    u.at(100, FAR)
    result = u.send(ping(50, IN_A))
    assert result.outcome is Outcome.LATE and result.events == ()
    assert result.state.visits == ()


def test_late_ping_does_not_hide_signal_loss() -> None:
    u = Unit()
    u.at(0, IN_A)
    u.at(100, IN_A)
    u.at(300, IN_A)
    u.at(350, IN_A)
    u.at(340, IN_A)  # late: the silence is still measured from 350
    assert summary(u.at(650.001, IN_A)) == [
        ("exit", "A", 350.0, "signal_lost"),
        ("dwell", "A", 0.0, 350.0),
        ("enter", "A", 650.001, None),
    ]


@pytest.mark.parametrize("where", [IN_A, IN_B, FAR, west_of_a(10)])
def test_poor_accuracy_is_ignored(where: tuple[float, float]) -> None:
    u = Unit()
    u.at(0, IN_A)
    u.at(10, west_of_a(10))
    before = u.state
    assert before is not None
    result = u.send(ping(20, where, accuracy_m=50.001))
    assert result.outcome is Outcome.POOR_ACCURACY
    assert result.events == () and result.still_inside == ()
    assert result.state.last_ms == ms(10)
    assert result.state.visits == before.visits


def test_poor_accuracy_does_not_break_a_silence() -> None:
    u = Unit()
    u.at(0, IN_A)
    for t in range(50, 400, 50):
        u.at(t, IN_A, accuracy_m=200)
    assert summary(u.at(400, IN_A)) == [
        ("exit", "A", 0.0, "signal_lost"),
        ("dwell", "A", 0.0, 0.0),
        ("enter", "A", 400.0, None),
    ]


def test_accuracy_exactly_the_maximum_is_usable() -> None:
    u = Unit()
    result = u.send(ping(0, IN_A, accuracy_m=50.0))
    assert result.outcome is Outcome.USABLE
    assert summary(result.events) == [("enter", "A", 0.0, None)]
    assert u.send(ping(10, west_of_a(30), accuracy_m=50)).outcome is Outcome.USABLE
    assert summary(u.events)[1:] == [("exit", "A", 10.0, "left"), ("dwell", "A", 0.0, 10.0)]


def test_poor_accuracy_with_a_late_ts_is_still_just_poor() -> None:
    u = Unit()
    u.at(10, IN_A)
    result = u.send(ping(5, FAR, accuracy_m=80))
    assert result.outcome is Outcome.POOR_ACCURACY and result.events == ()


# --- unit_type ---------------------------------------------------------------------------------


def test_unit_type_carried_into_enter_exit_and_dwell() -> None:
    u = Unit()
    u.at(0, IN_A, unit_type="pcso")
    u.at(10, FAR)
    assert [e.unit_type for e in u.events] == ["pcso", "pcso", "pcso"]


def test_unit_type_remembered_when_a_later_ping_omits_it() -> None:
    u = Unit()
    u.at(0, FAR, unit_type="security")
    u.at(10, IN_A)
    u.at(20, IN_AB)
    u.at(30, FAR)
    assert len(u.events) == 6
    assert {e.unit_type for e in u.events} == {"security"}
    assert u.state is not None and u.state.unit_type == "security"
    assert u.state.to_dict()["t"] == "security"


def test_unit_type_unknown_when_never_given() -> None:
    u = Unit()
    u.at(0, IN_A)
    u.at(10, FAR)
    assert len(u.events) == 3
    assert {e.unit_type for e in u.events} == {"unknown"}
    assert {e.to_json_dict()["unit_type"] for e in u.events} == {"unknown"}


def test_unit_type_change_applies_to_the_next_visit() -> None:
    u = Unit()
    u.at(0, IN_A, unit_type="police")
    u.at(10, FAR, unit_type="pcso")
    u.at(20, IN_A)
    assert [e.unit_type for e in u.events] == ["police", "police", "police", "pcso"]


# --- overlapping hot spots ---------------------------------------------------------------------


def test_overlapping_hot_spots_are_independent() -> None:
    u = Unit()
    assert summary(u.at(0, IN_AB)) == [("enter", "A", 0.0, None), ("enter", "B", 0.0, None)]
    # into A only, far (> 20 m) from B: B exits, A stays
    assert summary(u.at(10, IN_A)) == [("exit", "B", 10.0, "left"), ("dwell", "B", 0.0, 10.0)]
    assert summary(u.at(20, IN_AB)) == [("enter", "B", 20.0, None)]
    # in A, 10 m west of B: B's streak runs within its buffer until the grace period ends
    assert u.at(30, (65, 100)) == ()
    assert u.at(60, (65, 100)) == ()
    assert summary(u.at(90, (65, 100))) == [
        ("exit", "B", 30.0, "left"),
        ("dwell", "B", 20.0, 30.0),
    ]
    # into B only, 10 m east of A: B is entered and A's streak starts; back into A in time
    assert summary(u.at(100, (160, 100))) == [("enter", "B", 100.0, None)]
    assert u.state is not None and u.state.visit("A").streak_ms == ms(100)
    assert u.at(110, (140, 100)) == ()
    assert u.state.visit("A").streak_ms is None
    assert summary(u.at(120, FAR)) == [
        ("exit", "A", 120.0, "left"),
        ("dwell", "A", 0.0, 120.0),
        ("exit", "B", 120.0, "left"),
        ("dwell", "B", 100.0, 120.0),
    ]


def test_still_inside_lists_hot_spots_already_present_in() -> None:
    u = Unit()
    u.at(0, IN_A)
    result = u.send(ping(10, IN_AB))
    assert result.still_inside == ("A",)
    assert summary(result.events) == [("enter", "B", 10.0, None)]
    result = u.send(ping(20, IN_AB))
    assert result.still_inside == ("A", "B")


# --- hot spots removed -------------------------------------------------------------------------


def test_remove_hotspots_exits_with_reason_hotspot_removed() -> None:
    u = Unit()
    u.at(0, IN_AB, unit_type="police")
    last = ping(30, IN_AB)
    u.send(last)
    before = u.state
    assert before is not None
    state, events = remove_hotspots("U1", before, {"A"})
    assert summary(events) == [("exit", "B", 30.0, "hotspot_removed"), ("dwell", "B", 0.0, 30.0)]
    exit_, dwell = events
    assert isinstance(exit_, GeofenceEvent) and isinstance(dwell, DwellEvent)
    assert (exit_.lat, exit_.lon, exit_.unit_type) == (last.lat, last.lon, "police")
    assert exit_.to_json_dict()["reason"] == "hotspot_removed"
    assert dwell.to_json_dict()["exit_reason"] == "hotspot_removed"
    assert set(state.hotspot_ids) == {"A"}
    assert set(before.hotspot_ids) == {"A", "B"}  # not modified
    assert remove_hotspots("U1", state, {"A"}) == (state, ())
    state, events = remove_hotspots("U1", state, set())
    assert summary(events) == [("exit", "A", 30.0, "hotspot_removed"), ("dwell", "A", 0.0, 30.0)]
    assert state.visits == ()


def test_remove_hotspots_on_a_fresh_state() -> None:
    state = UnitState()
    assert remove_hotspots("U1", state, ()) == (state, ())


# --- state snapshots ---------------------------------------------------------------------------


def states_along_a_route() -> list[UnitState]:
    u = Unit()
    states = [UnitState()]
    for t, xy, kw in [
        (0, FAR, {}),
        (10, IN_AB, {"unit_type": "pcso"}),
        (20, (65, 100), {}),  # A inside, B streak
        (25, (65, 100), {"accuracy_m": 12.25}),
        (30, west_of_a(10), {}),  # A streak, B exit
    ]:
        u.at(t, xy, **kw)
        assert u.state is not None
        states.append(u.state)
    return states


@pytest.mark.parametrize("i", range(6))
def test_state_round_trips_through_to_dict_and_orjson(i: int) -> None:
    state = states_along_a_route()[i]
    data = state.to_dict()
    assert UnitState.from_dict(data) == state
    assert UnitState.from_dict(orjson.loads(orjson.dumps(data))) == state


def test_restored_state_behaves_the_same() -> None:
    state = states_along_a_route()[-1]
    restored = UnitState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    for p in [ping(40, west_of_a(12)), ping(95, west_of_a(12))]:
        a, b = feed(state, p), feed(restored, p)
        assert a == b
        state, restored = a.state, b.state
    assert summary(a.events) == [("exit", "A", 30.0, "left"), ("dwell", "A", 10.0, 30.0)]


# --- the events on the wire (docs/interface.md, Messages) --------------------------------------


def test_event_json_fields_and_formats() -> None:
    u = Unit()
    u.at(0, IN_A, unit_type="police")
    u.at(75.25, FAR)
    enter, exit_, dwell = u.events
    ej, xj, dj = enter.to_json_dict(), exit_.to_json_dict(), dwell.to_json_dict()
    geofence_fields = [
        "event_id",
        "type",
        "unit_id",
        "unit_type",
        "hotspot_id",
        "ts",
        "lat",
        "lon",
        "reason",
    ]
    assert list(ej) == geofence_fields
    assert list(xj) == geofence_fields
    assert list(dj) == [
        "event_id",
        "unit_id",
        "unit_type",
        "hotspot_id",
        "enter_ts",
        "exit_ts",
        "duration_s",
        "exit_reason",
    ]
    lon, lat = lonlat(*IN_A)
    assert ej == {
        "event_id": ej["event_id"],
        "type": "enter",
        "unit_id": "U1",
        "unit_type": "police",
        "hotspot_id": "A",
        "ts": "2026-11-22T14:03:05.000Z",
        "lat": lat,
        "lon": lon,
        "reason": None,
    }
    assert (xj["type"], xj["ts"], xj["reason"]) == ("exit", "2026-11-22T14:04:20.250Z", "left")
    assert dj["enter_ts"] == "2026-11-22T14:03:05.000Z"
    assert dj["exit_ts"] == "2026-11-22T14:04:20.250Z"
    assert dj["duration_s"] == 75.25 and isinstance(dj["duration_s"], float)
    assert dj["exit_reason"] == "left"
    for d in (ej, xj, dj):
        assert orjson.loads(orjson.dumps(d)) == d  # plain JSON values only
        assert d["event_id"] == str(uuid.UUID(d["event_id"]))


def test_duration_is_exit_minus_enter() -> None:
    u = Unit()
    u.at(0.001, IN_A)
    u.at(250.5, IN_A)
    u.at(300.999, FAR)
    [dwell] = [e for e in u.events if isinstance(e, DwellEvent)]
    assert dwell.duration_s == pytest.approx(300.998)
    assert dwell.to_json_dict()["duration_s"] == (dwell.exit_ms - dwell.enter_ms) / 1000


def run_route(unit: str) -> list[Event]:
    u = Unit()
    for t, xy in [
        (0, IN_AB),
        (10, IN_A),
        (20, IN_AB),
        (30, FAR),
        (40, IN_A),
        (400, IN_A),
        (500, FAR),
    ]:
        u.send(ping(t, xy, unit=unit))
    return u.events


def test_event_ids_are_deterministic_and_distinct() -> None:
    first, again = run_route("U1"), run_route("U1")
    ids = [e.event_id for e in first]
    assert ids == [e.event_id for e in again]
    assert len(set(ids)) == len(ids)  # enter, exit and dwell of one visit differ; visits differ
    other_unit = [e.event_id for e in run_route("U2")]
    assert not set(ids) & set(other_unit)


@given(
    st.sampled_from(["enter", "exit", "dwell"]),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=128),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=64),
    st.integers(-(10**15), 10**15),
)
def test_event_ids_are_the_uuid5_of_the_visit(
    kind: str, unit_id: str, hotspot_id: str, enter_ms: int
) -> None:
    namespace = uuid.UUID("5b0f3a52-8f1e-4c55-9a57-6f1b1c2a7d10")
    name = f"{kind}|{unit_id}|{hotspot_id}|{enter_ms}"
    assert visit_event_id(kind, unit_id, hotspot_id, enter_ms) == str(uuid.uuid5(namespace, name))


def test_event_ids_do_not_depend_on_how_the_exit_was_noticed() -> None:
    by_ping = Unit()
    by_ping.at(0, IN_A)
    by_ping.at(500, FAR)
    by_clock = Unit()
    by_clock.at(0, IN_A)
    by_clock.expire(301)
    by_clock.at(500, FAR)
    assert [e.to_json_dict() for e in by_clock.events] == [e.to_json_dict() for e in by_ping.events]


def test_walk_matches_observe_one_ping_at_a_time() -> None:
    pings = [
        ping(0, IN_A, unit="U1", unit_type="police"),
        ping(0, IN_B, unit="U2"),
        ping(10, IN_AB, unit="U1"),
        ping(5, IN_AB, unit="U1"),  # late
        ping(20, west_of_a(40), unit="U1"),
        ping(400, FAR, unit="U2"),
    ]
    states, events = walk(
        pings,
        lambda p: INDEX.containing(p.lon, p.lat),
        lambda p, h: INDEX.distance_m(p.lon, p.lat, h),
        SETTINGS,
    )
    units = {"U1": Unit(), "U2": Unit()}
    expected: list[Event] = []
    for p in pings:
        expected.extend(units[p.unit_id].send(p).events)
    assert events == expected
    assert states == {k: u.state for k, u in units.items()}
    assert {e.unit_id for e in events} == {"U1", "U2"}


# --- properties over random walks --------------------------------------------------------------

KINDS = ["usable"] * 8 + ["poor", "late", "duplicate"]
DIRECTIONS = [(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0), (0.6, 0.8), (-0.8, 0.6)]
COORD = st.integers(-1000, 3000).map(lambda d: d / 10)  # metres, to 0.1 m
UNIT_START = st.tuples(
    st.sampled_from([None, "police", "pcso"]),  # the unit's type, if it ever gives one
    st.tuples(COORD, COORD),  # where it starts
    st.integers(0, 100_000),  # when it starts (ms after T0)
    st.integers(1_000, 400_000),  # how long after its last step it pings from far away
)
STEP = st.tuples(
    st.integers(0, 2),  # which unit (modulo the number of units)
    st.sampled_from(KINDS),
    st.one_of(  # time step in ms, 1-400 s, often short (a late ping goes back by this much)
        st.integers(1_000, 40_000),
        st.integers(1_000, 400_000),
        st.sampled_from([59_999, 60_000, 300_000, 300_001]),
    ),
    st.one_of(st.integers(0, 150), st.integers(0, 800)).map(lambda d: d / 10),  # step, metres
    st.sampled_from(DIRECTIONS),
    st.tuples(COORD, COORD),  # where a late ping claims to be
    st.one_of(st.none(), st.floats(0, 50)),  # accuracy of a usable ping
    st.floats(50.001, 500),  # accuracy of a poor one
    st.booleans(),  # whether a usable ping carries the unit's type
)
Route = list[tuple[str, Ping, str]]


@st.composite
def routes(draw: st.DrawFn) -> Route:
    """Random walks of 1-3 units around A and B: (unit, ping, what the ping is meant to be).

    Each unit has a fixed unit_type (or none) that appears on some of its usable pings only.
    Each walk ends far away ("end"), then comes a last ping much later ("end" too): signal loss,
    if the unit is somehow still present.
    """
    starts = draw(st.lists(UNIT_START, min_size=1, max_size=3))
    steps = draw(st.lists(STEP, min_size=10, max_size=80))
    units = [f"U{i}" for i in range(len(starts))]
    types = {u: start[0] for u, start in zip(units, starts, strict=True)}
    pos = {u: start[1] for u, start in zip(units, starts, strict=True)}
    clock = {u: T0 + start[2] for u, start in zip(units, starts, strict=True)}
    last_usable: dict[str, int | None] = dict.fromkeys(units)
    out: Route = []

    def emit(
        unit: str, ts: int, xy: tuple[float, float], kind: str, acc: object, typed: bool
    ) -> None:
        lon, lat = lonlat(*xy)
        accuracy = acc if isinstance(acc, float) else None
        unit_type = types[unit] if typed and kind in ("usable", "end") else None
        if kind in ("usable", "end"):
            last_usable[unit] = ts
        out.append((unit, Ping(unit, ts, lat, lon, accuracy, unit_type), kind))

    for which, kind, dt, distance, (dx, dy), late_xy, acc, poor_acc, typed in steps:
        unit = units[which % len(units)]
        previous = last_usable[unit]
        if previous is None and kind in ("late", "duplicate"):
            kind = "usable"
        if kind == "late" and previous is not None:
            emit(unit, previous - dt, late_xy, kind, None, False)
        elif kind == "duplicate" and previous is not None:
            emit(unit, previous, pos[unit], kind, None, False)
        else:
            clock[unit] += dt
            x, y = pos[unit]
            x = min(max(x + distance * dx, -150.0), 350.0)
            y = min(max(y + distance * dy, -150.0), 350.0)
            pos[unit] = (x, y)
            emit(unit, clock[unit], (x, y), kind, poor_acc if kind == "poor" else acc, typed)
    for unit, start in zip(units, starts, strict=True):
        clock[unit] += start[3]
        emit(unit, clock[unit], (3000, -3000), "end", None, True)
        clock[unit] += 10_000_000
        emit(unit, clock[unit], (3000, -3000), "end", None, False)
    return out


def run_walk(route: Route) -> tuple[dict[str, UnitState], list[Event]]:
    states: dict[str, UnitState] = {}
    events: list[Event] = []
    for unit, p, kind in route:
        before = states.get(unit)
        result = feed(before, p)
        expected = {
            "usable": Outcome.USABLE,
            "end": Outcome.USABLE,
            "poor": Outcome.POOR_ACCURACY,
        }.get(kind, Outcome.LATE)
        assert result.outcome is expected
        if result.outcome is not Outcome.USABLE:
            assert result.events == ()
            if before is not None:
                assert result.state.last_ms == before.last_ms
                assert result.state.visits == before.visits
        states[unit] = result.state
        assert (
            UnitState.from_dict(orjson.loads(orjson.dumps(result.state.to_dict()))) == result.state
        )
        events.extend(result.events)
    return states, events


def check_visits(route: Route, events: Sequence[Event]) -> None:
    usable_ts: dict[str, set[int]] = defaultdict(set)
    types: dict[str, str] = {}
    for unit, p, kind in route:
        if kind in ("usable", "end"):
            usable_ts[unit].add(p.ts_ms)
            if p.unit_type is not None:
                types[unit] = p.unit_type

    # every exit is immediately followed by its dwell
    for i, e in enumerate(events):
        if isinstance(e, GeofenceEvent) and e.type == "exit":
            d = events[i + 1]
            assert isinstance(d, DwellEvent)
            assert (d.unit_id, d.hotspot_id, d.exit_ms, d.exit_reason, d.unit_type) == (
                e.unit_id,
                e.hotspot_id,
                e.ts_ms,
                e.reason,
                e.unit_type,
            )
        if isinstance(e, DwellEvent):
            prev = events[i - 1]
            assert isinstance(prev, GeofenceEvent) and prev.type == "exit"

    streams: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in events:
        streams[e.unit_id, e.hotspot_id].append(e)
        ts = [e.enter_ms, e.exit_ms] if isinstance(e, DwellEvent) else [e.ts_ms]
        assert set(ts) <= usable_ts[e.unit_id]
        assert e.unit_type in ("unknown", types.get(e.unit_id))
    exits = [e for e in events if isinstance(e, GeofenceEvent) and e.type == "exit"]
    dwells = [e for e in events if isinstance(e, DwellEvent)]
    assert len(dwells) == len(exits)

    for (_unit, hotspot_id), stream in streams.items():
        geo = [e for e in stream if isinstance(e, GeofenceEvent)]
        dw = [e for e in stream if isinstance(e, DwellEvent)]
        # enter, exit, enter, exit, ... and every enter has exactly one exit
        assert [e.type for e in geo] == ["enter", "exit"] * (len(geo) // 2)
        assert len(geo) % 2 == 0 and len(dw) == len(geo) // 2
        previous_exit = None
        for (enter, exit_), dwell in zip(zip(geo[::2], geo[1::2], strict=True), dw, strict=True):
            assert enter.reason is None
            assert exit_.reason in (ExitReason.LEFT, ExitReason.SIGNAL_LOST)
            assert exit_.ts_ms >= enter.ts_ms
            assert previous_exit is None or enter.ts_ms > previous_exit  # visits never overlap
            previous_exit = exit_.ts_ms
            assert (dwell.enter_ms, dwell.exit_ms) == (enter.ts_ms, exit_.ts_ms)
            assert dwell.duration_s == (exit_.ts_ms - enter.ts_ms) / 1000
            assert dwell.to_json_dict()["duration_s"] == dwell.duration_s
            assert exit_.unit_type == enter.unit_type == dwell.unit_type
            assert hotspot_id in INDEX.containing(enter.lon, enter.lat)
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)


def reference_events(route: Route) -> dict[tuple[str, str], list[tuple[object, ...]]]:
    """The presence rules written out again, one (unit, hot spot) at a time, with shapely for
    "inside": per stream, the events as (type, ts, reason, lat, lon, unit_type)."""
    out: dict[tuple[str, str], list[tuple[object, ...]]] = defaultdict(list)
    for hotspot in (A, B):
        last: dict[str, Ping] = {}  # last usable ping per unit
        known_type: dict[str, str] = {}
        # per unit: absent, or [enter unit_type, first ping of the open outside streak or None]
        visit: dict[str, list[object]] = {}
        for unit, p, _ in route:
            if p.accuracy_m is not None and p.accuracy_m > SETTINGS.max_accuracy_m:
                continue  # unusable
            if unit in last and p.ts_ms <= last[unit].ts_ms:
                continue  # late or duplicate
            if p.unit_type is not None:
                known_type[unit] = p.unit_type
            stream = out[unit, hotspot.id]
            v = visit.get(unit)
            if v is not None and p.ts_ms - last[unit].ts_ms > SETTINGS.signal_timeout_s * 1000:
                q = v[1] if isinstance(v[1], Ping) else last[unit]
                reason = "left" if isinstance(v[1], Ping) else "signal_lost"
                stream.append(("exit", q.ts_ms, reason, q.lat, q.lon, v[0]))
                v = visit.pop(unit)
                v = None
            inside = shapely.intersects_xy(hotspot.geometry, p.lon, p.lat)
            if v is None:
                if inside:
                    unit_type = known_type.get(unit, "unknown")
                    visit[unit] = [unit_type, None]
                    stream.append(("enter", p.ts_ms, None, p.lat, p.lon, unit_type))
            elif inside:
                v[1] = None
            else:
                if v[1] is None:
                    v[1] = p
                first = v[1]
                assert isinstance(first, Ping)
                far = INDEX.distance_m(p.lon, p.lat, hotspot.id) > SETTINGS.exit_buffer_m
                if far or p.ts_ms - first.ts_ms >= SETTINGS.exit_grace_s * 1000:
                    stream.append(("exit", first.ts_ms, "left", first.lat, first.lon, v[0]))
                    del visit[unit]
            last[unit] = p
    return {k: v for k, v in out.items() if v}


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(routes())
def test_random_walks_end_with_every_visit_closed(route: Route) -> None:
    states, events = run_walk(route)
    check_visits(route, events)
    assert all(s.visits == () for s in states.values())

    # walk() is the same thing
    w_states, w_events = walk(
        [p for _, p, _ in route],
        lambda p: INDEX.containing(p.lon, p.lat),
        lambda p, h: INDEX.distance_m(p.lon, p.lat, h),
        SETTINGS,
    )
    assert (w_states, w_events) == (states, events)

    # and a second reading of the rules, hot spot by hot spot, agrees event for event
    got: dict[tuple[str, str], list[tuple[object, ...]]] = defaultdict(list)
    for e in events:
        if isinstance(e, GeofenceEvent):
            reason = None if e.reason is None else e.reason.value
            got[e.unit_id, e.hotspot_id].append(
                (e.type, e.ts_ms, reason, e.lat, e.lon, e.unit_type)
            )
    assert dict(got) == reference_events(route)


@FAST
@given(routes(), st.integers(1, 10**9))
def test_random_walks_closed_by_the_clock(route: Route, later: int) -> None:
    """Drop the walks' ends (far away, then silence) and let ``expire`` with a far-future clock
    close the visits still open."""
    cut = [r for r in route if r[2] != "end"]
    states, events = run_walk(cut)
    opened = {
        (e.unit_id, e.hotspot_id)
        for e in events
        if isinstance(e, GeofenceEvent) and e.type == "enter"
    }
    for unit in sorted(states):
        state = states[unit]
        deadline = signal_deadline_ms(state, SETTINGS)
        if deadline is None:
            assert state.visits == ()
            continue
        assert expire(unit, state, deadline, SETTINGS) == (state, ())
        states[unit], closing = expire(unit, state, deadline + later, SETTINGS)
        assert states[unit].visits == ()
        assert states[unit].last_ms == state.last_ms
        assert {e.hotspot_id for e in closing} == set(state.hotspot_ids)
        events.extend(closing)
    check_visits(cut, events)
    assert {(e.unit_id, e.hotspot_id) for e in events} == opened


@FAST
@given(routes(), st.randoms(use_true_random=False))
def test_noticing_silence_by_clock_or_by_ping_gives_the_same_events(
    route: Route, rnd: random.Random
) -> None:
    """docs/interface.md, Semantics: exit: signal lost: which of the two notices the silence
    first changes only when the exit is emitted, never what it says. The clock never reads
    later than the unit's next ping."""
    ping_states, ping_only = run_walk(route)
    states: dict[str, UnitState] = {}
    with_clock: list[Event] = []
    for unit, p, _ in route:
        state = states.get(unit)
        if state is not None and state.last_ms is not None and p.ts_ms > state.last_ms:
            deadline = state.last_ms + SETTINGS.signal_timeout_ms
            now = rnd.choice(
                [
                    state.last_ms,
                    deadline,
                    deadline + 1,
                    p.ts_ms,
                    rnd.randint(state.last_ms, p.ts_ms),
                ]
            )
            if now <= p.ts_ms:
                state, events = expire(unit, state, now, SETTINGS)
                with_clock.extend(events)
        result = feed(state, p)
        states[unit] = result.state
        with_clock.extend(result.events)

    def by_unit(events: list[Event]) -> dict[str, list[dict[str, object]]]:
        """Each unit's events in order. Across units the clock may emit earlier: a silence it
        notices at an unusable ping is noticed by pings alone only at the next usable one."""
        grouped: dict[str, list[dict[str, object]]] = {}
        for e in events:
            grouped.setdefault(e.unit_id, []).append(e.to_json_dict())
        return grouped

    assert by_unit(with_clock) == by_unit(ping_only)
    assert states == ping_states
