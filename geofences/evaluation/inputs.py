"""The evaluation's inputs, read from text: the dwell ledger, crimes, harm weights and costs
(docs/interface.md, Evaluation: inputs).

Every bad row is refused with ``FILE:LINE: reason``; a file with any is refused whole
(``InputFileError`` lists them all), so nothing is silently dropped or half-counted.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from geofences.errors import InputFileError
from geofences.timefmt import format_ms, parse_rfc3339_ms

#: the ledger's columns, in order (``hotspot ledger``)
LEDGER_COLUMNS = (
    "event_id",
    "hotspot_id",
    "unit_id",
    "unit_type",
    "enter_ts",
    "exit_ts",
    "minutes",
    "exit_reason",
)
#: £ per minute in a hot spot when no costs file is given: Leicester's police and outreach
DEFAULT_COSTS: Mapping[str, float] = {"police": 3.38, "outreach": 2.28}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class LedgerVisit:
    """One visit of the ledger: a DwellEvent's fields, times in epoch ms."""

    event_id: str
    hotspot_id: str
    unit_id: str
    unit_type: str
    enter_ms: int
    exit_ms: int
    exit_reason: str

    @property
    def end_ms(self) -> int:
        """The exit (``geofences.coverage.VisitSpan``)."""
        return self.exit_ms

    @property
    def minutes(self) -> float:
        """(exit − enter) / 60 s."""
        return (self.exit_ms - self.enter_ms) / 60_000

    def row(self) -> dict[str, Any]:
        """The ledger row: ``LEDGER_COLUMNS``, times RFC 3339 UTC, minutes to 4 decimals."""
        return {
            "event_id": self.event_id,
            "hotspot_id": self.hotspot_id,
            "unit_id": self.unit_id,
            "unit_type": self.unit_type,
            "enter_ts": format_ms(self.enter_ms),
            "exit_ts": format_ms(self.exit_ms),
            "minutes": round(self.minutes, 4),
            "exit_reason": self.exit_reason,
        }


@dataclass(frozen=True, slots=True)
class Crime:
    """One crime: when (epoch ms), where (WGS 84), its type and harm (None: unknown)."""

    line: int
    occurred_ms: int
    lat: float
    lon: float
    crime_type: str
    harm: float | None


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key}: missing or empty")
    return value


