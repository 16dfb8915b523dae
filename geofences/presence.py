"""The per-unit presence state machine: docs/interface.md, Semantics, from "Valid and usable
pings" to "Hot spot removed, unit types".

Every rule lives here, and nowhere else:

* usable ping — valid and ``accuracy_m`` absent or ≤ ``max_accuracy_m``;
* order — a usable ping not later than the unit's last usable ping is late or a duplicate;
* enter — a usable ping inside a hot spot the unit is not present in;
* exit (left) — an outside streak that goes beyond ``exit_buffer_m`` or lasts ``exit_grace_s``;
* exit (signal lost) — silence longer than ``signal_timeout_s``, noticed by the next ping
  (:func:`observe`) or by the clock (:func:`expire`), with the same result either way;
* dwell — one per exit, ``exit ts − enter ts``.

The functions are pure: a state and a ping (or a clock reading) in, a new state and events out.
The caller supplies which hot spots contain the ping (from the spatial index, computed for a
whole batch at once) and a way to measure a distance, asked only when a rule needs one.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import Any, NamedTuple

from geofences.pings import UNKNOWN_UNIT_TYPE, Ping
from geofences.timefmt import format_ms

_EVENT_NAMESPACE = uuid.UUID("5b0f3a52-8f1e-4c55-9a57-6f1b1c2a7d10").bytes


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    """The settings of the presence rules (docs/interface.md, Semantics), with their defaults.

    ``exit_grace_s`` is also how long after a window's end its coverage can still change, so the
    coverage ledger reads it from here (``CoverageSettings.presence``)."""

    max_accuracy_m: float = 50.0
    exit_buffer_m: float = 20.0
    exit_grace_s: float = 60.0
    signal_timeout_s: float = 300.0
    #: the same in integer ms, made once (read on every ping)
    exit_grace_ms: int = field(init=False, repr=False, compare=False)
    signal_timeout_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exit_grace_ms", round(self.exit_grace_s * 1000))
        object.__setattr__(self, "signal_timeout_ms", round(self.signal_timeout_s * 1000))


class Outcome(StrEnum):
    """What became of a valid ping (counted by the shell)."""

    USABLE = "usable"
    POOR_ACCURACY = "poor_accuracy"
    LATE = "late"


#: looked up once: reading a member off an enum class is an attribute lookup on every ping
_USABLE = Outcome.USABLE


class ExitReason(StrEnum):
    LEFT = "left"
    SIGNAL_LOST = "signal_lost"
    HOTSPOT_REMOVED = "hotspot_removed"


class Visit(NamedTuple):
    """An open visit of one unit to one hot spot; never changed once made (a new ping makes a
    new one), so states can share it.

    ``streak_*`` describe the open outside streak (its first ping), if any.
    ``last_inside_ms`` is the latest usable ping inside the hot spot (coverage counts up to it).
    """

    hotspot_id: str
    enter_ms: int
    unit_type: str
    last_inside_ms: int
    streak_ms: int | None = None
    streak_lat: float = 0.0
    streak_lon: float = 0.0


_visit_hotspot = attrgetter("hotspot_id")


@dataclass(slots=True)
class UnitState:
    """Everything remembered about one unit; snapshot with :meth:`to_dict`.

    ``visits`` is a tuple ordered by hot spot id: a unit is in none, one or a few hot spots, and
    a tuple is much smaller than a dict (a worker tracks every unit's state).
    """

    unit_type: str = UNKNOWN_UNIT_TYPE
    last_ms: int | None = None
    last_lat: float = 0.0
    last_lon: float = 0.0
    visits: tuple[Visit, ...] = ()

    @property
    def hotspot_ids(self) -> tuple[str, ...]:
        """The hot spots the unit is present in, in order."""
        return tuple(v.hotspot_id for v in self.visits)

    def visit(self, hotspot_id: str) -> Visit | None:
        """The open visit to ``hotspot_id``, if any."""
        for v in self.visits:
            if v.hotspot_id == hotspot_id:
                return v
        return None

    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-able snapshot; :meth:`from_dict` restores it exactly."""
        return {
            "t": self.unit_type,
            "l": [self.last_ms, self.last_lat, self.last_lon],
            "v": {v.hotspot_id: list(v[1:]) for v in self.visits},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnitState:
        last_ms, last_lat, last_lon = data["l"]
        visits = tuple(
            sorted(
                (Visit(hotspot_id, *fields) for hotspot_id, fields in data["v"].items()),
                key=_visit_hotspot,
            )
        )
        return cls(data["t"], last_ms, last_lat, last_lon, visits)


def visit_event_id(kind: str, unit_id: str, hotspot_id: str, enter_ms: int) -> str:
    """Deterministic id (docs/interface.md, Ids and duplicates): a visit is one unit in one hot
    spot from one enter time, and it has exactly one enter, one exit and one dwell, so the same
    pings give the same ids.

    ``str(uuid.uuid5(namespace, name))``, spelled out: building the ``UUID`` object costs more
    than the hash, once per event."""
    name = f"{kind}|{unit_id}|{hotspot_id}|{enter_ms}".encode()
    digest = bytearray(hashlib.sha1(_EVENT_NAMESPACE + name, usedforsecurity=False).digest())
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # RFC 4122 variant
    x = digest[:16].hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


@dataclass(frozen=True, slots=True)
class GeofenceEvent:
    """docs/interface.md, Messages: GeofenceEvent. ``reason`` is ``None`` for an enter."""

    type: str
    unit_id: str
    unit_type: str
    hotspot_id: str
    ts_ms: int
    lat: float
    lon: float
    reason: ExitReason | None
    enter_ms: int

    @property
    def event_id(self) -> str:
        return visit_event_id(self.type, self.unit_id, self.hotspot_id, self.enter_ms)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "unit_id": self.unit_id,
            "unit_type": self.unit_type,
            "hotspot_id": self.hotspot_id,
            "ts": format_ms(self.ts_ms),
            "lat": self.lat,
            "lon": self.lon,
            "reason": None if self.reason is None else self.reason.value,
        }


@dataclass(frozen=True, slots=True)
class DwellEvent:
    """docs/interface.md, Messages: DwellEvent: one completed visit, emitted with its exit."""

    unit_id: str
    unit_type: str
    hotspot_id: str
    enter_ms: int
    exit_ms: int
    exit_reason: ExitReason

    @property
    def event_id(self) -> str:
        return visit_event_id("dwell", self.unit_id, self.hotspot_id, self.enter_ms)

    @property
    def duration_s(self) -> float:
        return (self.exit_ms - self.enter_ms) / 1000

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "unit_id": self.unit_id,
            "unit_type": self.unit_type,
            "hotspot_id": self.hotspot_id,
            "enter_ts": format_ms(self.enter_ms),
            "exit_ts": format_ms(self.exit_ms),
            "duration_s": self.duration_s,
            "exit_reason": self.exit_reason.value,
        }


