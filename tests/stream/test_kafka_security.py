"""The Kafka security settings: how they are read and refused, that the password never shows,
and that they reach the configuration of every Kafka client the project makes."""

from __future__ import annotations

import argparse
import ast
import asyncio
import gc
import logging
import ssl
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiokafka
import pytest
import trustme
from aiokafka.client import AIOKafkaClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from geofences.hotspots import demo_hotspots_path, load_hotspots
from stream import cli, kafka
from stream.alerts.webhooks import WebhookDispatcher
from stream.broker import tansu
from stream.control_room.feed import feed_consumer
from stream.evaluation import ledger
from stream.kafka import (
    PLAINTEXT,
    SECURITY_OPTIONS,
    BrokerRefused,
    KafkaSecurity,
    add_security_options,
    kafka_security,
    security_from_args,
)
from stream.options import SettingError
from stream.tools import replay
from stream.worker.app import Processor, broker_credentials
from stream.worker.positions_feed import positions_consumer
from stream.worker.settings import Settings, worker_settings
from stream.worker.topics import prepare_broker

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hunter2-not-for-logs"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a client certificate signed by it, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    client = ca.issue_cert("hotspot-worker")
    paths = {
        "ca": folder / "ca.pem",
        "cert": folder / "client.pem",
        "key": folder / "client.key",
        "junk": folder / "junk.pem",
        "password": folder / "password",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    paths["junk"].write_text("not a certificate\n")
    paths["password"].write_text(SECRET + "\n")
    return paths


def sasl_ssl_env(pki: dict[str, Path]) -> dict[str, str]:
    return {
        "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "HOTSPOT_KAFKA_SSL_CAFILE": str(pki["ca"]),
        "HOTSPOT_KAFKA_SSL_CERTFILE": str(pki["cert"]),
        "HOTSPOT_KAFKA_SSL_KEYFILE": str(pki["key"]),
        "HOTSPOT_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "HOTSPOT_KAFKA_SASL_USERNAME": "patrol-worker",
        "HOTSPOT_KAFKA_SASL_PASSWORD_FILE": str(pki["password"]),
    }


# -- reading the settings ---------------------------------------------------------------------


def test_without_settings_clients_connect_in_plain_text() -> None:
    assert KafkaSecurity.from_env({}) == PLAINTEXT
    assert PLAINTEXT.client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert worker_settings({}, {}).kafka == PLAINTEXT


def test_sasl_ssl_with_mutual_tls_and_a_password_file(pki: dict[str, Path]) -> None:
    security = KafkaSecurity.from_env(sasl_ssl_env(pki))
    assert security.protocol == "SASL_SSL" and security.uses_tls and security.uses_sasl
    assert security.sasl_password == SECRET  # one trailing newline dropped
    kwargs = security.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "patrol-worker"
    assert kwargs["sasl_plain_password"] == SECRET
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()]  # the CA bundle is loaded


def test_the_host_name_check_can_be_turned_off(pki: dict[str, Path]) -> None:
    env = {
        "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "ssl",
        "HOTSPOT_KAFKA_SSL_CAFILE": str(pki["ca"]),
        "HOTSPOT_KAFKA_SSL_CHECK_HOSTNAME": "false",
    }
    context = KafkaSecurity.from_env(env).client_kwargs()["ssl_context"]
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED  # the certificate is still checked


def test_only_one_trailing_newline_is_dropped_from_a_password_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("with newline\n\n")
    env = {
        "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HOTSPOT_KAFKA_SASL_MECHANISM": "plain",
        "HOTSPOT_KAFKA_SASL_USERNAME": "u",
        "HOTSPOT_KAFKA_SASL_PASSWORD_FILE": str(path),
    }
    security = KafkaSecurity.from_env(env)
    assert security.sasl_password == "with newline\n"
    assert security.sasl_mechanism == "PLAIN"


