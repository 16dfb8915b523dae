"""A deterministic patrol simulator: units on foot walking between hot spots and dwelling in them.

It produces pings (the ``pings`` topic's JSON objects, as dicts) for the demo and for tests. It
is pure: no clock reads and no I/O; time only moves when the caller asks for the pings up to
some epoch-millisecond instant (:meth:`PatrolSimulator.pings_until`). The same collection, seed,
unit count and start give the same pings, however the calls to ``pings_until`` are split.

What each unit does, in simulated time:

- **walks** at 1.2-1.5 m/s (its own pace) in a straight line to a point inside its next hot spot,
  chosen among the nearer ones, avoiding the two it visited last and crowded ones; police and PCSOs
  on one side and outreach staff on the other avoid a hot spot the other service holds or is
  heading to (separate services never patrol together), but about one choice in twenty
  ignores that, so co-patrols can happen;
- **dwells** there for about a patrol's length (police and PCSO ≈15 min, outreach ≈40 min,
  security ≈20 min), strolling slowly between points at least ``_INSET_M`` inside the edge,
  so that GPS jitter puts some pings just outside it;
- sometimes is **pulled away** after a visit (abstraction): walks off to a point outside every hot
  spot and stays there for 5-20 minutes;
- sometimes goes **indoors** (a shop, a station, a stairwell): no pings for ``signal_loss_s``
  (6-10 minutes by default) while standing still;
- reports every 8-12 s (now and then up to 20 s), with correlated GPS error of about 5-30 m and an
  ``accuracy_m`` to match; about one fix in fifty is poor (``accuracy_m`` 60-150, position off by
  as much).

Geometry is done in metres in one :class:`geofences.projection.LocalProjection` centred on the
hot spots, never in degrees.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import shapely

from geofences.hotspots import HotSpotCollection
from geofences.projection import LocalProjection, metres_per_degree
from geofences.timefmt import format_ms

UNIT_TYPES = ("police", "pcso", "outreach", "security")

# (min, max) minutes of one visit to a hot spot, per unit type.
DWELL_MINUTES: dict[str, tuple[float, float]] = {
    "police": (12.0, 19.0),
    "pcso": (12.0, 19.0),
    "outreach": (36.0, 46.0),
    "security": (10.0, 25.0),
}

# Services that must not patrol a hot spot at the same time (DOMAIN.md): police side vs outreach.
_SERVICE = {"police": "police", "pcso": "police", "outreach": "outreach", "security": "security"}
_CLASHES = {("police", "outreach"), ("outreach", "police")}

_INSET_M = 22.0  # true positions while dwelling stay this far inside the edge
_WALK_MPS = (1.2, 1.5)
_STROLL_MPS = (0.4, 0.9)
_REPORT_S = (8.0, 12.0)
_SLOW_REPORT_P = 0.03  # a report interval of 12-20 s instead
_POOR_FIX_P = 0.02
_POOR_ACCURACY_M = (60.0, 150.0)
_JITTER_M = (5.0, 30.0)
_JITTER_MEMORY = 0.6  # correlation of the GPS error from one fix to the next
_INDOOR_P_VISIT = 0.12  # chance that a visit includes a spell indoors
_INDOOR_P_WALK = 0.04
_PULLED_AWAY_P = 0.12
_PULLED_AWAY_MIN = (5.0, 20.0)
_IGNORE_CLASH_P = 0.05
_CROWD_PENALTY_M = 400.0
_AVOID_RECENT = 2  # a unit does not go back to the hot spots it visited last
_START_INSIDE_P = 0.5


@dataclass
class _Spot:
    id: str
    area: Any  # shapely geometry in metres
    inner: Any  # ``area`` shrunk by _INSET_M (or ``area`` when that leaves nothing)
    centre: tuple[float, float]


@dataclass
class _Unit:
    unit_id: str
    unit_type: str
    rng: random.Random
    pace: float
    x: float = 0.0
    y: float = 0.0
    t_ms: int = 0  # simulated time up to which the position is current
    next_ms: int = 0  # time of the next report
    mode: str = "walk"  # walk | dwell | away
    spot: str | None = None  # hot spot walked to or dwelt in
    recent: tuple[str, ...] = ()  # hot spots visited last, newest first
    target: tuple[float, float] = (0.0, 0.0)
    speed: float = 1.3
    pause_until_ms: int = 0
    phase_until_ms: int = 0  # end of a dwell or of a spell away
    silent_from_ms: int | None = None  # a planned spell indoors in the current phase
    silent_until_ms: int = 0
    err: tuple[float, float] = (0.0, 0.0)
    emitted: int = field(default=0)


class PatrolSimulator:
    """Simulated patrol units over the hot spots of ``collection``.

    ``units`` are shared out over the unit types in turn (police, pcso, outreach, security), ids
    like ``police-01``. ``start_ms`` is the epoch millisecond of the simulation's start; the first
    report of each unit falls within the first 12 s. ``signal_loss_s`` is the range of a spell
    indoors without a fix; ``report_s`` the range of the interval between reports (now and then
    it is 12-20 s instead).
    """

    def __init__(
        self,
        collection: HotSpotCollection,
        units: int = 14,
        seed: int = 7,
        start_ms: int = 1_795_356_000_000,
        *,
        signal_loss_s: tuple[float, float] = (360.0, 600.0),
        report_s: tuple[float, float] = _REPORT_S,
    ) -> None:
        if not collection.hotspots:
            raise ValueError("the collection has no hot spots")
        if units < 1:
            raise ValueError("units must be at least 1")
        self.collection = collection
        self.seed = seed
        self.start_ms = start_ms
        self.signal_loss_s = signal_loss_s
        self.report_s = report_s
        union = shapely.union_all([h.geometry for h in collection.hotspots])
        self.projection = LocalProjection.centred_on(union)
        self._kx, self._ky = metres_per_degree(self.projection.lat0)
        self.spots: list[_Spot] = []
        for hotspot in collection.hotspots:
            area = self.projection.project_geometry(hotspot.geometry)
            inner = area.buffer(-_INSET_M)
            if inner.is_empty or inner.area < 100.0:
                inner = area
            point = area.representative_point()
            self.spots.append(_Spot(hotspot.id, area, inner, (point.x, point.y)))
        self._spot_by_id = {s.id: s for s in self.spots}
        xmin, ymin, xmax, ymax = shapely.bounds(
            shapely.union_all([s.area for s in self.spots])
        ).tolist()
        margin = 300.0
        self._bounds = (xmin - margin, ymin - margin, xmax + margin, ymax + margin)
        self._claims: dict[str, dict[str, str]] = {s.id: {} for s in self.spots}

        counts = dict.fromkeys(UNIT_TYPES, 0)
        self.units: list[_Unit] = []
        for i in range(units):
            unit_type = UNIT_TYPES[i % len(UNIT_TYPES)]
            counts[unit_type] += 1
            unit_id = f"{unit_type}-{counts[unit_type]:02d}"
            rng = random.Random(f"hotspot-sim:{seed}:{unit_id}")
            unit = _Unit(unit_id, unit_type, rng, pace=rng.uniform(*_WALK_MPS))
            unit.t_ms = start_ms
            unit.next_ms = start_ms + rng.randint(0, 12_000)
            self.units.append(unit)
        for unit in self.units:
            self._place(unit)
        self._queue: list[tuple[int, int]] = [(u.next_ms, i) for i, u in enumerate(self.units)]
        heapq.heapify(self._queue)

    # -- public ---------------------------------------------------------------------------

    def pings_until(self, until_ms: int) -> list[dict[str, Any]]:
        """Every ping not yet returned whose ``ts`` is at or before ``until_ms``, in time order."""
        return list(self.iter_until(until_ms))

    def iter_until(self, until_ms: int) -> Iterator[dict[str, Any]]:
        """As :meth:`pings_until`, lazily (stop iterating early and the rest stays pending)."""
        while self._queue and self._queue[0][0] <= until_ms:
            ts_ms, i = self._queue[0]
            unit = self.units[i]
            ping = self._report(unit, ts_ms)
            unit.next_ms = ts_ms + self._interval_ms(unit)
            heapq.heapreplace(self._queue, (unit.next_ms, i))
            if ping is not None:
                yield ping

    @property
    def next_ping_ms(self) -> int:
        """When the next report (possibly silent) is due."""
        return self._queue[0][0]

    def station_lonlat(self) -> tuple[float, float]:
        """A point outside every hot spot (500 m beyond the south-west corner of the area the
        units walk in), where units report from off duty."""
        xmin, ymin, _, _ = self._bounds
        return self.to_lonlat(xmin - 500.0, ymin - 500.0)

    def to_lonlat(self, x: float, y: float) -> tuple[float, float]:
        """Local metres back to lon/lat degrees."""
        return (
            float(self.projection.lon0) + x / self._kx,
            float(self.projection.lat0) + y / self._ky,
        )

    # -- setting out ----------------------------------------------------------------------

    def _place(self, unit: _Unit) -> None:
        """Initial state: half the units already on a hot spot, the rest walking to one nearby."""
        rng = unit.rng
        unit.x, unit.y = self._random_point_in_bounds(rng)
        spot = self._choose_spot(unit)
        if rng.random() < _START_INSIDE_P:
            unit.x, unit.y = self._random_point_in(spot.inner, rng)
            self._claim(unit, spot.id)
            lo, hi = DWELL_MINUTES[unit.unit_type]
            remaining = rng.uniform(0.2, 1.0) * rng.uniform(lo, hi) * 60_000
            self._start_dwell(unit, spot, unit.t_ms, int(remaining))
        else:
            cx, cy = spot.centre
            angle = rng.uniform(0.0, 2.0 * math.pi)
            distance = rng.uniform(150.0, 400.0)
            unit.x, unit.y = cx + distance * math.cos(angle), cy + distance * math.sin(angle)
            self._start_walk(unit, spot, unit.t_ms)

    def _random_point_in_bounds(self, rng: random.Random) -> tuple[float, float]:
        xmin, ymin, xmax, ymax = self._bounds
        return rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)

    @staticmethod
    def _random_point_in(area: Any, rng: random.Random) -> tuple[float, float]:
        xmin, ymin, xmax, ymax = area.bounds
        for _ in range(200):
            x, y = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
            if shapely.intersects_xy(area, x, y):
                return x, y
        point = area.representative_point()
        return point.x, point.y

    def _outside_every_spot(self, unit: _Unit) -> tuple[float, float]:
        rng = unit.rng
        for _ in range(200):
            angle = rng.uniform(0.0, 2.0 * math.pi)
            distance = rng.uniform(200.0, 500.0)
            x, y = unit.x + distance * math.cos(angle), unit.y + distance * math.sin(angle)
            if all(shapely.distance(s.area, shapely.Point(x, y)) > 60.0 for s in self.spots):
                return x, y
        xmin, ymin, _, _ = self._bounds
        return xmin, ymin

    # -- choices --------------------------------------------------------------------------

    def _clashes(self, unit: _Unit, spot_id: str) -> bool:
        mine = _SERVICE[unit.unit_type]
        return any(
            (mine, _SERVICE[t]) in _CLASHES
            for uid, t in self._claims[spot_id].items()
            if uid != unit.unit_id
        )

    def _choose_spot(self, unit: _Unit) -> _Spot:
        rng = unit.rng
        ignore_clash = rng.random() < _IGNORE_CLASH_P
        best: tuple[float, int] | None = None
        for i, spot in enumerate(self.spots):
            if spot.id in unit.recent[: len(self.spots) - 1]:
                continue
            score = math.hypot(spot.centre[0] - unit.x, spot.centre[1] - unit.y)
            others = sum(1 for uid in self._claims[spot.id] if uid != unit.unit_id)
            score += _CROWD_PENALTY_M * others + rng.uniform(0.0, 300.0)
            if not ignore_clash and self._clashes(unit, spot.id):
                score += 100_000.0
            if best is None or score < best[0]:
                best = (score, i)
        assert best is not None
        return self.spots[best[1]]

    def _claim(self, unit: _Unit, spot_id: str) -> None:
        self._release(unit)
        self._claims[spot_id][unit.unit_id] = unit.unit_type
        unit.spot = spot_id

    def _release(self, unit: _Unit) -> None:
        if unit.spot is not None:
            self._claims[unit.spot].pop(unit.unit_id, None)
        unit.spot = None

    # -- phases ---------------------------------------------------------------------------

    def _plan_indoors(self, unit: _Unit, start_ms: int, end_ms: int, p: float) -> None:
        unit.silent_from_ms = None
        if end_ms > start_ms and unit.rng.random() < p:
            unit.silent_from_ms = unit.rng.randint(start_ms, end_ms)

    def _start_walk(self, unit: _Unit, spot: _Spot, now_ms: int) -> None:
        self._claim(unit, spot.id)
        unit.mode = "walk"
        unit.target = self._random_point_in(spot.inner, unit.rng)
        unit.speed = unit.pace * unit.rng.uniform(0.95, 1.05)
        unit.pause_until_ms = now_ms
        distance = math.hypot(unit.target[0] - unit.x, unit.target[1] - unit.y)
        eta_ms = now_ms + int(distance / unit.speed * 1000)
        self._plan_indoors(unit, now_ms, eta_ms, _INDOOR_P_WALK)

    def _start_dwell(
        self, unit: _Unit, spot: _Spot, now_ms: int, length_ms: int | None = None
    ) -> None:
        rng = unit.rng
        if length_ms is None:
            lo, hi = DWELL_MINUTES[unit.unit_type]
            length_ms = int(rng.uniform(lo, hi) * 60_000)
        unit.mode = "dwell"
        unit.phase_until_ms = now_ms + length_ms
        unit.target = self._random_point_in(spot.inner, rng)
        unit.speed = rng.uniform(*_STROLL_MPS)
        unit.pause_until_ms = now_ms + rng.randint(0, 90_000)
        self._plan_indoors(unit, now_ms, unit.phase_until_ms - 60_000, _INDOOR_P_VISIT)

    def _start_away(self, unit: _Unit, now_ms: int) -> None:
        rng = unit.rng
        self._release(unit)
        unit.mode = "away"
        unit.target = self._outside_every_spot(unit)
        unit.speed = unit.pace
        distance = math.hypot(unit.target[0] - unit.x, unit.target[1] - unit.y)
        unit.pause_until_ms = now_ms
        stay_ms = int(rng.uniform(*_PULLED_AWAY_MIN) * 60_000)
        unit.phase_until_ms = now_ms + int(distance / unit.speed * 1000) + stay_ms
        unit.silent_from_ms = None

    def _leave(self, unit: _Unit, now_ms: int) -> None:
        if unit.spot is not None:
            unit.recent = (unit.spot, *unit.recent)[:_AVOID_RECENT]
        if unit.mode == "dwell" and unit.rng.random() < _PULLED_AWAY_P:
            self._start_away(unit, now_ms)
            return
        self._release(unit)
        self._start_walk(unit, self._choose_spot(unit), now_ms)

    # -- time -----------------------------------------------------------------------------

    def _interval_ms(self, unit: _Unit) -> int:
        rng = unit.rng
        if rng.random() < _SLOW_REPORT_P:
            return int(rng.uniform(12.0, 20.0) * 1000)
        return int(rng.uniform(*self.report_s) * 1000)

    def _move(self, unit: _Unit, to_ms: int) -> None:
        """Advance ``unit`` from ``unit.t_ms`` to ``to_ms`` (reports are at most 20 s apart)."""
        now = unit.t_ms
        if unit.silent_until_ms > now:  # indoors: standing still
            now = min(to_ms, unit.silent_until_ms)
        while now < to_ms:
            if unit.mode == "dwell" and now >= unit.phase_until_ms:
                self._leave(unit, now)
                continue
            if unit.mode == "away" and now >= unit.phase_until_ms:
                self._leave(unit, now)
                continue
            if now < unit.pause_until_ms:
                now = min(to_ms, unit.pause_until_ms)
                continue
            dx, dy = unit.target[0] - unit.x, unit.target[1] - unit.y
            distance = math.hypot(dx, dy)
            step_ms = to_ms - now
            reach_ms = int(distance / unit.speed * 1000) if distance > 0 else 0
            if reach_ms > step_ms:
                f = unit.speed * step_ms / 1000 / distance
                unit.x, unit.y = unit.x + dx * f, unit.y + dy * f
                now = to_ms
                continue
            unit.x, unit.y = unit.target
            now += reach_ms
            self._arrived(unit, now)
        unit.t_ms = to_ms

    def _arrived(self, unit: _Unit, now_ms: int) -> None:
        rng = unit.rng
        if unit.mode == "walk":
            assert unit.spot is not None
            self._start_dwell(unit, self._spot_by_id[unit.spot], now_ms)
        elif unit.mode == "dwell":
            assert unit.spot is not None
            unit.target = self._random_point_in(self._spot_by_id[unit.spot].inner, rng)
            unit.speed = rng.uniform(*_STROLL_MPS)
            unit.pause_until_ms = now_ms + rng.randint(0, 90_000)
        else:  # away: stay put until phase_until_ms
            unit.pause_until_ms = unit.phase_until_ms

    def _report(self, unit: _Unit, ts_ms: int) -> dict[str, Any] | None:
        self._move(unit, ts_ms)
        rng = unit.rng
        if unit.silent_from_ms is not None and ts_ms >= unit.silent_from_ms:
            unit.silent_from_ms = None
            unit.silent_until_ms = ts_ms + int(rng.uniform(*self.signal_loss_s) * 1000)
        if ts_ms < unit.silent_until_ms:
            return None
        angle = rng.uniform(0.0, 2.0 * math.pi)
        size = rng.uniform(*_JITTER_M)
        ex = _JITTER_MEMORY * unit.err[0] + (1 - _JITTER_MEMORY) * size * math.cos(angle) * 2.0
        ey = _JITTER_MEMORY * unit.err[1] + (1 - _JITTER_MEMORY) * size * math.sin(angle) * 2.0
        unit.err = (ex, ey)
        error = math.hypot(ex, ey)
        accuracy = max(4.0, error * rng.uniform(0.9, 1.6))
        if rng.random() < _POOR_FIX_P:
            accuracy = rng.uniform(*_POOR_ACCURACY_M)
            angle = rng.uniform(0.0, 2.0 * math.pi)
            off = accuracy * rng.uniform(0.3, 1.0)
            ex, ey = off * math.cos(angle), off * math.sin(angle)
        lon, lat = self.to_lonlat(unit.x + ex, unit.y + ey)
        unit.emitted += 1
        return {
            "unit_id": unit.unit_id,
            "ts": format_ms(ts_ms),
            "lat": round(lat, 7),
            "lon": round(lon, 7),
            "accuracy_m": round(accuracy, 1),
            "unit_type": unit.unit_type,
        }


# -- a month to evaluate (``hotspot simulate --days``) -------------------------------------------

#: crime per day on a patrol day, as a share of the hot spot's base rate
PATROL_DAY_EFFECT = 0.65
#: the same on a non-patrol day 1 or 2 days after the hot spot's last patrol day (then 1.0)
RESIDUAL_EFFECT = {1: 0.8, 2: 0.9}
#: crime types drawn, with their Cambridge-style harm weights
CRIME_HARM = {"violence_with_injury": 120.0, "robbery": 365.0, "public_order": 10.0, "theft": 7.0}
_CRIME_MIX = (
    ("violence_with_injury", 0.3),
    ("robbery", 0.05),
    ("public_order", 0.35),
    ("theft", 0.3),
)
#: the patrol shift and the end-of-shift report from the station, local wall times
_SHIFT = ((15, 0), (19, 0))
_STATION_REPORT = (21, 0)
_MONTH_REPORT_S = (30.0, 50.0)
_TASKED_P = 0.55
_MONTH_WINDOWS: dict[str, list[dict[str, Any]]] = {
    "HS-01": [{"days": "daily", "start": "14:00", "end": "20:00", "required_minutes": 15, "min_visit_minutes": 5, "unit_types": ["police", "pcso"]}],
    "HS-02": [{"days": "daily", "start": "14:00", "end": "20:00", "required_minutes": 30, "unit_types": ["outreach"]}],
    "HS-03": [{"days": "daily", "start": "16:00", "end": "18:00", "required_minutes": 15, "min_visit_minutes": 5}],
    "HS-04": [],
    "HS-05": [{"days": ["fri", "sat"], "start": "15:00", "end": "19:00", "required_minutes": 20, "min_visit_minutes": 5}],
}  # fmt: skip


@dataclass(frozen=True)
class Month:
    """What ``hotspot simulate --days`` writes: a hot spot file (GeoJSON object), pings in time
    order, crimes (``occurred_at, lat, lon, crime_type`` rows), harm weights, and the patrol
    days the crimes were drawn against: (hot spot id, ISO date) -> patrol day."""

    hotspot_file: dict[str, Any]
    pings: list[dict[str, Any]]
    crimes: list[dict[str, Any]]
    harm_weights: dict[str, float]
    patrol_days: dict[tuple[str, str], bool]
    first: str
    last: str


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def simulate_month(days: int = 28, seed: int = 7, first: str = "2026-10-12") -> Month:
    """A month of patrols over five of the demo's hot spots, and crimes drawn with a stated
    effect (``PATROL_DAY_EFFECT``, ``RESIDUAL_EFFECT``) against the patrol days.

    Each date, each hot spot is tasked with probability ``_TASKED_P``; four units (police,
    pcso, outreach, security) patrol the tasked ones through the shift, reporting every
    30-50 s, then report once from a station outside every hot spot (which ends their visits
    and, in a replay, settles the day's windows). The patrol days are decided from the pings
    with the worker's own presence rules and the report's patrol-day rule, so the crimes follow
    what the ledger will show. The default dates cross the end of British summer time.
    """
    from datetime import date as date_cls
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from geofences.evaluation.daily import daily
    from geofences.evaluation.inputs import LedgerVisit, local_day_ms
    from geofences.hotspots import demo_hotspots_path, parse_hotspots
    from geofences.index import HotSpotIndex
    from geofences.pings import ping_from_obj
    from geofences.presence import DwellEvent, PresenceSettings, walk

    if days < 1:
        raise ValueError("days must be at least 1")
    import json

    demo = json.loads(demo_hotspots_path().read_text(encoding="utf-8"))
    features = []
    for feature in demo["features"]:
        hotspot_id = feature["properties"]["id"]
        if hotspot_id in _MONTH_WINDOWS:
            properties = dict(feature["properties"], windows=_MONTH_WINDOWS[hotspot_id])
            features.append(dict(feature, properties=properties))
    hotspot_file = {"type": "FeatureCollection", "timezone": "Europe/London", "features": features}
    collection = parse_hotspots(hotspot_file)
    zone = ZoneInfo(collection.timezone)
    start_day = date_cls.fromisoformat(first)
    dates = [start_day + timedelta(days=n) for n in range(days)]
    rng = random.Random(f"hotspot-month:{seed}")

    def local_ms(day: date_cls, hm: tuple[int, int]) -> int:
        return int(datetime(day.year, day.month, day.day, *hm, tzinfo=zone).timestamp() * 1000)

    pings: list[dict[str, Any]] = []
    for n, day in enumerate(dates):
        tasked = [h for h in collection.hotspots if rng.random() < _TASKED_P]
        if not tasked:
            continue
        shift = HotSpotCollection(tuple(tasked), collection.timezone)
        simulator = PatrolSimulator(
            shift, units=4, seed=seed * 1000 + n, start_ms=local_ms(day, _SHIFT[0]),
            report_s=_MONTH_REPORT_S,
        )  # fmt: skip
        pings.extend(simulator.pings_until(local_ms(day, _SHIFT[1])))
        station_ms = local_ms(day, _STATION_REPORT)
        lon, lat = simulator.station_lonlat()
        for unit in simulator.units:
            pings.append(
                {
                    "unit_id": unit.unit_id, "ts": format_ms(station_ms), "lat": round(lat, 7),
                    "lon": round(lon, 7), "accuracy_m": 8.0, "unit_type": unit.unit_type,
                }
            )  # fmt: skip
    pings.sort(key=lambda p: (p["ts"], p["unit_id"]))

    index = HotSpotIndex(collection.hotspots)
    parsed = [ping_from_obj(p) for p in pings]
    _, events = walk(
        parsed,
        lambda p: index.containing(p.lon, p.lat),
        lambda p, hotspot_id: index.distance_m(p.lon, p.lat, hotspot_id),
        PresenceSettings(),
    )
    visits = [
        LedgerVisit(e.event_id, e.hotspot_id, e.unit_id, e.unit_type, e.enter_ms, e.exit_ms, e.exit_reason.value)
        for e in events
        if isinstance(e, DwellEvent)
    ]  # fmt: skip
    rows = daily(collection, visits, [], dates[0], dates[-1], {}).rows
    patrol_days = {(r.hotspot_id, r.date.isoformat()): r.patrol_day for r in rows}

    crimes: list[dict[str, Any]] = []
    for hotspot in collection.hotspots:
        base = rng.uniform(3.0, 6.0)
        xmin, ymin, xmax, ymax = hotspot.geometry.bounds
        last_patrol: int | None = None
        for n, day in enumerate(dates):
            if patrol_days[(hotspot.id, day.isoformat())]:
                last_patrol, factor = n, PATROL_DAY_EFFECT
            elif last_patrol is None:
                factor = 1.0
            else:
                factor = RESIDUAL_EFFECT.get(n - last_patrol, 1.0)
            lo, hi = local_day_ms(day, collection.timezone)
            for _ in range(_poisson(rng, base * factor)):
                while True:
                    lon, lat = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
                    if shapely.intersects_xy(hotspot.geometry, lon, lat):
                        break
                pick, crime_type = rng.random(), _CRIME_MIX[-1][0]
                for name, share in _CRIME_MIX:
                    if pick < share:
                        crime_type = name
                        break
                    pick -= share
                crimes.append(
                    {
                        "occurred_at": format_ms(rng.randrange(lo, hi)),
                        "lat": round(lat, 7), "lon": round(lon, 7), "crime_type": crime_type,
                    }
                )  # fmt: skip
    crimes.sort(key=lambda c: (c["occurred_at"], c["lat"]))
    return Month(
        hotspot_file, pings, crimes, dict(CRIME_HARM), patrol_days,
        dates[0].isoformat(), dates[-1].isoformat(),
    )  # fmt: skip
