"""Local child processes on loopback: free ports, stopping a child, and ``hotspot worker``
subprocesses as the demo, the bench and the integration tests start them.

A worker is configured the way an operator configures one, by its ``HOTSPOT_*`` environment
variables over the caller's own environment, and is run as ``python -m stream.cli worker`` with
this checkout first on ``PYTHONPATH``, so the code under test or measurement is the code that
runs. Whether it is up is asked the way an orchestrator asks: ``/healthz`` saying ready.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream.kafka import SECURITY_OPTIONS

#: the checkout this module belongs to: what a worker subprocess imports ``stream`` from
ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS's pick; free until someone binds it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def terminate(process: subprocess.Popen[Any], timeout_s: float) -> bool:
    """SIGTERM a child and wait for it, SIGKILL after ``timeout_s``; True if it had to be
    killed."""
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
        return False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True


def worker_env(base: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker subprocess: ``base`` (the caller's) less its Kafka security
    settings, this checkout first on ``PYTHONPATH``, then ``overrides`` (``HOTSPOT_*``
    settings) over both. The broker of a demo, bench or test worker is the one its caller
    names, and so is how it is secured: an operator's ``HOTSPOT_KAFKA_*`` for another
    cluster must not reach it."""
    security = {option.env for option in SECURITY_OPTIONS.values()}
    env = {name: value for name, value in base.items() if name not in security}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH")) if p)
    env.update(overrides)
    return env


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample of metric ``name`` (all its labels) in a Prometheus text
    exposition; 0 when there is none."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class WorkerExited(RuntimeError):
    """The worker subprocess exited while it was expected to run."""


@dataclass
class WorkerProcess:
    """One ``hotspot worker`` subprocess on ``127.0.0.1:web_port``.

    ``extra_env`` holds any further ``HOTSPOT_*`` settings and wins over the fields;
    ``log_level`` and ``session_timeout_s`` are left to the worker's defaults when None.
    ``own_session`` starts the worker in its own session, so that a Ctrl-C in the caller's
    terminal reaches the caller only and the caller decides how the worker stops."""

    broker_url: str
    app_id: str
    log_path: Path
    clock: str = "event"
    geofences: Path | None = None
    data_dir: Path | None = None
    session_timeout_s: float | None = None
    log_level: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    web_port: int = field(default_factory=free_port)
    cwd: Path | None = None
    own_session: bool = False
    process: subprocess.Popen[bytes] | None = None
    #: set by :meth:`stop` when the worker outlived its timeout and was killed
    killed: bool = False

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def overrides(self) -> dict[str, str]:
        """The worker's settings, as the ``HOTSPOT_*`` variables it reads them from."""
        env = {
            "HOTSPOT_BROKER": self.broker_url,
            "HOTSPOT_APP_ID": self.app_id,
            "HOTSPOT_CLOCK": self.clock,
            "HOTSPOT_WEB_HOST": "127.0.0.1",
            "HOTSPOT_WEB_PORT": str(self.web_port),
        }
        if self.geofences is not None:
            env["HOTSPOT_GEOFENCES"] = str(self.geofences)
        if self.data_dir is not None:
            env["HOTSPOT_DATA_DIR"] = str(self.data_dir)
        if self.session_timeout_s is not None:
            env["HOTSPOT_SESSION_TIMEOUT_S"] = f"{self.session_timeout_s:g}"
        if self.log_level is not None:
            env["HOTSPOT_LOG_LEVEL"] = self.log_level
        env.update(self.extra_env)
        return env

    def launch(self) -> WorkerProcess:
        """Start the subprocess, its output to ``log_path``; does not wait for it."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker"],
                env=worker_env(os.environ, self.overrides()),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=self.own_session,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, "the worker was not launched"
        return self.process.pid

    def _get(self, path: str, timeout_s: float) -> bytes | None:
        try:
            with urllib.request.urlopen(self.web + path, timeout=timeout_s) as response:
                return bytes(response.read())
        except OSError:
            return None

    def health(self, timeout_s: float = 2.0) -> dict[str, Any] | None:
        """The worker's ``/healthz`` answer, or None while it does not answer."""
        body = self._get("/healthz", timeout_s)
        if body is None:
            return None
        try:
            return dict(orjson.loads(body))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None

    def ready(self) -> bool:
        """Whether ``/healthz`` says ready; raises :class:`WorkerExited` if the worker has
        exited (so a waiting caller learns it at once, with the worker's last words)."""
        if self.process is None:
            raise WorkerExited("the worker was not launched")
        if self.process.poll() is not None:
            code = self.process.returncode
            raise WorkerExited(f"worker exited with {code}: {self.log_tail()}")
        health = self.health()
        return bool(health and health.get("ready"))

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready within {timeout_s:g} s: {self.log_tail()}")

    def metrics(self) -> str:
        """The worker's ``/metrics`` text, or "" while it does not answer."""
        body = self._get("/metrics", 5.0)
        return body.decode() if body is not None else ""

    def pings_counted(self) -> int:
        """Pings the worker has processed (its ``hotspot_pings_total``, every outcome)."""
        return int(metric_sum(self.metrics(), "hotspot_pings_total"))

    def rss_mb(self, field: str = "VmRSS") -> float:
        """The worker's resident memory now, or its peak so far with ``field="VmHWM"``
        (Linux ``/proc``; NaN elsewhere)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return float("nan")
        for line in status.splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout_s`` for a clean shutdown, then SIGKILL; returns the
        exit code (0 if it was never launched)."""
        if self.process is None:
            return 0
        self.killed = terminate(self.process, timeout_s)
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to flush or commit (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