REFUSALS: list[tuple[dict[str, str], str]] = [
    (
        {"HOTSPOT_KAFKA_SECURITY_PROTOCOL": "TLS"},
        "HOTSPOT_KAFKA_SECURITY_PROTOCOL: must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, not 'TLS'",
    ),
    (
        {"HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SSL", "HOTSPOT_KAFKA_SSL_CAFILE": "/no/such/ca.pem"},
        "HOTSPOT_KAFKA_SSL_CAFILE: no such file: /no/such/ca.pem",
    ),
    (
        {"HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SSL", "HOTSPOT_KAFKA_SSL_CAFILE": "{junk}"},
        "HOTSPOT_KAFKA_SSL_CAFILE: not a PEM CA bundle",
    ),
    (
        {"HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SSL", "HOTSPOT_KAFKA_SSL_CERTFILE": "{cert}"},
        "HOTSPOT_KAFKA_SSL_KEYFILE: required with HOTSPOT_KAFKA_SSL_CERTFILE",
    ),
    (
        {"HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SSL", "HOTSPOT_KAFKA_SSL_KEYFILE": "{key}"},
        "HOTSPOT_KAFKA_SSL_CERTFILE: required with HOTSPOT_KAFKA_SSL_KEYFILE",
    ),
    (
        {
            "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SSL",
            "HOTSPOT_KAFKA_SSL_CERTFILE": "{junk}",
            "HOTSPOT_KAFKA_SSL_KEYFILE": "{key}",
        },
        "HOTSPOT_KAFKA_SSL_CERTFILE/HOTSPOT_KAFKA_SSL_KEYFILE: not a PEM certificate and its key",
    ),
    (
        {"HOTSPOT_KAFKA_SSL_CAFILE": "{ca}"},
        "HOTSPOT_KAFKA_SSL_CAFILE: set, but HOTSPOT_KAFKA_SECURITY_PROTOCOL is PLAINTEXT (no TLS)",
    ),
    (
        {"HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SSL", "HOTSPOT_KAFKA_SSL_CHECK_HOSTNAME": "no"},
        "HOTSPOT_KAFKA_SSL_CHECK_HOSTNAME: must be true or false, not 'no'",
    ),
    (
        {"HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
        "HOTSPOT_KAFKA_SASL_MECHANISM: required with HOTSPOT_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
    ),
    (
        {
            "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "HOTSPOT_KAFKA_SASL_MECHANISM": "MD5",
        },
        "HOTSPOT_KAFKA_SASL_MECHANISM: must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, not 'MD5'",
    ),
    (
        {
            "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "HOTSPOT_KAFKA_SASL_MECHANISM": "PLAIN",
            "HOTSPOT_KAFKA_SASL_PASSWORD": SECRET,
        },
        "HOTSPOT_KAFKA_SASL_USERNAME: required with HOTSPOT_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT",
    ),
    (
        {
            "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "HOTSPOT_KAFKA_SASL_MECHANISM": "PLAIN",
            "HOTSPOT_KAFKA_SASL_USERNAME": "u",
        },
        "HOTSPOT_KAFKA_SASL_PASSWORD or HOTSPOT_KAFKA_SASL_PASSWORD_FILE: required with",
    ),
    (
        {
            "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "HOTSPOT_KAFKA_SASL_MECHANISM": "PLAIN",
            "HOTSPOT_KAFKA_SASL_USERNAME": "u",
            "HOTSPOT_KAFKA_SASL_PASSWORD": SECRET,
            "HOTSPOT_KAFKA_SASL_PASSWORD_FILE": "{password}",
        },
        "HOTSPOT_KAFKA_SASL_PASSWORD_FILE: set together with HOTSPOT_KAFKA_SASL_PASSWORD; give one",
    ),
    (
        {
            "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "HOTSPOT_KAFKA_SASL_MECHANISM": "PLAIN",
            "HOTSPOT_KAFKA_SASL_USERNAME": "u",
            "HOTSPOT_KAFKA_SASL_PASSWORD_FILE": "/no/such/secret",
        },
        "HOTSPOT_KAFKA_SASL_PASSWORD_FILE: no such file: /no/such/secret",
    ),
    (
        {
            "HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "HOTSPOT_KAFKA_SASL_MECHANISM": "PLAIN",
            "HOTSPOT_KAFKA_SASL_USERNAME": "u",
            "HOTSPOT_KAFKA_SASL_PASSWORD_FILE": "{empty}",
        },
        "HOTSPOT_KAFKA_SASL_PASSWORD_FILE: {empty} is empty",
    ),
    (
        {"HOTSPOT_KAFKA_SASL_PASSWORD": SECRET},
        "HOTSPOT_KAFKA_SASL_PASSWORD (or _FILE): set, but HOTSPOT_KAFKA_SECURITY_PROTOCOL is PLAINTEXT (no SASL)",
    ),
]


@pytest.mark.parametrize(("env", "line"), REFUSALS)
def test_a_bad_setting_is_refused_naming_its_variable(
    pki: dict[str, Path], tmp_path: Path, env: dict[str, str], line: str
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    names = {**{k: str(v) for k, v in pki.items()}, "empty": str(empty)}
    env = {k: v.format(**names) for k, v in env.items()}
    with pytest.raises(SettingError) as refused:
        KafkaSecurity.from_env(env)
    assert str(refused.value).startswith(line.format(**names))
    assert SECRET not in str(refused.value)
    # the worker refuses it the same way, with its other settings
    with pytest.raises(SettingError) as again:
        worker_settings({}, env)
    assert str(again.value) == str(refused.value)


def test_a_bad_setting_stops_the_worker_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTSPOT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HOTSPOT_KAFKA_SASL_PASSWORD", SECRET)
    assert cli.main(["worker"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hotspot: HOTSPOT_KAFKA_SASL_MECHANISM:")
    assert SECRET not in err


def test_flags_win_over_the_environment(pki: dict[str, Path]) -> None:
    parser = argparse.ArgumentParser()
    add_security_options(parser)
    args = parser.parse_args(
        ["--kafka-security-protocol", "ssl", "--kafka-ssl-cafile", str(pki["ca"])]
    )
    env = {"HOTSPOT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "HOTSPOT_KAFKA_SSL_CAFILE": "/x"}
    security = security_from_args(args, env)
    assert (security.protocol, security.ssl_cafile) == ("SSL", pki["ca"])
    with pytest.raises(SettingError, match=r"^--kafka-ssl-cafile: no such file"):
        security_from_args(parser.parse_args(["--kafka-ssl-cafile", "/nope"]), {})


def test_replay_refuses_a_bad_security_setting_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pings = tmp_path / "pings.jsonl"
    pings.write_text("{}\n")
    argv = ["replay", str(pings), "--kafka-security-protocol", "SASL_SSL"]
    assert cli.main([*argv, "--kafka-sasl-password", SECRET]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == (
        "hotspot: HOTSPOT_KAFKA_SASL_MECHANISM: required with "
        "HOTSPOT_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n"
    )


def test_the_worker_and_replay_take_every_security_flag() -> None:
    parser = cli.build_parser()
    for command in ("worker", "replay"):
        extra = ["pings.jsonl"] if command == "replay" else []
        args = parser.parse_args(
            [command, *extra, "--kafka-sasl-username", "alice", "--kafka-ssl-check-hostname", "x"]
        )
        assert args.kafka_sasl_username == "alice"
        assert {o.dest for o in SECURITY_OPTIONS.values()} <= set(vars(args))


# -- the password never shows ----------------------------------------------------------------


def test_the_password_is_not_in_repr_or_str(pki: dict[str, Path]) -> None:
    security = KafkaSecurity.from_env(sasl_ssl_env(pki))
    settings = Settings(kafka=security)
    for text in (repr(security), str(security), repr(settings), security.describe()):
        assert SECRET not in text
    assert "patrol-worker" in security.describe()
    assert SECRET not in repr(broker_credentials(security))


def test_no_secret_in_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOTSPOT_KAFKA_SASL_PASSWORD", SECRET)
    for command in ("worker", "replay"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert "--kafka-sasl-password" in out and "HOTSPOT_KAFKA_SASL_PASSWORD_FILE" in out
        assert SECRET not in out


def test_a_brokers_message_is_scrubbed_of_the_password() -> None:
    security = KafkaSecurity(
        "SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password=SECRET
    )
    refused = kafka._refusal("cannot connect", security, RuntimeError(f"bad password {SECRET}"))
    assert isinstance(refused, BrokerRefused)
    assert SECRET not in str(refused) and "***" in str(refused)


# -- the settings reach every client ---------------------------------------------------------


class Built(Exception):
    """Raised by a recording client class once the client is built: nothing connects."""


def recording(cls: type, built: list[Any]) -> type:
    """``cls``, keeping each instance it builds and stopping the caller there."""

    class Recording(cls):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)
            raise Built

    return Recording


def client_of(instance: Any) -> AIOKafkaClient:
    """The aiokafka client under a producer, consumer or admin client (or itself)."""
    if isinstance(instance, AIOKafkaClient):
        return instance
    return instance.client if isinstance(instance, aiokafka.AIOKafkaProducer) else instance._client


def assert_secured(instance: Any, security: KafkaSecurity) -> None:
    client = client_of(instance)
    assert client._security_protocol == security.protocol
    assert isinstance(client._ssl_context, ssl.SSLContext)
    assert client._ssl_context.get_ca_certs()
    assert client._sasl_mechanism == security.sasl_mechanism
    assert client._sasl_plain_username == security.sasl_username
    assert client._sasl_plain_password == security.sasl_password


@pytest.fixture
def quiet_unclosed() -> Iterator[None]:
    """The recorded clients are never started, so never closed: aiokafka warns of that when
    they are collected, which happens here rather than in whatever test runs next."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield
        gc.collect()


def _settings(security: KafkaSecurity, tmp_path: Path) -> Settings:
    return Settings(broker="kafka://127.0.0.1:9", kafka=security, data_dir=tmp_path / "data")


ClientCall = Callable[[KafkaSecurity, Path], Any]

CALLS: dict[str, tuple[str, str, ClientCall]] = {
    "topic creation": (
        "stream.kafka",
        "AIOKafkaAdminClient",
        lambda s, _: kafka.ensure_topic("kafka://127.0.0.1:9", "pings", 8, security=s),
    ),
    "the worker's start-up check": (
        "stream.kafka",
        "AIOKafkaAdminClient",
        lambda s, tmp: prepare_broker(_settings(s, tmp)),
    ),
    "the broker-back probe": (
        "stream.kafka",
        "AIOKafkaClient",
        lambda s, _: kafka.broker_answers("kafka://127.0.0.1:9", security=s),
    ),
    "the embedded broker's end-offset work-around": (
        "stream.broker.tansu",
        "AIOKafkaConsumer",
        lambda s, _: tansu.true_end_offsets("127.0.0.1:9", {aiokafka.TopicPartition("t", 0): 3}, s),
    ),
    "the ledger": (
        "stream.evaluation.ledger",
        "AIOKafkaConsumer",
        lambda s, _: ledger.read_dwell_events("kafka://127.0.0.1:9", security=s),
    ),
    "replay": (
        "stream.tools.replay",
        "AIOKafkaProducer",
        lambda s, _: replay.publish("kafka://127.0.0.1:9", "pings", [], security=s),
    ),
}


@pytest.mark.usefixtures("quiet_unclosed")
@pytest.mark.parametrize("name", sorted(CALLS))
def test_the_settings_reach_the_client(
    name: str, pki: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, class_name, call = CALLS[name]
    security = KafkaSecurity.from_env(sasl_ssl_env(pki))
    built: list[Any] = []
    target = __import__(module, fromlist=[class_name])
    monkeypatch.setattr(target, class_name, recording(getattr(target, class_name), built))

    async def build() -> None:
        with pytest.raises(Built):
            await call(security, tmp_path)

    asyncio.run(build())
    assert len(built) == 1
    assert_secured(built[0], security)


@pytest.mark.usefixtures("quiet_unclosed")
def test_the_settings_reach_the_feed_the_webhook_outbox_and_the_positions_feed(
    pki: dict[str, Path],
) -> None:
    security = KafkaSecurity.from_env(sasl_ssl_env(pki))

    async def build() -> list[Any]:
        dispatcher = WebhookDispatcher(
            ["127.0.0.1:9"], "coverage-alerts", "g", [], {}, "UTC", security=security
        )
        return [
            feed_consumer(["127.0.0.1:9"], security),
            dispatcher.new_consumer(),
            positions_consumer(["127.0.0.1:9"], security),
        ]

    for consumer in asyncio.run(build()):
        assert_secured(consumer, security)


@pytest.mark.usefixtures("quiet_unclosed")
@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_the_settings_reach_the_faust_apps_clients(
    protocol: str, pki: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = sasl_ssl_env(pki)
    env["HOTSPOT_KAFKA_SECURITY_PROTOCOL"] = protocol
    if protocol == "SSL":
        env = {k: v for k, v in env.items() if "SASL" not in k or "PROTOCOL" in k}
    if protocol == "SASL_PLAINTEXT":
        env = {k: v for k, v in env.items() if "SSL_" not in k}
    security = KafkaSecurity.from_env(env)

    async def build() -> tuple[dict[str, Any], Any]:
        collection = load_hotspots(demo_hotspots_path())
        app = Processor(_settings(security, tmp_path), collection, 8).app
        # the consumers' settings, as Faust's transport makes them; and a real producer
        consumer_auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, None)
        return consumer_auth, app.producer._new_producer()

    consumer_auth, producer = asyncio.run(build())
    expected = security.client_kwargs()
    assert consumer_auth["security_protocol"] == protocol
    for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        assert consumer_auth.get(key) == expected.get(key)
    assert (consumer_auth.get("ssl_context") is None) == (protocol == "SASL_PLAINTEXT")
    client = producer.client
    assert client._security_protocol == protocol
    assert (client._ssl_context is None) == (protocol == "SASL_PLAINTEXT")
    if protocol != "SASL_PLAINTEXT":
        assert client._ssl_context.get_ca_certs()
    assert client._sasl_plain_password == expected.get("sasl_plain_password")
    assert caplog.records and SECRET not in caplog.text  # not even at DEBUG


KAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaClient", "AIOKafkaAdminClient"}


def test_every_kafka_client_the_project_makes_takes_the_security_settings() -> None:
    """Every construction of an aiokafka client in ``stream/`` passes
    ``**<security>.client_kwargs()``: none is left on plain text by accident (``demo`` and
    ``bench`` pass the plain-text settings of their own embedded broker)."""
    found = 0
    for path in sorted((ROOT / "stream").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in KAFKA_CLIENTS:
                continue
            found += 1
            spread = [k.value for k in node.keywords if k.arg is None]
            assert any(
                isinstance(v, ast.Call)
                and isinstance(v.func, ast.Attribute)
                and v.func.attr == "client_kwargs"
                for v in spread
            ), f"{path.relative_to(ROOT)}:{node.lineno}: {name} without **security.client_kwargs()"
    assert found >= 12


def test_kafka_security_reads_every_option() -> None:
    assert kafka_security({}, {}) == PLAINTEXT
    assert all(o.flag and o.flag.startswith("--kafka-") for o in SECURITY_OPTIONS.values())
    assert all(o.env.startswith("HOTSPOT_KAFKA_") for o in SECURITY_OPTIONS.values())