Event = GeofenceEvent | DwellEvent


class Observation(NamedTuple):
    """The result of one ping: its outcome, the unit's new state and the events it caused.

    ``still_inside`` lists the hot spots the unit was already present in and this ping is
    inside: the coverage ledger's "latest usable ping inside" moves for those. (A named tuple:
    one is made per ping, and it is cheaper to build than a frozen dataclass.)
    """

    outcome: Outcome
    state: UnitState
    events: tuple[Event, ...] = ()
    still_inside: tuple[str, ...] = ()


def _exit(
    unit_id: str,
    visit: Visit,
    reason: ExitReason,
    ts_ms: int,
    lat: float,
    lon: float,
) -> tuple[GeofenceEvent, DwellEvent]:
    hotspot_id = visit.hotspot_id
    return (
        GeofenceEvent(
            "exit", unit_id, visit.unit_type, hotspot_id, ts_ms, lat, lon, reason, visit.enter_ms
        ),
        DwellEvent(unit_id, visit.unit_type, hotspot_id, visit.enter_ms, ts_ms, reason),
    )


def _left(unit_id: str, visit: Visit) -> tuple[GeofenceEvent, DwellEvent]:
    """Exit (left), dated at the first ping of the visit's outside streak."""
    assert visit.streak_ms is not None
    return _exit(
        unit_id, visit, ExitReason.LEFT, visit.streak_ms, visit.streak_lat, visit.streak_lon
    )


def _close_all(unit_id: str, state: UnitState) -> list[Event]:
    """Signal loss: the events that close every open visit (docs/interface.md, Semantics: exit:
    signal lost)."""
    events: list[Event] = []
    if state.last_ms is None:
        return events
    for visit in state.visits:
        if visit.streak_ms is not None:
            events.extend(_left(unit_id, visit))
        else:
            events.extend(
                _exit(
                    unit_id,
                    visit,
                    ExitReason.SIGNAL_LOST,
                    state.last_ms,
                    state.last_lat,
                    state.last_lon,
                )
            )
    return events


