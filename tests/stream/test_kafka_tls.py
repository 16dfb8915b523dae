"""End to end over TLS: the embedded broker behind a TLS-terminating proxy (its own TLS takes no
connection), with certificates made here. A worker told to use TLS and the CA processes pings
sent through TLS by ``hotspot replay`` and its events are read through TLS; a worker that
does not trust the broker's certificate, or is refused by it, stops with one line.

SASL: the embedded broker with ``--authentication`` refuses every client (it starts with no
user and creates none for an unauthenticated client), which is what the refusal test needs.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from stream.broker.embedded import EmbeddedBroker, start_broker
from stream.kafka import KafkaSecurity
from stream.tools.processes import free_port, worker_env
from tests.stream.harness import ROOT, Worker, consume, values, wait_until
from tests.stream.netproxy import TcpProxy
from tests.stream.worker.test_presence_pipeline import (
    expected_events,
    geofence_key,
    scripted_day,
    square_file,
)

pytestmark = pytest.mark.integration

SECRET = "correct-horse-battery"


@dataclass
class Pki:
    ca: Path
    other_ca: Path
    client_cert: Path
    client_key: Path
    server: ssl.SSLContext


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """The broker's CA, a CA nobody should trust, a client certificate and the proxy's server
    context (a certificate for 127.0.0.1 and localhost)."""
    ca, other = trustme.CA(), trustme.CA()
    paths = Pki(
        tmp_path / "ca.pem",
        tmp_path / "other-ca.pem",
        tmp_path / "client.pem",
        tmp_path / "client.key",
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
    )
    ca.cert_pem.write_to_path(str(paths.ca))
    other.cert_pem.write_to_path(str(paths.other_ca))
    client = ca.issue_cert("hotspot-worker")
    client.cert_chain_pems[0].write_to_path(str(paths.client_cert))
    client.private_key_pem.write_to_path(str(paths.client_key))
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(paths.server)
    ca.configure_trust(paths.server)  # to check client certificates when they are required
    return paths


@pytest.fixture
def tls_broker(pki: Pki) -> Iterator[TcpProxy]:
    """The embedded broker, reachable only through TLS on the proxy's port (which it
    advertises)."""
    proxy_port = free_port()
    broker = start_broker(advertised_port=proxy_port)
    try:
        with TcpProxy(proxy_port, broker.port, ssl_context=pki.server) as proxy:
            yield proxy
    finally:
        broker.stop()


def tls_env(pki: Pki, ca: Path | None = None) -> dict[str, str]:
    return {
        "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SSL",
        "HOTSPOT_KAFKA_SSL_CAFILE": str(ca or pki.ca),
    }


def mutual_env(pki: Pki) -> dict[str, str]:
    return {
        **tls_env(pki),
        "HOTSPOT_KAFKA_SSL_CERTFILE": str(pki.client_cert),
        "HOTSPOT_KAFKA_SSL_KEYFILE": str(pki.client_key),
    }


def hotspot(
    *argv: str, env: dict[str, str], timeout_s: float = 90
) -> subprocess.CompletedProcess[str]:
    """``hotspot ARGV`` from this checkout, with ``env`` (and none of the caller's
    ``HOTSPOT_KAFKA_*``) as its settings."""
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *argv],
        env=worker_env(os.environ, env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def pings_file(tmp_path: Path) -> Path:
    import orjson

    path = tmp_path / "pings.jsonl"
    path.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in scripted_day()))
    return path


def run_over_tls(proxy: TcpProxy, tmp_path: Path, env: dict[str, str]) -> None:
    """A worker with ``env`` on the TLS broker: pings in by ``hotspot replay``, the defined
    events out, read by a consumer and by the worker's own control-room feed, all over TLS."""
    url = f"kafka://127.0.0.1:{proxy.listen_port}"
    bootstrap = f"127.0.0.1:{proxy.listen_port}"
    security = KafkaSecurity.from_env(env)
    worker = Worker(url, geofences=square_file(tmp_path), extra_env=env).start()
    try:
        sent = hotspot(
            "replay", str(pings_file(tmp_path)), "--broker", url, "--no-progress", env=env
        )
        assert sent.returncode == 0, sent.stderr
        want_geofence, _ = expected_events()
        got = values(consume(bootstrap, "geofence-events", len(want_geofence), security=security))
        assert sorted(geofence_key(e) for e in got) == sorted(want_geofence)
        assert wait_until(lambda: len(worker.feed_events()) >= len(want_geofence))
    finally:
        assert worker.stop() == 0


