"""The hot spot file (docs/interface.md, The hot spot file): load, validate, and hold hot spots
and their patrol windows.

Everything a file can get wrong is reported at once, one line per problem, each naming the feature
it belongs to (``feature 3 (id "HS-03"): geometry: ring 0 is not closed``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import shapely

from geofences.errors import HotSpotFileError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_TIMEZONE = "Europe/London"

# Limits of a hot spot file (docs/interface.md, The hot spot file: what is refused). A city's
# hot spots are tens to a few thousand small polygons; these are far above that, and keep a
# mistaken or hostile file from taking the worker's memory and start-up time (every hot spot is
# validated by GEOS and indexed, every window expanded into instances).
#: the file's size in bytes, checked before it is read
MAX_HOTSPOT_FILE_BYTES = 50 * 1024 * 1024
#: Features in the collection
MAX_HOTSPOTS = 20_000
#: positions (vertices, each ring's closing one included) of one hot spot's geometry
MAX_POSITIONS_PER_HOTSPOT = 10_000
#: positions of all hot spots together
MAX_POSITIONS = 2_000_000
#: patrol windows of one hot spot
MAX_WINDOWS_PER_HOTSPOT = 50

_ALL_DAYS = frozenset(range(7))
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True, slots=True)
class Window:
    """A recurring patrol window of a hot spot (docs/interface.md, The hot spot file: windows), in
    the collection's timezone.

    ``days`` holds weekday numbers (0 = Monday … 6 = Sunday) on which the window *starts*.
    ``end <= start`` means the window crosses midnight into the next day.
    ``unit_types`` of ``None`` means units of any type are eligible.
    """

    days: frozenset[int]
    start: time
    end: time
    required_minutes: float
    min_visit_minutes: float = 0.0
    unit_types: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class HotSpot:
    """One Feature of the hot spot file; ``geometry`` is a shapely (Multi)Polygon in lon/lat."""

    id: str
    name: str
    geometry: Any
    windows: tuple[Window, ...]


@dataclass(frozen=True, slots=True)
class HotSpotCollection:
    """A validated hot spot file: hot spots in file order, and the IANA zone of window times."""

    hotspots: tuple[HotSpot, ...]
    timezone: str = DEFAULT_TIMEZONE
    _by_id: Mapping[str, HotSpot] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {h.id: h for h in self.hotspots}
        if len(by_id) != len(self.hotspots):
            raise ValueError("hot spot ids are not unique")
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))

    def by_id(self) -> Mapping[str, HotSpot]:
        """Read-only mapping of id to hot spot."""
        return self._by_id


def _show(value: object) -> str:
    """``value`` as short JSON text for a problem line."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except ValueError:
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` when it is not a JSON number (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _parse_hhmm(value: object) -> time | None:
    if not isinstance(value, str):
        return None
    match = _HHMM.fullmatch(value)
    return time(int(match[1]), int(match[2])) if match else None


def _window_problems(obj: object, where: str) -> tuple[Window | None, list[str]]:
    """The window described by ``obj``, or ``None`` and every problem found."""
    if not isinstance(obj, dict):
        return None, [f"{where}: not an object"]
    problems: list[str] = []

    days: frozenset[int] = _ALL_DAYS
    raw_days = obj.get("days")
    if raw_days is None or raw_days == "daily":
        pass
    elif (
        isinstance(raw_days, list)
        and raw_days
        and all(isinstance(d, str) and d in WEEKDAYS for d in raw_days)
    ):
        days = frozenset(WEEKDAYS.index(d) for d in raw_days)
    else:
        problems.append(
            f'{where}.days: {_show(raw_days)} is not "daily" or a non-empty list of mon..sun'
        )

    times: list[time] = []
    for key in ("start", "end"):
        if key not in obj:
            problems.append(f'{where}: missing "{key}"')
            continue
        parsed = _parse_hhmm(obj[key])
        if parsed is None:
            problems.append(f"{where}.{key}: {_show(obj[key])} is not HH:MM (00:00 to 23:59)")
        else:
            times.append(parsed)
    if len(times) == 2 and times[0] == times[1]:
        problems.append(f"{where}: start and end are both {_show(obj['start'])}")

    required = _number(obj.get("required_minutes"))
    if "required_minutes" not in obj:
        problems.append(f'{where}: missing "required_minutes"')
    elif required is None or required <= 0:
        problems.append(
            f"{where}.required_minutes: {_show(obj['required_minutes'])} is not a number > 0"
        )

    min_visit: float | None = 0.0
    if obj.get("min_visit_minutes") is not None:
        min_visit = _number(obj["min_visit_minutes"])
        if min_visit is None or min_visit < 0:
            problems.append(
                f"{where}.min_visit_minutes: {_show(obj['min_visit_minutes'])} is not a number >= 0"
            )

    unit_types: frozenset[str] | None = None
    raw_types = obj.get("unit_types")
    if raw_types is not None:
        if (
            isinstance(raw_types, list)
            and raw_types
            and all(isinstance(t, str) and t for t in raw_types)
        ):
            unit_types = frozenset(raw_types)
        else:
            problems.append(
                f"{where}.unit_types: {_show(raw_types)}"
                " is not a non-empty list of non-empty strings"
            )

    if problems or required is None or min_visit is None:
        return None, problems
    return Window(days, times[0], times[1], required, min_visit, unit_types), []


def parse_window(obj: object, where: str) -> Window:
    """A patrol window from its JSON object (docs/interface.md, The hot spot file: windows), also
    used for run-time assignments (Messages: Assignment).

    Raises ``ValueError`` whose one-line message starts with ``where`` and lists every problem.
    """
    window, problems = _window_problems(obj, where)
    if window is None:
        raise ValueError("; ".join(problems))
    return window


def _position_problem(position: object) -> str | None:
    if not isinstance(position, list) or len(position) not in (2, 3):
        return f"{_show(position)} is not 2 or 3 numbers"
    lon, lat, *z = (_number(v) for v in position)
    if lon is None or lat is None or None in z:
        return f"{_show(position)} is not 2 or 3 finite numbers"
    if not -180.0 <= lon <= 180.0:
        return f"lon {_show(position[0])} is outside -180..180"
    if not -90.0 <= lat <= 90.0:
        return f"lat {_show(position[1])} is outside -90..90"
    return None


def _ring(obj: object, where: str, problems: list[str]) -> list[tuple[float, float]] | None:
    """The ring's (lon, lat) positions, or ``None`` after appending its problems."""
    if not isinstance(obj, list):
        problems.append(f"{where} is not a list of positions")
        return None
    bad = [(i, p) for i, pos in enumerate(obj) if (p := _position_problem(pos)) is not None]
    if bad:
        i, problem = bad[0]
        more = f" (and {len(bad) - 1} more bad positions)" if len(bad) > 1 else ""
        problems.append(f"{where} position {i}: {problem}{more}")
    if len(obj) < 4:
        problems.append(f"{where} has {len(obj)} positions, fewer than 4")
    elif not bad and obj[0] != obj[-1]:
        problems.append(f"{where} is not closed (first and last positions differ)")
    if bad or len(obj) < 4:
        return None
    return [(float(p[0]), float(p[1])) for p in obj]


def _polygon(obj: object, where: str, problems: list[str]) -> Any:
    """A shapely Polygon from GeoJSON Polygon coordinates, or ``None`` after appending problems."""
    if not isinstance(obj, list) or not obj:
        problems.append(f"{where}coordinates are not a non-empty list of rings")
        return None
    rings = [_ring(r, f"{where}ring {i}", problems) for i, r in enumerate(obj)]
    if any(r is None for r in rings):
        return None
    return shapely.Polygon(rings[0], rings[1:])


def _position_count(geometry: object) -> int:
    """How many positions a GeoJSON Polygon or MultiPolygon has, counting only what is shaped
    like one (the rest is judged, and refused, when the geometry is read): cheap, before any
    position is checked or GEOS sees them."""
    if not isinstance(geometry, dict):
        return 0
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list):
        return 0
    if kind == "Polygon":
        polygons = [coordinates]
    elif kind == "MultiPolygon":
        polygons = [p for p in coordinates if isinstance(p, list)]
    else:
        return 0
    return sum(len(ring) for rings in polygons for ring in rings if isinstance(ring, list))


def _geometry(obj: object, problems: list[str]) -> Any:
    """A valid shapely Polygon or MultiPolygon, or ``None`` after appending its problems."""
    if not isinstance(obj, dict):
        problems.append("geometry: missing" if obj is None else "geometry: not an object")
        return None
    kind = obj.get("type")
    coordinates = obj.get("coordinates")
    count = _position_count(obj)
    if count > MAX_POSITIONS_PER_HOTSPOT:
        problems.append(f"geometry: {count} positions, more than {MAX_POSITIONS_PER_HOTSPOT}")
        return None
    before = len(problems)
    geometry: Any = None
    if kind == "Polygon":
        geometry = _polygon(coordinates, "geometry: ", problems)
    elif kind == "MultiPolygon":
        if not isinstance(coordinates, list) or not coordinates:
            problems.append("geometry: coordinates are not a non-empty list of polygons")
        else:
            parts = [
                _polygon(p, f"geometry: polygon {i} ", problems) for i, p in enumerate(coordinates)
            ]
            if len(problems) == before:
                geometry = shapely.MultiPolygon(parts)
    else:
        problems.append(f"geometry: type {_show(kind)} is not Polygon or MultiPolygon")
    if geometry is None or len(problems) > before:
        return None
    reason = shapely.is_valid_reason(geometry)
    if reason != "Valid Geometry":
        problems.append(f"geometry: not a valid polygon: {reason}")
        return None
    return geometry


def _hotspot(
    index: int, feature: object, first_use: dict[str, int], problems: list[str]
) -> HotSpot | None:
    """The hot spot of feature ``index``, or ``None`` after appending its problems."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        problems.append(f"feature {index}: not a GeoJSON Feature")
        return None
    properties = feature.get("properties")
    mine: list[str] = []
    hotspot_id = properties.get("id") if isinstance(properties, dict) else None
    label = f"feature {index}"
    if properties is not None and not isinstance(properties, dict):
        mine.append("properties: not an object")
    elif hotspot_id is None:
        mine.append('missing "id"')
    elif not isinstance(hotspot_id, str) or not hotspot_id.strip():
        mine.append(f'"id" {_show(hotspot_id)} is not a non-empty string')
    else:
        label = f"feature {index} (id {_show(hotspot_id)})"
        if hotspot_id in first_use:
            mine.append(
                f"duplicate id {_show(hotspot_id)} (first used by feature {first_use[hotspot_id]})"
            )
        else:
            first_use[hotspot_id] = index
    props: dict[str, Any] = properties if isinstance(properties, dict) else {}

    name = props.get("name")
    if name is not None and not isinstance(name, str):
        mine.append(f'"name" {_show(name)} is not a string')

    windows: list[Window] = []
    raw_windows = props.get("windows")
    if raw_windows is not None and not isinstance(raw_windows, list):
        mine.append(f'"windows" {_show(raw_windows)} is not a list')
    elif isinstance(raw_windows, list) and len(raw_windows) > MAX_WINDOWS_PER_HOTSPOT:
        mine.append(
            f'"windows" has {len(raw_windows)} windows, more than {MAX_WINDOWS_PER_HOTSPOT}'
        )
        raw_windows = None
    for i, raw in enumerate(raw_windows if isinstance(raw_windows, list) else []):
        window, window_problems = _window_problems(raw, f"windows[{i}]")
        mine.extend(window_problems)
        if window is not None:
            windows.append(window)

    geometry = _geometry(feature.get("geometry"), mine)

    problems.extend(f"{label}: {p}" for p in mine)
    if mine or not isinstance(hotspot_id, str):
        return None
    return HotSpot(hotspot_id, name or hotspot_id, geometry, tuple(windows))


def parse_hotspots(obj: object) -> HotSpotCollection:
    """The hot spots of a parsed GeoJSON document.

    Raises ``HotSpotFileError`` listing every problem found, one line each, naming the feature.
    """
    if not isinstance(obj, dict) or obj.get("type") != "FeatureCollection":
        raise HotSpotFileError(["not a GeoJSON FeatureCollection"])
    problems: list[str] = []

    timezone = obj.get("timezone")
    if timezone is None:
        timezone = DEFAULT_TIMEZONE
    elif not isinstance(timezone, str):
        problems.append(f"timezone {_show(timezone)} is not a string")
    else:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            problems.append(f"unknown timezone {_show(timezone)}")

    features = obj.get("features")
    if not isinstance(features, list):
        problems.append('"features" is not a list')
        features = []
    # the file-wide limits are checked first, and a file over one is not read further: the
    # limits are there to bound the work
    if len(features) > MAX_HOTSPOTS:
        problems.append(f'"features" has {len(features)} hot spots, more than {MAX_HOTSPOTS}')
        features = []
    total = sum(_position_count(f.get("geometry")) for f in features if isinstance(f, dict))
    if total > MAX_POSITIONS:
        problems.append(f"the hot spots have {total} positions in all, more than {MAX_POSITIONS}")
        features = []
    first_use: dict[str, int] = {}
    hotspots = [_hotspot(i, f, first_use, problems) for i, f in enumerate(features)]

    if problems:
        raise HotSpotFileError(problems)
    return HotSpotCollection(tuple(h for h in hotspots if h is not None), timezone)


def load_hotspots(path: str | os.PathLike[str]) -> HotSpotCollection:
    """Read and validate a hot spot file.

    An unreadable file, one over ``MAX_HOTSPOT_FILE_BYTES`` (refused by its size before it is
    read, and by what was read for a file that grows or has no size) or invalid JSON raises
    ``HotSpotFileError`` with one line; otherwise as ``parse_hotspots``.
    """
    try:
        with Path(path).open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            data = b"" if size > MAX_HOTSPOT_FILE_BYTES else file.read(MAX_HOTSPOT_FILE_BYTES + 1)
    except OSError as exc:
        raise HotSpotFileError([f"cannot read {os.fspath(path)}: {exc.strerror}"]) from exc
    if size > MAX_HOTSPOT_FILE_BYTES or len(data) > MAX_HOTSPOT_FILE_BYTES:
        shown = f"{size} bytes" if size > MAX_HOTSPOT_FILE_BYTES else "its bytes read"
        raise HotSpotFileError(
            [f"{os.fspath(path)} is too large: {shown}, more than {MAX_HOTSPOT_FILE_BYTES}"]
        )
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise HotSpotFileError([f"{os.fspath(path)} is not valid JSON: {exc}"]) from exc
    return parse_hotspots(obj)


def demo_hotspots_path() -> Path:
    """The packaged demo file: seven hot spots in Leicester city centre."""
    return Path(__file__).parent / "data" / "leicester.geojson"
