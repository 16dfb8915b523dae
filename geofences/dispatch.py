"""Who to send: the nearest eligible units for a hot spot at risk (docs/interface.md, Messages:
DispatchSuggestion).

A suggestion is advisory. Alerts are decided by event time and are deterministic; a suggestion
depends on where units were (the :class:`geofences.positions.PositionView`) when the worker
decided, so it is never part of the coverage ledger. The rules, all here:

- offered: a unit of one of the window's ``unit_types`` (any type when the window names none),
  whose last fix is at most ``signal_timeout_ms`` old;
- ranked free before busy, then by straight-line distance to the polygon (0 inside it, holes
  excluded), in metres of the view's projection to 0.1 m as published, then by ``unit_id``;
  the first ``max_units``;
- busy: inside another hot spot whose open window is still short (:func:`short_until_ms`, by
  the ledger of that hot spot's owner);
- ``eta_minutes``: the distance walked at ``walking_speed_mps``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from geofences.coverage import HotspotCoverage
from geofences.positions import Fix, PositionView
from geofences.rules import met_due
from geofences.timefmt import format_ms
from geofences.windows import WindowInstance

_SUGGESTION_NAMESPACE = uuid.UUID("0f1c8a64-5d0e-4b8e-9d7a-2f4e6c3b9a10")


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """The dispatch rules' settings (docs/interface.md, Settings)."""

    walking_speed_mps: float = 1.4
    max_units: int = 3
    #: a hot spot still at risk gets a new suggestion when its ranking changes, at most this often
    refresh_s: float = 60.0

    @property
    def refresh_ms(self) -> int:
        return round(self.refresh_s * 1000)

    def __post_init__(self) -> None:
        if not (self.walking_speed_mps > 0 and math.isfinite(self.walking_speed_mps)):
            raise ValueError("walking_speed_mps must be a positive number")
        if not self.refresh_s > 0:
            raise ValueError("refresh_s must be positive")
        if self.max_units < 1:
            raise ValueError("max_units must be at least 1")


@dataclass(frozen=True, slots=True)
class SuggestedUnit:
    unit_id: str
    unit_type: str
    distance_m: float
    eta_minutes: float
    fix_age_s: float
    busy: bool

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "unit_type": self.unit_type,
            "distance_m": round(self.distance_m, 1),
            "eta_minutes": round(self.eta_minutes, 1),
            "fix_age_s": round(self.fix_age_s, 1),
            "busy": self.busy,
        }


def ranking(units: tuple[SuggestedUnit, ...]) -> tuple[tuple[str, bool], ...]:
    """What a refresh compares: the units in order, and which are busy (distances and ages move
    with every fix; a new message is worth it only when the order does)."""
    return tuple((u.unit_id, u.busy) for u in units)


def rank(
    view: PositionView,
    polygon_m: Any,
    unit_types: frozenset[str] | None,
    now_ms: int,
    signal_timeout_ms: int,
    busy: Callable[[Fix], bool],
    settings: DispatchSettings,
) -> tuple[SuggestedUnit, ...]:
    """The units to suggest for a hot spot whose geometry in the view's projected metres is
    ``polygon_m`` (see the module docstring).

    The offered units' distances to the polygon's bounding box (never more than their distance
    to the polygon) put them in order; the nearest few are measured exactly, more and more of them,
    until no unit left could enter the list: its rounded distance would be more than the last
    free unit's in it."""
    limit = settings.max_units
    slots, x, y = view.offered(unit_types, now_ms - signal_timeout_ms)
    if not len(slots):
        return ()
    xmin, ymin, xmax, ymax = shapely.bounds(polygon_m).tolist()
    dx = np.maximum(np.maximum(xmin - x, x - xmax), 0.0)
    dy = np.maximum(np.maximum(ymin - y, y - ymax), 0.0)
    below = dx * dx + dy * dy  # squared
    found: list[tuple[bool, float, str, Fix]] = []
    free: list[float] = []
    done = 0
    size = 8 * limit
    order = np.argpartition(below, size)[:size] if size < len(below) else np.arange(len(below))
    while True:
        batch = order[done:]  # the units measured now
        distances = shapely.distance(polygon_m, shapely.points(x[batch], y[batch])).tolist()
        for slot, distance in zip(slots[batch].tolist(), distances, strict=True):
            fix = view.fix_at(slot)
            is_busy = busy(fix)
            distance = round(distance, 1)  # as published: equal figures tie
            found.append((is_busy, distance, fix.unit_id, fix))
            if not is_busy:
                free.append(distance)
        done = len(order)
        if done == len(below):
            break
        rest = np.ones(len(below), dtype=bool)
        rest[order] = False
        bound = math.sqrt(float(below[rest].min()))
        # a unit at ``bound`` or further rounds to more than ``bound - 0.05``; the margin
        # covers the bounding box's and shapely's roundings
        if len(free) >= limit and sorted(free)[limit - 1] < bound - 0.05 - 1e-6:
            break
        size *= 4
        order = np.concatenate([order, _nearest(below, rest, size - done)])
    found.sort(key=lambda entry: entry[:3])
    speed = settings.walking_speed_mps
    return tuple(
        SuggestedUnit(
            fix.unit_id,
            fix.unit_type,
            distance,
            distance / speed / 60.0,
            max(0, now_ms - fix.ts_ms) / 1000.0,
            is_busy,
        )
        for is_busy, distance, _, fix in found[:limit]
    )


