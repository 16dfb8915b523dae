"""Every unit's last usable fix, for dispatch suggestions (docs/architecture.md, Dispatch).

Units are partitioned by unit and hot spots by hot spot, so the worker that owns a hot spot does
not hold the units near it. The presence stage therefore publishes each unit's last usable fix
(:class:`Fix`) to a compacted topic when :func:`publish_due` says so, and every worker keeps the
whole topic in a :class:`PositionView`: the latest fix per unit, by ts (a replayed or late fix
never replaces a newer one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from array import array
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
        """The fix of a position record's value, or :class:`InvalidPosition` naming the field."""
        if not isinstance(obj, Mapping):
            raise InvalidPosition("position: not an object")
        unit_id, unit_type = obj.get("unit_id"), obj.get("unit_type")
        lon, lat, ts = obj.get("lon"), obj.get("lat"), obj.get("ts")
        inside = obj.get("inside", [])
        if not isinstance(unit_id, str) or not unit_id:
            raise InvalidPosition("position: unit_id must be a non-empty string")
        if not isinstance(unit_type, str) or not unit_type:
            raise InvalidPosition("position: unit_type must be a non-empty string")
        for name, value, limit in (("lon", lon, 180.0), ("lat", lat, 90.0)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or abs(value) > limit
            ):
                raise InvalidPosition(f"position: {name} must be a number within ±{limit:g}")
        if isinstance(ts, bool) or not isinstance(ts, int) or not -(2**63) <= ts < 2**63:
            raise InvalidPosition("position: ts must be integer epoch ms")
        if not isinstance(inside, list) or not all(isinstance(h, str) for h in inside):
            raise InvalidPosition("position: inside must be a list of hot spot ids")
        return cls(unit_id, unit_type, float(lon), float(lat), ts, tuple(inside))  # type: ignore[arg-type]


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
    if state.last_ms is None:
        return False
    if last is None:
        return True
    if state.last_ms <= last.ts_ms:
        return False
    if state.last_ms - last.ts_ms >= rule.interval_ms or state.unit_type != last.unit_type:
        return True
    visits, inside = state.visits, last.inside
    if len(visits) != len(inside):
        return True
    for visit, hotspot_id in zip(visits, inside, strict=True):  # none or one, mostly
        if visit.hotspot_id != hotspot_id:
            return True
    kx, ky = metres_per_degree((state.last_lat + last.lat) / 2.0)
    dx, dy = (state.last_lon - last.lon) * kx, (state.last_lat - last.lat) * ky
    return dx * dx + dy * dy > rule.move_m * rule.move_m


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
        types = np.frombuffer(self._type, dtype=np.int32).copy()
        ts = np.frombuffer(self._ts, dtype=np.int64).copy()
        if unit_types is None:
            wanted = types != _FREE
        else:
            codes = [self._type_code[t] for t in unit_types if t in self._type_code]
            wanted = np.isin(types, np.array(codes, dtype=np.int32))
        slots = np.flatnonzero(wanted & (ts >= since_ms))
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
