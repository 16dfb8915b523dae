"""Every unit's last usable fix, for dispatch suggestions (docs/architecture.md, Dispatch).

Units are partitioned by unit and hot spots by hot spot, so the worker that owns a hot spot does
not hold the units near it. The presence stage therefore publishes each unit's last usable fix
(:class:`Fix`) to a compacted topic when :func:`publish_due` says so, and every worker keeps the
whole topic in a :class:`PositionView`: the latest fix per unit, by ts (a replayed or late fix
never replaces a newer one).
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from geofences.errors import InvalidPosition
from geofences.presence import UnitState
from geofences.projection import FloatArray, LocalProjection, metres_per_degree


@dataclass(frozen=True, slots=True)
class Fix:
    """A unit's last usable fix: where and when, its type, and the hot spots it is inside
    (the presence stage's open visits), which tell a reader whether the unit is busy."""

    unit_id: str
    unit_type: str
    lon: float
    lat: float
    ts_ms: int
    inside: tuple[str, ...] = ()

    def to_json_dict(self) -> dict[str, Any]:
        """The position record's value (internal; ``ts`` in epoch ms)."""
        return {
            "unit_id": self.unit_id,
            "unit_type": self.unit_type,
            "lon": self.lon,
            "lat": self.lat,
            "ts": self.ts_ms,
            "inside": list(self.inside),
        }

    @classmethod
    def from_json_dict(cls, obj: Any) -> Fix:
        """The fix of a position record's value, or :class:`InvalidPosition` naming the field.
        Every worker decodes every record of the topic, so the usual case is checked first."""
        if not isinstance(obj, dict) and not isinstance(obj, Mapping):
            raise InvalidPosition("position: not an object")
        get = obj.get
        unit_id, unit_type = get("unit_id"), get("unit_type")
        lon, lat, ts = get("lon"), get("lat"), get("ts")
        inside = get("inside", [])
        if not isinstance(unit_id, str) or not unit_id:
            raise InvalidPosition("position: unit_id must be a non-empty string")
        if not isinstance(unit_type, str) or not unit_type:
            raise InvalidPosition("position: unit_type must be a non-empty string")
        if not _within(lon, 180.0):
            raise InvalidPosition("position: lon must be a number within ±180")
        if not _within(lat, 90.0):
            raise InvalidPosition("position: lat must be a number within ±90")
        if type(ts) is not int and (isinstance(ts, bool) or not isinstance(ts, int)):
            raise InvalidPosition("position: ts must be integer epoch ms")
        if not -(2**63) <= ts < 2**63:
            raise InvalidPosition("position: ts must be integer epoch ms")
        if not isinstance(inside, list) or (inside and not all(isinstance(h, str) for h in inside)):
            raise InvalidPosition("position: inside must be a list of hot spot ids")
        lon, lat = float(lon), float(lat)  # type: ignore[arg-type]
        return cls(unit_id, unit_type, lon, lat, ts, tuple(inside))


def _within(value: Any, limit: float) -> bool:
    """Whether ``value`` is a finite number (not a bool) within ``±limit``."""
    if type(value) is float:
        return -limit <= value <= limit  # false for NaN and the infinities
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and abs(value) <= limit
    )


def fix_of(unit_id: str, state: UnitState) -> Fix | None:
    """The unit's last usable fix as its state holds it (None before its first)."""
    if state.last_ms is None:
        return None
    return Fix(
        unit_id, state.unit_type, state.last_lon, state.last_lat, state.last_ms, state.hotspot_ids
    )


@dataclass(frozen=True, slots=True)
class PublishRule:
    """When a unit's fix is published again: ``interval_ms`` since the last one published, or
    moved more than ``move_m`` from it. A change of type or of hot spots inside is published at
    once: it changes whether the unit is offered, and whether it is busy."""

    interval_ms: int = 30_000
    move_m: float = 50.0


def distance_m(a: Fix, b: Fix) -> float:
    """Straight-line metres between two fixes, projected about their mean latitude."""
    kx, ky = metres_per_degree((a.lat + b.lat) / 2.0)
    return math.hypot((a.lon - b.lon) * kx, (a.lat - b.lat) * ky)


