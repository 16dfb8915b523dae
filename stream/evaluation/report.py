"""``hotspot report``: the evaluation's files from a ledger, a hot spot file and, optionally,
crimes, harm weights and costs (docs/interface.md, Evaluation: hotspot report).

Reads the files and has ``geofences.evaluation`` make every figure (``build_report``);
``stream.evaluation.output`` writes them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from geofences.evaluation.daily import Daily, daily
from geofences.evaluation.inputs import (
    DEFAULT_COSTS,
    LedgerVisit,
    overlaps_dates,
    parse_costs,
    parse_crimes,
    parse_harm_weights,
    parse_ledger,
)
from geofences.evaluation.summary import Record, daily_record, dosage, residual, summary
from geofences.hotspots import HotSpotCollection, load_hotspots


@dataclass
class Report:
    """Every table of the report, as records in column order, and what the reader must know."""

    collection: HotSpotCollection
    first: date
    last: date
    costs: Mapping[str, float]
    patrol_day_minutes: float
    result: Daily
    daily: list[Record]
    summary: list[Record]
    residual: list[Record]
    dosage: list[Record]
    visits: list[LedgerVisit]
    crimes_given: bool
    notes: list[str] = field(default_factory=list)


def build_report(
    ledger: Path,
    hotspots: Path,
    first: date,
    last: date,
    crimes: Path | None = None,
    harm_weights: Path | None = None,
    costs: Path | None = None,
    patrol_day_minutes: float = 15.0,
) -> Report:
    """All the figures. Raises ``HotSpotFileError`` / ``InputFileError`` for a bad input."""
    collection = load_hotspots(hotspots)
    tz = collection.timezone
    visits = parse_ledger(ledger.read_text(encoding="utf-8"), str(ledger))
    weights = (
        parse_harm_weights(harm_weights.read_text(encoding="utf-8"), str(harm_weights))
        if harm_weights is not None
        else {}
    )
    rates = (
        parse_costs(costs.read_text(encoding="utf-8"), str(costs))
        if costs is not None
        else dict(DEFAULT_COSTS)
    )
    crime_list = (
        parse_crimes(crimes.read_text(encoding="utf-8"), str(crimes), tz, weights)
        if crimes is not None
        else []
    )
    result = daily(collection, visits, crime_list, first, last, rates, patrol_day_minutes)
    in_range = [
        v
        for v in visits
        if v.hotspot_id in collection.by_id() and overlaps_dates(v, first, last, tz)
    ]
    report = Report(
        collection=collection,
        first=first,
        last=last,
        costs=rates,
        patrol_day_minutes=patrol_day_minutes,
        result=result,
        daily=[daily_record(r, result.unit_types) for r in result.rows],
        summary=summary(result.rows, result.unit_types, rates),
        residual=residual(result.rows),
        dosage=dosage([h.id for h in collection.hotspots], in_range),
        visits=in_range,
        crimes_given=crimes is not None,
    )
    notes = report.notes
    for hotspot_id, count in result.unknown_hotspots.items():
        notes.append(
            f"{count} ledger visits of hot spot {hotspot_id!r}, not in the hot spot file, are left out"
        )
    uncosted = sorted(t for t in result.unit_types if t not in rates)
    if uncosted:
        notes.append(
            f"no cost per minute for {', '.join(uncosted)}: their minutes are in uncosted_minutes, not in cost_gbp"
        )
    if crimes is not None:
        if result.crimes_outside:
            notes.append(f"{result.crimes_outside} crimes on these dates are in no hot spot")
        if result.crimes_off_dates:
            notes.append(f"{result.crimes_off_dates} crimes are on other dates")
        unknown = sum(r.harm_unknown for r in result.rows)
        if unknown:
            notes.append(
                f"{unknown} crimes in hot spots have no known harm: counted, harm not summed (harm_unknown)"
            )
    else:
        notes.append("no crimes file: crime and harm are 0")
    return report


def format_value(value: Any) -> str:
    """A CSV cell: None empty, booleans ``true``/``false``, floats to 6 decimals at most."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        text = f"{value:.6f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    return str(value)


def write_csv(path: Path, records: Sequence[Record]) -> None:
    if not records:
        path.write_text("", encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(list(records[0]))
        for record in records:
            writer.writerow([format_value(v) for v in record.values()])