def _nearest(below: Any, rest: Any, count: int) -> Any:
    """The indices of the ``count`` least ``below`` among those ``rest`` marks (all of them
    if fewer)."""
    left = np.flatnonzero(rest)
    if count >= len(left):
        return left
    return left[np.argpartition(below[left], count)[:count]]


def short_until_ms(ledger: HotspotCoverage, now_ms: int) -> int | None:
    """The end of the hot spot's latest open window instance still short of its minutes at
    ``now_ms`` (``start <= now < end``, not met), or None: while it is not None, a unit inside
    the hot spot is busy."""
    until: int | None = None
    for instance in ledger.instances():
        if not instance.start_ms <= now_ms < instance.end_ms:
            continue
        if "met" in ledger.fired(instance.key) or met_due(instance, ledger.covered_ms(instance)):
            continue
        until = instance.end_ms if until is None else max(until, instance.end_ms)
    return until


def at_risk_instance(ledger: HotspotCoverage, now_ms: int) -> WindowInstance | None:
    """The open window instance a suggestion is due for at ``now_ms``: its ``at_risk`` alert
    has fired, it is not met, and no eligible unit is present (the hot spot is at risk, as the
    control room shows it); None when there is none."""
    for instance in ledger.instances():
        if not instance.start_ms <= now_ms < instance.end_ms:
            continue
        fired = ledger.fired(instance.key)
        if (
            "at_risk" in fired
            and "met" not in fired
            and not met_due(instance, ledger.covered_ms(instance))
            and not ledger.eligible_present(instance)
        ):
            return instance
    return None


def is_busy(fix: Fix, hotspot_id: str, short_until: Mapping[str, int], now_ms: int) -> bool:
    """Whether the unit is inside another hot spot than ``hotspot_id`` whose open window is
    still short at ``now_ms`` (``short_until``: hot spot → :func:`short_until_ms`)."""
    for other in fix.inside:
        if other != hotspot_id:
            until = short_until.get(other)
            if until is not None and now_ms < until:
                return True
    return False


def suggestion_id(alert_id: str, units: tuple[SuggestedUnit, ...]) -> str:
    """Deterministic id of a suggestion: uuid5 of the alert it answers and its ranking, so a
    redelivered suggestion keeps its id and a changed ranking gets a new one."""
    text = "|".join([alert_id, *(f"{u}:{int(b)}" for u, b in ranking(units))])
    return str(uuid.uuid5(_SUGGESTION_NAMESPACE, text))


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A DispatchSuggestion (docs/interface.md, Messages); ``to_json_dict`` is its topic value."""

    alert_id: str
    hotspot_id: str
    ts_ms: int
    units: tuple[SuggestedUnit, ...]

    @property
    def suggestion_id(self) -> str:
        return suggestion_id(self.alert_id, self.units)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "hotspot_id": self.hotspot_id,
            "ts": format_ms(self.ts_ms),
            "units": [u.to_json_dict() for u in self.units],
            "suggestion_id": self.suggestion_id,
        }


def nearest_text(units: list[Mapping[str, Any]]) -> str:
    """The text webhooks' words for a suggestion's first unit: ``nearest: police-04, 420 m
    (~5 min)``, or ``nearest: no eligible unit`` when it has none."""
    if not units:
        return "nearest: no eligible unit"
    first = units[0]
    minutes = max(1, math.ceil(float(first["eta_minutes"]) - 1e-9))
    busy = ", busy" if first.get("busy") else ""
    return (
        f"nearest: {first['unit_id']}, {round(float(first['distance_m']))} m (~{minutes} min){busy}"
    )


def render_text(hotspot_id: str, hotspot_name: str, units: list[Mapping[str, Any]]) -> str:
    """The text webhooks' line of a suggestion, after its hot spot's at-risk line, e.g.
    ``HS-03 Clock Tower: at risk — nearest: police-04, 420 m (~5 min)``."""
    label = hotspot_id
    if hotspot_name and hotspot_name != hotspot_id:
        label = f"{hotspot_id} {hotspot_name}"
    return f"{label}: at risk — {nearest_text(units)}"