def publish_due(last: Fix | None, fix: Fix, rule: PublishRule) -> bool:
    """Whether ``fix`` is to be published, ``last`` being the unit's last published fix."""
    if last is None:
        return True
    if fix.ts_ms <= last.ts_ms:
        return False
    if fix.unit_type != last.unit_type or fix.inside != last.inside:
        return True
    return fix.ts_ms - last.ts_ms >= rule.interval_ms or distance_m(last, fix) > rule.move_m


def state_due(last: Fix | None, state: UnitState, rule: PublishRule) -> bool:
    """:func:`publish_due` of the fix ``state`` holds (:func:`fix_of`), without making it:
    asked of every unit a batch touched, and most are not due."""
    if last is None:
        return state.last_ms is not None
    return _due(state, rule, last.ts_ms, last.lon, last.lat, last.unit_type, last.inside)


def _due(
    state: UnitState,
    rule: PublishRule,
    ts_ms: int,
    lon: float,
    lat: float,
    unit_type: str,
    inside: tuple[str, ...],
) -> bool:
    """:func:`state_due` with the last published fix in parts."""
    if state.last_ms is None or state.last_ms <= ts_ms:
        return False
    if state.last_ms - ts_ms >= rule.interval_ms or state.unit_type != unit_type:
        return True
    visits = state.visits
    if len(visits) != len(inside):
        return True
    for visit, hotspot_id in zip(visits, inside, strict=True):  # none or one, mostly
        if visit.hotspot_id != hotspot_id:
            return True
    kx, ky = metres_per_degree((state.last_lat + lat) / 2.0)
    dx, dy = (state.last_lon - lon) * kx, (state.last_lat - lat) * ky
    return dx * dx + dy * dy > rule.move_m * rule.move_m


#: a published fix packed: ts, lon, lat and the code of its type and hot spots inside
_PACKED = struct.Struct("<qddI")


class PublishedFixes:
    """The last fix published for each unit of a presence stage, for :func:`state_due`.

    A stage holds one per unit it tracks, so each is packed in one small ``bytes`` (ts, lon and
    lat exactly, and a code for its type and hot spots inside, a pair shared by many units and
    interned) rather than a :class:`Fix` and its boxed numbers. The interned pairs are the
    types and sets of hot spots seen, never forgotten: a few per hot spot."""

    def __init__(self) -> None:
        self._packed: dict[str, bytes] = {}
        self._kinds: list[tuple[str, tuple[str, ...]]] = []
        self._kind_code: dict[tuple[str, tuple[str, ...]], int] = {}

    def __len__(self) -> int:
        return len(self._packed)

    def __contains__(self, unit_id: object) -> bool:
        return unit_id in self._packed

    def get(self, unit_id: str) -> Fix | None:
        """The unit's last published fix, or None."""
        raw = self._packed.get(unit_id)
        if raw is None:
            return None
        ts_ms, lon, lat, code = _PACKED.unpack(raw)
        unit_type, inside = self._kinds[code]
        return Fix(unit_id, unit_type, lon, lat, ts_ms, inside)

    def put(self, fix: Fix) -> None:
        """``fix`` was published."""
        kind = (fix.unit_type, fix.inside)
        code = self._kind_code.get(kind)
        if code is None:
            code = self._kind_code[kind] = len(self._kinds)
            self._kinds.append(kind)
        self._packed[fix.unit_id] = _PACKED.pack(fix.ts_ms, fix.lon, fix.lat, code)

    def discard(self, unit_id: str) -> None:
        self._packed.pop(unit_id, None)

    def due(self, unit_id: str, state: UnitState, rule: PublishRule) -> bool:
        """:func:`state_due` of the unit's last published fix."""
        raw = self._packed.get(unit_id)
        if raw is None:
            return state.last_ms is not None
        ts_ms, lon, lat, code = _PACKED.unpack(raw)
        unit_type, inside = self._kinds[code]
        return _due(state, rule, ts_ms, lon, lat, unit_type, inside)


