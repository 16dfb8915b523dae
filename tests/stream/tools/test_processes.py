"""The local-process helpers: a worker's environment and settings, the metric sum it is
counted by, and stopping a child (no worker is started here)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from stream.tools.processes import (
    ROOT,
    WorkerExited,
    WorkerProcess,
    free_port,
    metric_sum,
    port_open,
    terminate,
    worker_env,
)


def test_worker_env_puts_this_checkout_first_and_the_overrides_last() -> None:
    base = {"PATH": "/bin", "PYTHONPATH": "/elsewhere", "HOTSPOT_CLOCK": "live"}
    env = worker_env(base, {"HOTSPOT_CLOCK": "event"})
    assert env["PYTHONPATH"] == os.pathsep.join((str(ROOT), "/elsewhere"))
    assert env["HOTSPOT_CLOCK"] == "event"
    assert env["PATH"] == "/bin"
    assert base["HOTSPOT_CLOCK"] == "live"  # the caller's mapping is left alone
    assert worker_env({}, {})["PYTHONPATH"] == str(ROOT)


def test_worker_env_leaves_the_callers_kafka_security_out() -> None:
    base = {"HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "HOTSPOT_KAFKA_SASL_PASSWORD": "x"}
    env = worker_env(base, {"HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SSL"})
    assert env["HOTSPOT_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    assert "HOTSPOT_KAFKA_SASL_PASSWORD" not in env
    assert "HOTSPOT_KAFKA_SECURITY_PROTOCOL" not in worker_env(base, {})


def test_the_checkout_is_the_one_holding_the_stream_package() -> None:
    assert (ROOT / "stream" / "cli.py").is_file()


def test_overrides_name_every_setting_given_and_only_those(tmp_path: Path) -> None:
    worker = WorkerProcess(
        "kafka://127.0.0.1:9", "app", tmp_path / "w.log", web_port=7001, session_timeout_s=6
    )
    assert worker.overrides() == {
        "HOTSPOT_BROKER": "kafka://127.0.0.1:9",
        "HOTSPOT_APP_ID": "app",
        "HOTSPOT_CLOCK": "event",
        "HOTSPOT_WEB_HOST": "127.0.0.1",
        "HOTSPOT_WEB_PORT": "7001",
        "HOTSPOT_SESSION_TIMEOUT_S": "6",
    }
    full = WorkerProcess(
        "kafka://b:1",
        "app",
        tmp_path / "w.log",
        clock="live",
        geofences=tmp_path / "h.geojson",
        data_dir=tmp_path / "data",
        session_timeout_s=2.5,
        log_level="info",
        extra_env={"HOTSPOT_CLOCK": "event", "HOTSPOT_WEB_TOKEN": "t"},
        web_port=7002,
    )
    env = full.overrides()
    assert env["HOTSPOT_GEOFENCES"] == str(tmp_path / "h.geojson")
    assert env["HOTSPOT_DATA_DIR"] == str(tmp_path / "data")
    assert env["HOTSPOT_SESSION_TIMEOUT_S"] == "2.5"
    assert env["HOTSPOT_LOG_LEVEL"] == "info"
    assert env["HOTSPOT_CLOCK"] == "event"  # extra_env wins over the fields
    assert env["HOTSPOT_WEB_TOKEN"] == "t"


def test_metric_sum_adds_every_labelled_sample_of_one_metric() -> None:
    text = "\n".join(
        [
            "# HELP hotspot_pings_total Pings",
            "# TYPE hotspot_pings_total counter",
            'hotspot_pings_total{outcome="ok"} 120.0',
            'hotspot_pings_total{outcome="invalid"} 3.0',
            'hotspot_pings_total_created{outcome="ok"} 1.7e9',
            "hotspot_pings_totalish 99.0",
            "hotspot_units 7.0",
        ]
    )
    assert metric_sum(text, "hotspot_pings_total") == 123.0
    assert metric_sum(text, "hotspot_units") == 7.0
    assert metric_sum(text, "hotspot_missing") == 0.0
    assert metric_sum("", "hotspot_pings_total") == 0.0


def test_a_worker_not_launched_is_not_alive_and_stops_at_once(tmp_path: Path) -> None:
    worker = WorkerProcess("kafka://127.0.0.1:9", "app", tmp_path / "w.log")
    assert not worker.alive()
    assert worker.stop() == 0
    worker.kill()
    assert worker.log_tail() == ""


def test_ready_raises_once_the_process_has_exited(tmp_path: Path) -> None:
    worker = WorkerProcess("kafka://127.0.0.1:9", "app", tmp_path / "w.log")
    worker.log_path.write_text("one\ntwo\nlast words\n")
    worker.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    worker.process.wait()
    try:
        worker.ready()
    except WorkerExited as exc:
        assert "3" in str(exc) and "last words" in str(exc)
    else:
        raise AssertionError("ready() did not raise")
    assert worker.log_tail(1) == "last words"


def test_terminate_stops_a_child_that_honours_sigterm() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert terminate(child, 30.0) is False
    assert child.returncode is not None
    assert terminate(child, 30.0) is False  # already gone: nothing to do


def test_stop_sends_sigterm_and_returns_the_exit_code(tmp_path: Path) -> None:
    worker = WorkerProcess("kafka://127.0.0.1:9", "app", tmp_path / "w.log")
    worker.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert worker.alive()
    assert worker.stop(30.0) == -signal.SIGTERM
    assert not worker.killed and not worker.alive()


def test_port_open_sees_a_listener_on_a_free_port() -> None:
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert port_open("127.0.0.1", port)
