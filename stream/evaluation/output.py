"""The report's files: ``daily.csv``, ``summary.csv``, ``residual.csv``, ``dosage.csv`` and
``report.html`` (docs/interface.md, Evaluation: hotspot report)."""

from __future__ import annotations

from pathlib import Path

from stream.evaluation.html import render_html
from stream.evaluation.report import Report, write_csv


def write_report(report: Report, out: Path) -> list[Path]:
    """The five files in ``out`` (made if missing); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, records in (
        ("daily.csv", report.daily),
        ("summary.csv", report.summary),
        ("residual.csv", report.residual),
        ("dosage.csv", report.dosage),
    ):
        write_csv(out / name, records)
        written.append(out / name)
    html = out / "report.html"
    html.write_text(render_html(report), encoding="utf-8")
    written.append(html)
    return written