class PositionView:
    """The latest fix of every unit, in columns: one slot a unit (a free list reuses the slots
    of removed units), lon, lat and ts in flat arrays, the type as a code into the interned
    types, ``inside`` as an interned tuple. Every worker holds every unit, while rankings are
    rare (hot spots at risk), so the view is shaped for size and a ranking scans it whole with
    numpy (:meth:`offered`) rather than keeping an index up to date on every fix."""

    def __init__(self, projection: LocalProjection) -> None:
        self.projection = projection
        #: unit -> slot; the key is the string ``_ids`` holds
        self._slot: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._lon = array("d")
        self._lat = array("d")
        self._ts = array("q")
        #: a code into ``_types``, or ``_FREE`` for a free slot
        self._type = array("i")
        self._inside: list[tuple[str, ...]] = []
        self._types: list[str] = []
        self._type_code: dict[str, int] = {}
        self._insides: dict[tuple[str, ...], tuple[str, ...]] = {(): ()}
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._slot)

    @property
    def fixes(self) -> Mapping[str, Fix]:
        """The units' fixes, made on demand: unit -> :class:`Fix`."""
        return _Fixes(self)

    def fix_at(self, slot: int) -> Fix:
        unit_id = self._ids[slot]
        assert unit_id is not None
        return Fix(
            unit_id,
            self._types[self._type[slot]],
            self._lon[slot],
            self._lat[slot],
            self._ts[slot],
            self._inside[slot],
        )

    def put(self, fix: Fix) -> bool:
        """Keep ``fix`` unless the unit has one at least as new; returns whether it was kept."""
        slot = self._slot.get(fix.unit_id)
        if slot is not None and self._ts[slot] >= fix.ts_ms:
            return False
        code = self._type_code.get(fix.unit_type)
        if code is None:
            code = self._type_code[fix.unit_type] = len(self._types)
            self._types.append(fix.unit_type)
        inside = self._insides.get(fix.inside)
        if inside is None:
            inside = self._insides[fix.inside] = fix.inside
        if slot is None:
            unit_id = fix.unit_id
            if self._free:
                slot = self._free.pop()
                self._ids[slot] = unit_id
            else:
                slot = len(self._ids)
                self._ids.append(unit_id)
                self._inside.append(())
                self._lon.append(0.0)
                self._lat.append(0.0)
                self._ts.append(0)
                self._type.append(_FREE)
            self._slot[unit_id] = slot
        self._lon[slot] = fix.lon
        self._lat[slot] = fix.lat
        self._ts[slot] = fix.ts_ms
        self._type[slot] = code
        self._inside[slot] = inside
        return True

    def remove(self, unit_id: str) -> None:
        """Forget a unit (a tombstone on the topic)."""
        slot = self._slot.pop(unit_id, None)
        if slot is not None:
            self._ids[slot] = None
            self._inside[slot] = ()
            self._type[slot] = _FREE
            self._free.append(slot)

    def xy(self, unit_id: str) -> tuple[float, float]:
        """The unit's projected position in metres."""
        slot = self._slot[unit_id]
        return self.projection.point_to_metres(self._lon[slot], self._lat[slot])

    def offered(
        self, unit_types: frozenset[str] | None, since_ms: int
    ) -> tuple[IntArray, FloatArray, FloatArray]:
        """The slots of the units of ``unit_types`` (any type: None) whose fix is at least as
        new as ``since_ms``, and their projected x and y in metres (the same floats as
        :meth:`xy`)."""
        # a code's place in ``allowed``; the last place is a free slot's
        allowed = np.zeros(len(self._types) + 1, dtype=bool)
        if unit_types is None:
            allowed[:-1] = True
        else:
            allowed[[self._type_code[t] for t in unit_types if t in self._type_code]] = True
        wanted = allowed[np.frombuffer(self._type, dtype=np.int32)]
        wanted &= np.frombuffer(self._ts, dtype=np.int64) >= since_ms
        slots = np.flatnonzero(wanted)
        lon = np.frombuffer(self._lon, dtype=np.float64)[slots]
        lat = np.frombuffer(self._lat, dtype=np.float64)[slots]
        x, y = self.projection.to_metres(lon, lat)
        return slots, x, y


_FREE = -1

IntArray = npt.NDArray[np.intp]


class _Fixes(Mapping[str, Fix]):
    """:attr:`PositionView.fixes`."""

    def __init__(self, view: PositionView) -> None:
        self._view = view

    def __getitem__(self, unit_id: str) -> Fix:
        return self._view.fix_at(self._view._slot[unit_id])

    def __contains__(self, unit_id: object) -> bool:
        return unit_id in self._view._slot

    def __iter__(self) -> Iterator[str]:
        return iter(self._view._slot)

    def __len__(self) -> int:
        return len(self._view._slot)
