"""Logs an operator can read: a broker outage in a few lines, JSON lines on request."""

from __future__ import annotations

import asyncio
import io
import logging
import logging.config
import sys
from typing import Any

import orjson
import pytest

from stream import logs
from stream.broker.embedded import EmbeddedBroker, free_port
from stream.kafka import PLAINTEXT, broker_answers


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


def outage_records(seconds: int, per_second: int = 150) -> list[tuple[float, logging.LogRecord]]:
    """What aiokafka and Faust log a second while the broker is away."""
    kinds = [
        ("aiokafka.conn", "Unable connect to node with id 1: [Errno 111] Connect call failed"),
        ("aiokafka.cluster", "Unable to update metadata from [1]"),
        ("aiokafka.consumer.fetcher", "Failed fetch messages from 1: NodeNotReadyError"),
        (
            "aiokafka.consumer.group_coordinator",
            "Group Coordinator Request failed: NodeNotReadyError",
        ),
        ("aiokafka.producer.sender", "Got error produce response: NodeNotReadyError"),
    ]
    return [
        (second + i / per_second, record(*kinds[i % len(kinds)]))
        for second in range(seconds)
        for i in range(per_second)
    ]


def test_an_outage_is_one_line_a_reminder_a_minute_and_one_line_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    link = logs.BrokerLink(remind_every_s=60, clock=clock)
    start = clock.now
    shown = []
    for offset, rec in outage_records(seconds=150):
        clock.now = start + offset
        if link.filter(rec):
            shown.append(rec)
    assert [r.levelname for r in shown] == ["WARNING"] * 3  # lost, reminders at 60 s and 120 s
    assert shown[0].getMessage().startswith("lost the broker (Unable connect to node")
    assert "still unreachable after 60 s" in shown[1].getMessage()
    assert "still unreachable after 120 s" in shown[2].getMessage()
    assert all(r.name == "hotspot" for r in shown)
    clock.now = start + 151
    with caplog.at_level(logging.WARNING, logger="hotspot"):
        link.back()
        link.back()  # said once
    assert [r.getMessage() for r in caplog.records] == [
        f"the broker is back after 151 s ({150 * 150 - 1} client errors hidden)"
    ]
    assert not link.lost


def test_records_that_are_not_connection_trouble_pass_untouched() -> None:
    link = logs.BrokerLink(clock=FakeClock())
    ours = record("hotspot", "Unable connect to node: not a client library's record")
    info = record("aiokafka.conn", "Unable connect to node 1", level=logging.INFO)
    other = record("aiokafka.consumer", "Heartbeat session expired - marking coordinator dead")
    assert link.filter(ours) and ours.name == "hotspot" and not link.lost
    assert link.filter(info) and not link.lost
    assert link.filter(other) and link.lost  # the first trouble says the broker is lost
    assert other.getMessage().startswith("lost the broker")
    assert not link.filter(record("aiokafka.conn", "Unable connect to node with id 1"))
    assert link.filter(record("aiokafka", "Commit failed for offsets: unknown member"))


def test_an_exception_counts_by_its_type() -> None:
    link = logs.BrokerLink(clock=FakeClock())
    try:
        raise ConnectionRefusedError("[Errno 111] Connect call failed")
    except ConnectionRefusedError:
        rec = logging.LogRecord(
            "faust.transport",
            logging.ERROR,
            __file__,
            1,
            "Drain messages raised",
            (),
            sys.exc_info(),
        )
    assert link.filter(rec) and link.lost
    assert rec.exc_info is None  # the traceback is not printed
    assert "Connect call failed" in rec.getMessage()


def test_json_lines() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("hotspot.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("checkpoint took %d ms", 12)
        try:
            raise ValueError("bad value")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["logger"] == "hotspot.test-json"
    assert first["message"] == "checkpoint took 12 ms"
    assert first["ts"].endswith("Z") and len(first["ts"]) == 24
    assert second["error"] == "ValueError: bad value"


def test_the_dict_config_installs_the_same_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(logs.dict_config("info", "json"))
        assert root.level == logging.INFO
        [only] = root.handlers
        assert isinstance(only.formatter, logs.JsonFormatter)
        assert logs.broker_link in only.filters
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.handler("xml")


@pytest.mark.integration
def test_a_probe_tells_whether_the_broker_answers(broker: EmbeddedBroker) -> None:
    assert asyncio.run(broker_answers(broker.url, security=PLAINTEXT))
    assert not asyncio.run(
        broker_answers(f"kafka://127.0.0.1:{free_port()}", timeout_s=1.0, security=PLAINTEXT)
    )


@pytest.mark.integration
def test_a_worker_that_cannot_reach_its_broker_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from stream import cli

    monkeypatch.setenv("HOTSPOT_DATA_DIR", str(tmp_path))
    code = cli.main(["worker", "--broker", f"kafka://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("hotspot: cannot reach the broker at kafka://"), err