def observe(
    state: UnitState | None,
    ping: Ping,
    inside: Collection[str],
    distance_m: Callable[[Ping, str], float],
    settings: PresenceSettings,
) -> Observation:
    """Apply one valid ping of ``ping.unit_id`` (docs/interface.md, Semantics).

    ``inside`` holds the ids of every hot spot containing the ping (boundary included).
    ``distance_m(ping, hotspot_id)`` gives the ping's distance in metres from that hot spot;
    it is called only for hot spots the unit is present in and the ping is outside of.
    The given state is not modified.
    """
    current = UnitState() if state is None else state
    unit_id, ts_ms, lat, lon, accuracy_m, ping_type = ping
    last_ms = current.last_ms
    in_order = last_ms is None or ts_ms > last_ms
    if accuracy_m is not None and accuracy_m > settings.max_accuracy_m:
        if in_order and ping_type is not None and ping_type != current.unit_type:
            updated = UnitState(
                ping_type, last_ms, current.last_lat, current.last_lon, current.visits
            )
            return Observation(Outcome.POOR_ACCURACY, updated)
        return Observation(Outcome.POOR_ACCURACY, current)
    if not in_order:
        return Observation(Outcome.LATE, current)

    unit_type = current.unit_type if ping_type is None else ping_type
    visits = current.visits
    if not visits:
        if not inside:  # most pings away from hot spots: nothing to decide
            new = UnitState(unit_type, ts_ms, lat, lon)
            return tuple.__new__(Observation, (_USABLE, new, (), ()))
        events: list[Event] = []
    elif last_ms is not None and ts_ms - last_ms > settings.signal_timeout_ms:
        events = _close_all(unit_id, current)
        visits = ()
    else:
        events = []

    kept: list[Visit] = []
    still_inside: list[str] = []
    for visit in visits:
        hotspot_id = visit.hotspot_id
        if hotspot_id in inside:  # the common case: built as a plain tuple is (see Ping)
            kept.append(
                tuple.__new__(
                    Visit, (hotspot_id, visit.enter_ms, visit.unit_type, ts_ms, None, 0.0, 0.0)
                )
            )
            still_inside.append(hotspot_id)
            continue
        if visit.streak_ms is None:
            visit = Visit(
                hotspot_id, visit.enter_ms, visit.unit_type, visit.last_inside_ms, ts_ms, lat, lon
            )
        assert visit.streak_ms is not None
        if (
            ts_ms - visit.streak_ms >= settings.exit_grace_ms
            or distance_m(ping, hotspot_id) > settings.exit_buffer_m
        ):
            events.extend(_left(unit_id, visit))
        else:
            kept.append(visit)

    if len(inside) > len(still_inside):
        entered = sorted(h for h in inside if h not in still_inside)
        for hotspot_id in entered:
            kept.append(Visit(hotspot_id, ts_ms, unit_type, ts_ms))
            events.append(
                GeofenceEvent("enter", unit_id, unit_type, hotspot_id, ts_ms, lat, lon, None, ts_ms)
            )
        if len(kept) > 1:
            kept.sort(key=_visit_hotspot)
    new = UnitState(unit_type, ts_ms, lat, lon, tuple(kept))
    return tuple.__new__(
        Observation, (_USABLE, new, tuple(events) if events else (), tuple(still_inside))
    )


def signal_deadline_ms(state: UnitState, settings: PresenceSettings) -> int | None:
    """The clock reading after which :func:`expire` closes the unit's visits, or ``None``."""
    if not state.visits or state.last_ms is None:
        return None
    return state.last_ms + settings.signal_timeout_ms


def expire(
    unit_id: str, state: UnitState, now_ms: int, settings: PresenceSettings
) -> tuple[UnitState, tuple[Event, ...]]:
    """Signal loss noticed by the clock: ``now_ms`` passed the last usable ping by more than
    ``signal_timeout_s`` (docs/interface.md, Semantics: exit: signal lost). Returns the state
    unchanged and no events otherwise."""
    deadline = signal_deadline_ms(state, settings)
    if deadline is None or now_ms <= deadline:
        return state, ()
    events = _close_all(unit_id, state)
    new = UnitState(state.unit_type, state.last_ms, state.last_lat, state.last_lon)
    return new, tuple(events)


def remove_hotspots(
    unit_id: str, state: UnitState, known: Collection[str]
) -> tuple[UnitState, tuple[Event, ...]]:
    """Close visits to hot spots that no longer exist (reason ``hotspot_removed``), dated at the
    unit's last usable ping: the last moment it was seen there."""
    gone = [v for v in state.visits if v.hotspot_id not in known]
    if not gone or state.last_ms is None:
        return state, ()
    events: list[Event] = []
    for visit in gone:
        events.extend(
            _exit(
                unit_id,
                visit,
                ExitReason.HOTSPOT_REMOVED,
                state.last_ms,
                state.last_lat,
                state.last_lon,
            )
        )
    kept = tuple(v for v in state.visits if v.hotspot_id in known)
    new = UnitState(state.unit_type, state.last_ms, state.last_lat, state.last_lon, kept)
    return new, tuple(events)


def walk(
    pings: Iterable[Ping],
    containing: Callable[[Ping], Collection[str]],
    distance_m: Callable[[Ping, str], float],
    settings: PresenceSettings,
) -> tuple[dict[str, UnitState], list[Event]]:
    """Replay pings one at a time (the reference path): the states reached and every event."""
    states: dict[str, UnitState] = {}
    events: list[Event] = []
    for ping in pings:
        result = observe(states.get(ping.unit_id), ping, containing(ping), distance_m, settings)
        states[ping.unit_id] = result.state
        events.extend(result.events)
    return states, events