def test_a_worker_runs_end_to_end_over_tls(tls_broker: TcpProxy, pki: Pki, tmp_path: Path) -> None:
    run_over_tls(tls_broker, tmp_path, tls_env(pki))


def test_a_worker_runs_end_to_end_over_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    pki.server.verify_mode = ssl.CERT_REQUIRED
    proxy_port = free_port()
    broker = start_broker(advertised_port=proxy_port)
    try:
        with TcpProxy(proxy_port, broker.port, ssl_context=pki.server) as proxy:
            run_over_tls(proxy, tmp_path, mutual_env(pki))
            # without its certificate the same worker is turned away, and says why
            refused = hotspot("worker", env=worker_settings_env(proxy, tls_env(pki), tmp_path))
    finally:
        broker.stop()
    assert_one_line(
        refused, "the broker hung up after the TLS handshake; does it require a client certificate"
    )


def worker_settings_env(proxy: TcpProxy, env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        "HOTSPOT_BROKER": f"kafka://127.0.0.1:{proxy.listen_port}",
        "HOTSPOT_WEB_PORT": str(free_port()),
        "HOTSPOT_DATA_DIR": str(tmp_path / "refused"),
        **env,
    }


def assert_one_line(done: subprocess.CompletedProcess[str], reason: str) -> None:
    assert done.returncode not in (0, None), done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("hotspot: cannot connect to kafka://127.0.0.1:"), lines[0]
    assert reason in lines[0], lines[0]
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("trust", "reason"),
    [
        ("other", "over SSL: certificate verify failed ("),
        ("system", "over SSL: certificate verify failed ("),
    ],
)
def test_a_worker_that_does_not_trust_the_broker_stops_with_one_line(
    tls_broker: TcpProxy, pki: Pki, tmp_path: Path, trust: str, reason: str
) -> None:
    env = tls_env(pki, pki.other_ca)
    if trust == "system":
        del env["HOTSPOT_KAFKA_SSL_CAFILE"]
    done = hotspot("worker", env=worker_settings_env(tls_broker, env, tmp_path))
    assert_one_line(done, reason)


def test_replay_that_does_not_trust_the_broker_stops_with_one_line(
    tls_broker: TcpProxy, pki: Pki, tmp_path: Path
) -> None:
    url = f"kafka://127.0.0.1:{tls_broker.listen_port}"
    done = hotspot(
        "replay", str(pings_file(tmp_path)), "--broker", url, "--kafka-security-protocol", "SSL",
        env={},
    )  # fmt: skip
    assert_one_line(done, "certificate verify failed")


def test_a_plain_text_worker_at_a_tls_listener_is_told_so(
    tls_broker: TcpProxy, tmp_path: Path
) -> None:
    done = hotspot("worker", env=worker_settings_env(tls_broker, {}, tmp_path))
    assert_one_line(done, "over PLAINTEXT: the broker closed the connection; does it expect TLS")


def test_a_tls_worker_at_a_plain_listener_is_told_so(
    broker: EmbeddedBroker, pki: Pki, tmp_path: Path
) -> None:
    env = {
        "HOTSPOT_BROKER": broker.url,
        "HOTSPOT_WEB_PORT": str(free_port()),
        "HOTSPOT_DATA_DIR": str(tmp_path / "data"),
        **tls_env(pki),
    }
    assert_one_line(hotspot("worker", env=env), "does 127.0.0.1:")


@pytest.fixture
def sasl_broker() -> Iterator[EmbeddedBroker]:
    broker = start_broker(authentication=True)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_a_worker_whose_credentials_are_refused_stops_with_one_line(
    sasl_broker: EmbeddedBroker, tmp_path: Path, mechanism: str
) -> None:
    secret = tmp_path / "password"
    secret.write_text(SECRET + "\n")
    env = {
        "HOTSPOT_BROKER": sasl_broker.url,
        "HOTSPOT_WEB_PORT": str(free_port()),
        "HOTSPOT_DATA_DIR": str(tmp_path / "data"),
        "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HOTSPOT_KAFKA_SASL_MECHANISM": mechanism,
        "HOTSPOT_KAFKA_SASL_USERNAME": "patrol-worker",
        "HOTSPOT_KAFKA_SASL_PASSWORD_FILE": str(secret),
    }
    done = hotspot("worker", env=env)
    assert_one_line(done, "over SASL_PLAINTEXT: the broker ")
    assert f"({mechanism} as patrol-worker)" in done.stderr
