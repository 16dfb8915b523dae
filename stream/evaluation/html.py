"""``report.html``: the report's tables and charts in one self-contained page.

Charts are drawn by matplotlib (Agg) as SVG with text as paths and inlined: the page loads no
script, font, image or style from anywhere, so it works offline, prints, and makes no request.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

from geofences.evaluation.summary import ALL, RESIDUAL_BUCKETS, Record
from stream.evaluation.report import Report, format_value

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:2em;color:#1f2937;max-width:75em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #d1d5db}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #d1d5db;padding:.25em .5em;text-align:right}
th{background:#f3f4f6}td:first-child,th:first-child{text-align:left}
.lead{font-size:1.1em}.note{color:#92400e}figure{margin:1em 0;page-break-inside:avoid}
figcaption{font-size:.85em;color:#4b5563}svg{max-width:100%;height:auto}
.wide{overflow-x:auto}
@media print{body{margin:0}.wide{overflow:visible}table{font-size:.6em}details>summary{display:none}}
"""


def _svg(figure: Any) -> str:
    """The figure as inline SVG (no XML prolog, no date: the same report gives the same
    bytes); the figure is closed."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"
    matplotlib.rcParams["svg.hashsalt"] = "hotspot-report"
    import matplotlib.pyplot as plt

    return plt


def _minutes_chart(report: Report) -> str:
    plt = _pyplot()
    ids = [h.id for h in report.collection.hotspots]
    dates = sorted({r["date"] for r in report.daily})
    grid = [[0.0] * len(dates) for _ in ids]
    patrol = []
    for record in report.daily:
        i, j = ids.index(record["hotspot_id"]), dates.index(record["date"])
        grid[i][j] = record["unit_minutes"]
        if record["patrol_day"]:
            patrol.append((j, i))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(dates) + 2), 0.45 * len(ids) + 1.6))
    image = ax.imshow(grid, aspect="auto", cmap="Blues", interpolation="nearest")
    if patrol:
        ax.scatter([p[0] for p in patrol], [p[1] for p in patrol], marker="o", s=10, c="#b45309")
    ax.set_yticks(range(len(ids)), ids)
    step = max(1, len(dates) // 14)
    ax.set_xticks(range(0, len(dates), step), [d[5:] for d in dates[::step]], rotation=60)
    fig.colorbar(image, ax=ax, label="unit minutes")
    ax.set_title("Minutes per hot spot per day (dot: patrol day)")
    return _svg(fig)


def _crime_chart(report: Report) -> str:
    plt = _pyplot()
    rows = report.summary
    labels = [r["hotspot_id"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.45 * len(rows) + 1.8))
    y = list(range(len(rows)))
    patrol = [r["crimes_per_day_patrol"] or 0.0 for r in rows]
    other = [r["crimes_per_day_non_patrol"] or 0.0 for r in rows]
    left.barh([v + 0.2 for v in y], patrol, height=0.4, color="#2563eb", label="patrol days")
    left.barh([v - 0.2 for v in y], other, height=0.4, color="#9ca3af", label="other days")
    left.set_yticks(y, labels)
    left.invert_yaxis()
    left.set_xlabel("crimes per day")
    left.legend(loc="lower right", fontsize=8)
    left.set_title("Crime per day")
    for i, r in enumerate(rows):
        low, high, ratio = r["ci_low"], r["ci_high"], r["rate_ratio"]
        if low is None and high is None:
            continue
        lo = low if low is not None else 0.0
        hi = high if high is not None else max(lo * 4, 4.0)
        right.plot([lo, hi], [i, i], color="#1f2937", linewidth=2 if labels[i] == ALL else 1)
        if ratio is not None:
            right.plot([ratio], [i], marker="s", color="#dc2626")
    right.axvline(1.0, color="#6b7280", linestyle="--", linewidth=1)
    right.set_yticks(y, labels)
    right.set_ylim(len(rows) - 0.5, -0.5)
    right.set_xscale("log")
    right.set_xlabel("rate ratio, patrol ÷ other days (95 % exact interval)")
    right.set_title("Rate ratio")
    return _svg(fig)


def _dosage_chart(report: Report) -> str:
    plt = _pyplot()
    minutes = [v.minutes for v in report.visits]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    top = max([60.0, *minutes]) if minutes else 60.0
    bins = [b * 2.5 for b in range(int(top // 2.5) + 2)]
    ax.axvspan(10, 15, color="#fde68a", alpha=0.6, label="10–15 min (Koper curve)")
    ax.hist(minutes, bins=bins, color="#2563eb")
    ax.set_xlabel("minutes of a visit")
    ax.set_ylabel("visits")
    ax.legend(fontsize=8)
    ax.set_title("Dosage: how long each visit lasted")
    return _svg(fig)


def _residual_chart(report: Report) -> str:
    plt = _pyplot()
    pooled = {r["days_since_patrol"]: r for r in report.residual if r["hotspot_id"] == ALL}
    values = [pooled[b]["crimes_per_day"] or 0.0 for b in RESIDUAL_BUCKETS]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bars = ax.bar(list(RESIDUAL_BUCKETS), values, color="#9ca3af", label="non-patrol days")
    days = [f"{pooled[b]['days']} days" for b in RESIDUAL_BUCKETS]
    ax.bar_label(bars, labels=days, fontsize=7, padding=2)
    everything = next(r for r in report.summary if r["hotspot_id"] == ALL)
    if everything["crimes_per_day_patrol"] is not None:
        ax.axhline(everything["crimes_per_day_patrol"], color="#2563eb", label="patrol days")
    ax.set_xlabel("days since the hot spot's last patrol day")
    ax.set_ylabel("crimes per day")
    ax.legend(fontsize=8)
    ax.set_title("Residual effect (all hot spots)")
    return _svg(fig)


def _cell(value: Any) -> str:
    """A table cell for a reader: floats to 2 decimals (3 below 1); the CSVs keep 6."""
    if isinstance(value, float) and not isinstance(value, bool):
        return format_value(round(value, 3 if abs(value) < 1 else 2))
    return format_value(value)


def _table(records: Sequence[Record], columns: Sequence[str] | None = None) -> str:
    if not records:
        return "<p>None.</p>"
    names = list(columns or records[0])
    head = "".join(f"<th>{html.escape(n.replace('_', ' '))}</th>" for n in names)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(n)))}</td>" for n in names) + "</tr>"
        for r in records
    )
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure(svg: str, caption: str) -> str:
    return f'<figure class="chart">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'


def _headline(report: Report) -> str:
    everything = next(r for r in report.summary if r["hotspot_id"] == ALL)
    parts = [
        f"{everything['patrol_days']} patrol days and {everything['non_patrol_days']} other days "
        f"over {len(report.collection.hotspots)} hot spots."
    ]
    ratio, low, high = everything["rate_ratio"], everything["ci_low"], everything["ci_high"]
    if ratio is not None:
        change = everything["change_pct"]
        word = "fewer" if change < 0 else "more"
        interval = f"{format_value(low and round(low, 2)) or '0'} to {format_value(high and round(high, 2)) or '∞'}"
        parts.append(
            f"Crime per day on patrol days was {abs(change):.1f} % {word} than on other days "
            f"(rate ratio {ratio:.2f}, 95 % interval {interval})."
        )
    elif report.crimes_given:
        parts.append("The rate ratio is undefined: no crimes on one side.")
    cost = everything["cost_per_patrol_day"]
    if cost is not None:
        parts.append(f"Cost per patrol day £{cost:,.2f}.")
    return " ".join(html.escape(p) for p in parts)


def render_html(report: Report) -> str:
    """The whole page."""
    summary_columns = [
        "hotspot_id", "patrol_days", "non_patrol_days", "crimes_patrol", "crimes_non_patrol",
        "crimes_per_day_patrol", "crimes_per_day_non_patrol", "rate_ratio", "ci_low", "ci_high",
        "change_pct", "harm_per_day_patrol", "harm_per_day_non_patrol", "harm_change_pct",
        "unit_minutes", "cost_gbp", "cost_per_patrol_day",
    ]  # fmt: skip
    cost_columns = ["hotspot_id", "unit_minutes", "uncosted_minutes"] + [
        c for c in report.summary[0] if c.startswith(("minutes_", "cost_"))
    ]
    rates = ", ".join(f"{t} £{r:g}/min" for t, r in sorted(report.costs.items()))
    notes = "".join(f'<li class="note">{html.escape(n)}</li>' for n in report.notes)
    title = f"Patrol evaluation {report.first} to {report.last}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="lead">{_headline(report)}</p>',
        "<p>A patrol day: every patrol window starting that day met, by the rules of the live "
        "<code>met</code> alert; on a day without a window, at least "
        f"{report.patrol_day_minutes:g} minutes covered. Dates are local to "
        f"{html.escape(report.collection.timezone)}. Costs: {html.escape(rates)}. Intervals are "
        "exact (binomial, conditional on the total count); an empty cell is undefined.</p>",
        f"<ul>{notes}</ul>" if notes else "",
        "<h2>Patrol days against other days</h2>",
        _figure(_crime_chart(report), "Crime per day on patrol and other days, and the rate "
                "ratio with its 95 % interval (square: the ratio; dashed: no difference)."),
        _table(report.summary, summary_columns),
        "<h2>Minutes</h2>",
        _figure(_minutes_chart(report), "Unit minutes in each hot spot each day."),
        "<h2>Residual effect</h2>",
        _figure(_residual_chart(report), "Crime per non-patrol day by days since the last "
                "patrol day, against the patrol-day rate."),
        _table(report.residual),
        "<h2>Dosage</h2>",
        _figure(_dosage_chart(report), "Length of each visit."),
        _table(report.dosage),
        "<h2>Cost</h2>",
        _table(report.summary, cost_columns),
        "<h2>Every hot spot, every day</h2>",
        f"<details open><summary>daily.csv</summary>{_table(report.daily)}</details>",
        "</body></html>",
    ]  # fmt: skip
    return "\n".join(p for p in parts if p)
