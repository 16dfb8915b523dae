"""The soak: its verdict on growth (pure), and a short soak of a real worker on the embedded
broker that finds nothing growing after the warm-up. Nothing here asserts a time or a
latency."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest

from stream.cli import build_parser, main
from stream.tools.soak import (
    RSS_LIMIT_BYTES_PER_PING,
    Sample,
    growth,
    line,
    run_soak,
    security_variables,
    slope,
    write_samples,
)


def samples(rss: list[float], fds: list[int], tasks: list[int], per: int = 1000) -> list[Sample]:
    return [
        Sample(i + 1, 5.0 * (i + 1), per * (i + 1), r, f, t, 0.25, 10, 20.0, 50.0)
        for i, (r, f, t) in enumerate(zip(rss, fds, tasks, strict=True))
    ]


def test_slope_is_least_squares() -> None:
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert slope([0, 1, 2, 3], [5, 4, 6, 5]) == pytest.approx(0.2)
    assert slope([2, 2, 2], [1, 5, 9]) == 0.0


def test_a_steady_worker_has_no_problems() -> None:
    verdict = growth(
        samples(
            [90, 95, 96, 95.5, 96.2, 95.8, 96.1], [16] * 7, [56, 58, 57, 63, 56, 57, 59], 100_000
        ),
        1,
    )
    assert verdict is not None
    assert verdict.fds == (16, 16)
    assert verdict.tasks == (63, 56)
    assert verdict.problems() == []


def test_a_leak_of_memory_fds_or_tasks_is_found() -> None:
    mb = 1024 * 1024
    # 1 MB more every 1,000 pings: about 1 KiB a ping
    verdict = growth(samples([90 + i for i in range(8)], [16 + i for i in range(8)], [56] * 8), 2)
    assert verdict is not None
    assert verdict.rss_bytes_per_ping == pytest.approx(mb / 1000)
    assert verdict.rss_bytes_per_enter == pytest.approx(mb / 10)  # 10 enters a sample
    assert verdict.fds == (20, 21)
    problems = verdict.problems()
    assert len(problems) == 2
    assert problems[0].startswith("RSS grows 1048.6 B a ping")
    assert problems[1] == "open fds rise from at most 20 to at least 21"
    tasks = growth(samples([90] * 8, [16] * 8, [56, 70, 57, 58, 59, 60, 61, 62]), 2)
    assert tasks is not None
    assert tasks.problems() == ["asyncio tasks rise from at most 59 to at least 60"]


def test_the_warm_up_is_left_out_and_too_few_samples_give_no_verdict() -> None:
    warming = samples([40, 70, 90, 90, 90, 90], [5, 12, 16, 16, 16, 16], [10, 40, 56, 56, 56, 56])
    verdict = growth(warming, 2)
    assert verdict is not None and verdict.problems() == []
    assert growth(warming, 0) is not None and growth(warming, 0).problems()  # type: ignore[union-attr]
    assert growth(warming, 3) is None


def test_reports_print_and_write(tmp_path: Path) -> None:
    taken = samples([90.25, 91.0], [16, 16], [56, 57])
    taken[1] = Sample(2, 120.0, 240_000, 91.0, 16, 57, 3.5, 0, None, None)
    assert line(taken[0]).split() == [
        "1",
        "0.1",
        "1,000",
        "90.2",
        "16",
        "56",
        "0.2",
        "10",
        "20",
        "50",
    ]
    assert line(taken[1]).split()[-2:] == ["-", "-"]
    write_samples(tmp_path / "soak.json", taken)
    rows = orjson.loads((tmp_path / "soak.json").read_bytes())
    assert rows[1] == {
        "interval": 2,
        "elapsed_s": 120.0,
        "pings_sent": 240_000,
        "rss_mb": 91.0,
        "open_fds": 16,
        "asyncio_tasks": 57,
        "cpu_s": 3.5,
        "enters": 0,
        "p50_ms": None,
        "p99_ms": None,
    }
    write_samples(tmp_path / "soak.csv", taken)
    with (tmp_path / "soak.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["pings_sent"] for r in table] == ["1000", "240000"]


def test_the_command_defaults() -> None:
    args = build_parser().parse_args(["soak"])
    assert (args.rate, args.minutes, args.interval) == (2000.0, 10.0, 60.0)
    assert args.rss_limit == RSS_LIMIT_BYTES_PER_PING and args.broker is None


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--rate", "0"], "hotspot: --rate: must be more than 0"),
        (["--minutes", "-1"], "hotspot: --minutes: must be more than 0"),
        (["--units", "0"], "hotspot: --units: must be 1 or more"),
    ],
)
def test_a_bad_option_exits_2_with_one_line(
    given: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["soak", *given]) == 2
    assert capsys.readouterr().err == said + "\n"


def test_a_soak_on_another_broker_takes_the_kafka_security_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its worker gets them as variables (flags over the environment); a bad one exits 2."""
    monkeypatch.setenv("HOTSPOT_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("HOTSPOT_KAFKA_SSL_CHECK_HOSTNAME", "false")
    args = build_parser().parse_args(
        ["soak", "--broker", "kafka://kafka:9093", "--kafka-security-protocol", "SASL_SSL"]
    )
    assert security_variables(args) == {
        "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "HOTSPOT_KAFKA_SSL_CHECK_HOSTNAME": "false",
    }
    assert main(["soak", "--broker", "kafka://kafka:9093", "--kafka-sasl-mechanism", "MD5"]) == 2
    assert capsys.readouterr().err.startswith("hotspot: --kafka-sasl-mechanism: ")


@pytest.mark.integration
def test_a_short_soak_finds_nothing_growing_after_the_warm_up() -> None:
    """Ten short reports at a modest rate (half the command's default); the first three (states made, caches filled, the
    allocator settling) are the warm-up. What grows after it would grow for hours."""
    # 45 fixes a unit: the load is not sent again within the run, so no burst of visits
    # (every unit jumping back to its start) falls into the second half
    taken = run_soak(
        rate=1000, seconds=40, interval_s=4, units=1000, hotspots=300, seed=11, fixes_per_unit=45
    )
    assert len(taken) == 10
    assert [s.interval for s in taken] == list(range(1, 11))
    assert all(s.rss_mb > 0 and s.open_fds > 0 and s.asyncio_tasks > 0 for s in taken)
    assert all(s.cpu_s >= 0 for s in taken) and sum(s.cpu_s for s in taken) > 0
    assert taken[-1].pings_sent == 1000 * 40
    assert sum(s.enters for s in taken) > 0
    # the bound: a worker keeping 128 B of every ping (about a ping's key and value) exceeds
    # it; over the 28,000 pings after the warm-up the RSS noise of a loaded machine stays
    # far below
    verdict = growth(taken, warm_up=3, rss_limit_bytes_per_ping=128)
    assert verdict is not None
    assert verdict.problems() == [], [line(s) for s in taken]