def visit_from_dwell(obj: object) -> LedgerVisit:
    """The visit of a DwellEvent value (or a ledger row with the same fields); ``ValueError``
    with the reason when it is not one."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    enter_ms = parse_rfc3339_ms(_text(obj, "enter_ts"))
    exit_ms = parse_rfc3339_ms(_text(obj, "exit_ts"))
    if exit_ms < enter_ms:
        raise ValueError("exit_ts is before enter_ts")
    return LedgerVisit(
        event_id=_text(obj, "event_id"),
        hotspot_id=_text(obj, "hotspot_id"),
        unit_id=_text(obj, "unit_id"),
        unit_type=_text(obj, "unit_type"),
        enter_ms=enter_ms,
        exit_ms=exit_ms,
        exit_reason=_text(obj, "exit_reason"),
    )


def unique_visits(visits: Iterable[LedgerVisit]) -> list[LedgerVisit]:
    """The visits with duplicates (same ``event_id``) dropped, the first kept, ordered by
    enter, hot spot and unit."""
    seen: dict[str, LedgerVisit] = {}
    for visit in visits:
        seen.setdefault(visit.event_id, visit)
    return sorted(seen.values(), key=lambda v: (v.enter_ms, v.hotspot_id, v.unit_id))


def local_day_ms(day: date, tz_name: str) -> tuple[int, int]:
    """``[start, end)`` of local date ``day`` in epoch ms: 23 or 25 hours on clock-change days."""
    zone = ZoneInfo(tz_name)

    def at_midnight(d: date) -> int:
        return (datetime(d.year, d.month, d.day, tzinfo=zone) - _EPOCH) // _MS

    return at_midnight(day), at_midnight(day + timedelta(days=1))


def overlaps_dates(visit: LedgerVisit, first: date, last: date, tz_name: str) -> bool:
    """Whether the visit has time on local dates ``[first, last]`` (a visit of no length: whether
    it is on one of them)."""
    lo, _ = local_day_ms(first, tz_name)
    _, hi = local_day_ms(last, tz_name)
    if visit.exit_ms == visit.enter_ms:
        return lo <= visit.enter_ms < hi
    return visit.enter_ms < hi and visit.exit_ms > lo


# -- files -----------------------------------------------------------------------------------


def _csv_rows(
    text: str, source: str, required: tuple[str, ...], problems: list[str]
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) of a CSV text with a header holding ``required``; rows with a missing value
    of a required column are reported to ``problems`` and skipped."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in required if name not in header]
    if missing:
        problems.append(f"{source}:1: header lacks {', '.join(missing)}")
        return
    reader.fieldnames = header
    for row in reader:
        line = reader.line_num
        if None in row:
            problems.append(f"{source}:{line}: more values than columns")
            continue
        values = {k: (v or "").strip() for k, v in row.items()}
        empty = [name for name in required if not values.get(name)]
        if empty:
            problems.append(f"{source}:{line}: {', '.join(empty)} empty")
            continue
        yield line, values


def _number(text: str, name: str, low: float | None = None) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}: not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: not a finite number: {text[:40]!r}")
    if low is not None and value < low:
        raise ValueError(f"{name}: must be {low:g} or more, not {text[:40]}")
    return value


def _raise(problems: list[str]) -> None:
    if problems:
        raise InputFileError(problems)


def parse_ledger(text: str, source: str) -> list[LedgerVisit]:
    """The visits of a ledger file (CSV with ``LEDGER_COLUMNS`` when ``source`` ends in
    ``.csv``, else JSONL of the same fields), duplicates dropped (``unique_visits``)."""
    problems: list[str] = []
    visits: list[LedgerVisit] = []
    if source.lower().endswith(".csv"):
        required = tuple(c for c in LEDGER_COLUMNS if c != "minutes")
        for line, row in _csv_rows(text, source, required, problems):
            try:
                visits.append(visit_from_dwell(row))
            except ValueError as exc:
                problems.append(f"{source}:{line}: {exc}")
    else:
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                visits.append(visit_from_dwell(orjson.loads(raw)))
            except orjson.JSONDecodeError as exc:
                problems.append(f"{source}:{line}: not JSON: {exc}")
            except ValueError as exc:
                problems.append(f"{source}:{line}: {exc}")
    _raise(problems)
    return unique_visits(visits)


def parse_occurred_at(text: str, tz_name: str) -> int:
    """Epoch ms of an ISO 8601 date and time: with ``Z`` or an offset as given, without one
    local to ``tz_name`` (a skipped or repeated wall time read with ``fold=0``)."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"occurred_at: not an ISO 8601 date and time: {text[:40]!r}") from None
    if len(text) <= 10:
        raise ValueError(f"occurred_at: a date without a time: {text[:40]!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz_name), fold=0)
    return (dt - _EPOCH) // _MS


def _rates(text: str, source: str, key: str, value: str) -> dict[str, float]:
    """``key, value`` rows: a number ≥ 0 per key; a key given twice is refused."""
    problems: list[str] = []
    rates: dict[str, float] = {}
    for line, row in _csv_rows(text, source, (key, value), problems):
        name = row[key]
        try:
            rate = _number(row[value], value, 0.0)
        except ValueError as exc:
            problems.append(f"{source}:{line}: {exc}")
            continue
        if name in rates:
            problems.append(f"{source}:{line}: {key} {name!r} given twice")
            continue
        rates[name] = rate
    _raise(problems)
    return rates


def parse_harm_weights(text: str, source: str) -> dict[str, float]:
    """``crime_type, harm`` rows: harm per crime type (≥ 0); a type given twice is refused."""
    return _rates(text, source, "crime_type", "harm")


def parse_costs(text: str, source: str) -> dict[str, float]:
    """``unit_type, gbp_per_minute`` rows (≥ 0); a unit type given twice is refused."""
    return _rates(text, source, "unit_type", "gbp_per_minute")


def parse_crimes(
    text: str, source: str, tz_name: str, harm_weights: Mapping[str, float] | None = None
) -> list[Crime]:
    """``occurred_at, lat, lon, crime_type[, harm]`` rows. A row's own ``harm`` wins over
    ``harm_weights``; a crime of neither has harm None (unknown: counted, and reported)."""
    problems: list[str] = []
    crimes: list[Crime] = []
    weights = harm_weights or {}
    required = ("occurred_at", "lat", "lon", "crime_type")
    for line, row in _csv_rows(text, source, required, problems):
        try:
            occurred_ms = parse_occurred_at(row["occurred_at"], tz_name)
            lat = _number(row["lat"], "lat")
            lon = _number(row["lon"], "lon")
            if not -90.0 <= lat <= 90.0:
                raise ValueError(f"lat: out of range: {row['lat'][:40]}")
            if not -180.0 <= lon <= 180.0:
                raise ValueError(f"lon: out of range: {row['lon'][:40]}")
            own = row.get("harm", "")
            harm = _number(own, "harm", 0.0) if own else weights.get(row["crime_type"])
        except ValueError as exc:
            problems.append(f"{source}:{line}: {exc}")
            continue
        crimes.append(Crime(line, occurred_ms, lat, lon, row["crime_type"], harm))
    _raise(problems)
    return crimes
