"""Patrol days against other days, the residual effect and the dosage (docs/interface.md,
Evaluation: summary.csv, residual.csv, dosage.csv).

Records are plain dicts in column order, ready for a CSV or a table; ``None`` is an undefined
value (no days, no crimes on one side), written empty, never 0 or infinity. Minutes are floats
of exact ms (÷ 60,000).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from geofences.evaluation.daily import DailyRow
from geofences.evaluation.inputs import LedgerVisit
from geofences.evaluation.stats import rate_ratio

ALL = "ALL"
#: days since the hot spot's last patrol day, for a non-patrol day
RESIDUAL_BUCKETS = ("1", "2", "3", "4+", "none")
#: dosage bands of a visit's minutes: [0, 5), [5, 10), [10, 15] (the Koper curve's), > 15
DOSAGE_BANDS = ("under_5", "5_to_10", "10_to_15", "over_15")

Record = dict[str, Any]


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def _minutes(ms: int) -> float:
    return ms / 60_000


def daily_record(row: DailyRow, unit_types: Sequence[str]) -> Record:
    """The ``daily.csv`` row."""
    record: Record = {
        "hotspot_id": row.hotspot_id,
        "date": row.date.isoformat(),
        "unit_minutes": _minutes(row.unit_ms),
        "covered_minutes": _minutes(row.covered_ms),
    }
    for unit_type in unit_types:
        record[f"minutes_{unit_type}"] = _minutes(row.ms_by_type.get(unit_type, 0))
    record |= {
        "visits": row.visits,
        "units": row.units,
        "windows": row.windows,
        "windows_met": row.windows_met,
        "patrol_day": row.patrol_day,
        "cost_gbp": row.cost_gbp,
        "uncosted_minutes": _minutes(row.uncosted_ms),
        "crimes": row.crimes,
        "harm": row.harm,
        "harm_unknown": row.harm_unknown,
    }
    return record


def _by_hotspot(rows: Iterable[DailyRow]) -> dict[str, list[DailyRow]]:
    grouped: dict[str, list[DailyRow]] = defaultdict(list)
    for row in rows:
        grouped[row.hotspot_id].append(row)
    return grouped


def _summary(
    label: str, rows: Sequence[DailyRow], unit_types: Sequence[str], costs: Mapping[str, float]
) -> Record:
    patrol = [r for r in rows if r.patrol_day]
    other = [r for r in rows if not r.patrol_day]
    d1, d0 = len(patrol), len(other)
    x1, x0 = sum(r.crimes for r in patrol), sum(r.crimes for r in other)
    h1, h0 = sum(r.harm for r in patrol), sum(r.harm for r in other)
    ratio = rate_ratio(x1, d1, x0, d0)
    harm_1, harm_0 = _div(h1, d1), _div(h0, d0)
    harm_ratio = _div(harm_1, harm_0) if harm_1 is not None and harm_0 is not None else None
    cost = sum(r.cost_gbp for r in rows)
    record: Record = {
        "hotspot_id": label,
        "days": len(rows),
        "patrol_days": d1,
        "non_patrol_days": d0,
        "crimes_patrol": x1,
        "crimes_non_patrol": x0,
        "crimes_per_day_patrol": _div(x1, d1),
        "crimes_per_day_non_patrol": _div(x0, d0),
        "rate_ratio": ratio.ratio,
        "ci_low": ratio.low,
        "ci_high": ratio.high,
        "change_pct": None if ratio.ratio is None else (ratio.ratio - 1) * 100,
        "harm_patrol": h1,
        "harm_non_patrol": h0,
        "harm_per_day_patrol": harm_1,
        "harm_per_day_non_patrol": harm_0,
        "harm_change_pct": None if not harm_ratio else (harm_ratio - 1) * 100,
        "harm_unknown": sum(r.harm_unknown for r in rows),
        "unit_minutes": _minutes(sum(r.unit_ms for r in rows)),
        "covered_minutes": _minutes(sum(r.covered_ms for r in rows)),
        "cost_gbp": cost,
        "cost_per_patrol_day": _div(cost, d1),
        "uncosted_minutes": _minutes(sum(r.uncosted_ms for r in rows)),
    }
    for unit_type in unit_types:
        ms = sum(r.ms_by_type.get(unit_type, 0) for r in rows)
        record[f"minutes_{unit_type}"] = _minutes(ms)
        rate = costs.get(unit_type)
        record[f"cost_{unit_type}"] = None if rate is None else _minutes(ms) * rate
    return record


def summary(
    rows: Sequence[DailyRow], unit_types: Sequence[str], costs: Mapping[str, float]
) -> list[Record]:
    """One record per hot spot (in the rows' order) and one ``ALL`` (hot-spot-days pooled)."""
    records = [_summary(h, rs, unit_types, costs) for h, rs in _by_hotspot(rows).items()]
    records.append(_summary(ALL, rows, unit_types, costs))
    return records


def days_since_patrol(rows: Sequence[DailyRow]) -> list[str | None]:
    """For each of one hot spot's rows (by date): None on a patrol day, else the bucket of days
    since its last patrol day within the rows (``RESIDUAL_BUCKETS``; ``none`` before any)."""
    out: list[str | None] = []
    last: int | None = None
    for n, row in enumerate(rows):
        if row.patrol_day:
            last = n
            out.append(None)
        elif last is None:
            out.append("none")
        else:
            since = n - last
            out.append(str(since) if since < 4 else "4+")
    return out


def residual(rows: Sequence[DailyRow]) -> list[Record]:
    """Non-patrol days by days since the last patrol day: per hot spot and ``ALL``, every
    bucket."""
    pooled: dict[str, list[int]] = {b: [0, 0] for b in RESIDUAL_BUCKETS}
    records: list[Record] = []

    def emit(label: str, counts: Mapping[str, list[int]]) -> None:
        for bucket in RESIDUAL_BUCKETS:
            days, crimes = counts[bucket]
            records.append(
                {
                    "hotspot_id": label,
                    "days_since_patrol": bucket,
                    "days": days,
                    "crimes": crimes,
                    "crimes_per_day": _div(crimes, days),
                }
            )

    for hotspot_id, mine in _by_hotspot(rows).items():
        ordered = sorted(mine, key=lambda r: r.date)
        counts: dict[str, list[int]] = {b: [0, 0] for b in RESIDUAL_BUCKETS}
        for row, bucket in zip(ordered, days_since_patrol(ordered), strict=True):
            if bucket is not None:
                for target in (counts[bucket], pooled[bucket]):
                    target[0] += 1
                    target[1] += row.crimes
        emit(hotspot_id, counts)
    emit(ALL, pooled)
    return records


def dosage_band(minutes: float) -> str:
    """The ``DOSAGE_BANDS`` name of a visit's length."""
    if minutes < 5:
        return "under_5"
    if minutes < 10:
        return "5_to_10"
    if minutes <= 15:
        return "10_to_15"
    return "over_15"


def _dosage(label: str, visits: Sequence[LedgerVisit]) -> Record:
    minutes = [v.minutes for v in visits]
    record: Record = {
        "hotspot_id": label,
        "visits": len(visits),
        "median_minutes": statistics.median(minutes) if minutes else None,
    }
    for band in DOSAGE_BANDS:
        count = sum(1 for m in minutes if dosage_band(m) == band)
        record[f"share_{band}"] = _div(count, len(minutes))
    return record


def dosage(hotspot_ids: Sequence[str], visits: Sequence[LedgerVisit]) -> list[Record]:
    """Per hot spot of ``hotspot_ids`` (in order) and ``ALL``: visits, median minutes and the
    share of visits in each dosage band. ``visits`` are those of the evaluated dates."""
    grouped: dict[str, list[LedgerVisit]] = defaultdict(list)
    for visit in visits:
        grouped[visit.hotspot_id].append(visit)
    wanted = set(hotspot_ids)
    known = [v for v in visits if v.hotspot_id in wanted]
    return [_dosage(h, grouped.get(h, [])) for h in hotspot_ids] + [_dosage(ALL, known)]
