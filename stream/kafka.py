"""How the project's clients reach Kafka: the broker URL, its security, the key partitioner,
admin calls.

Every Kafka client the project makes (the worker, the control room's feed, the webhook outbox,
``replay``, ``demo``, ``bench``) takes its bootstrap servers from :func:`bootstrap_servers` and
its TLS and SASL settings from :meth:`KafkaSecurity.client_kwargs`, and every keyed record whose
partition the project computes itself goes where :func:`key_partition` says, which is where
Kafka's default partitioner puts it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from aiokafka.protocol.metadata import MetadataRequest

from stream.options import Option, SettingError, given_name, read

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client of the project authenticates the broker and itself: TLS (with a
    CA bundle, and a client certificate for mutual TLS) and SASL (PLAIN or SCRAM).

    Made by :func:`kafka_security` (or :meth:`from_env`), which reads and checks the settings
    once; a value made directly is checked the same way. The password is never shown: not in
    ``repr``, not in a log line, not in an error message."""

    protocol: str = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check(self)

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """The settings from the ``HOTSPOT_KAFKA_*`` variables (for the commands that are not
        the worker); raises :class:`SettingError` naming the first bad one."""
        return kafka_security({}, os.environ if environ is None else environ)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context (verifying the broker, against the CA bundle when given, else
        the system's), or None without TLS."""
        if not self.uses_tls:
            return None
        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )
        context.check_hostname = self.ssl_check_hostname
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client the project makes is given (producer,
        consumer, client, admin client): the one place the security settings reach them."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs

    def describe(self) -> str:
        """The protocol and, with SASL, the mechanism and user: for an operator's log line."""
        if self.uses_sasl:
            return f"{self.protocol} ({self.sasl_mechanism} as {self.sasl_username})"
        return self.protocol

    def scrub(self, text: str) -> str:
        """``text`` with the password, should it appear (a broker's message), masked."""
        if self.sasl_password:
            return text.replace(self.sasl_password, "***")
        return text


# -- the settings ---------------------------------------------------------------------------


def _protocol(text: str) -> str:
    value = text.strip().upper()
    if value not in SECURITY_PROTOCOLS:
        raise ValueError(f"must be one of {', '.join(SECURITY_PROTOCOLS)}, not {text!r}")
    return value


def _mechanism(text: str) -> str | None:
    value = text.strip().upper()
    if not value:
        return None
    if value not in SASL_MECHANISMS:
        raise ValueError(f"must be one of {', '.join(SASL_MECHANISMS)}, not {text!r}")
    return value


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"must be true or false, not {text!r}")
    return value == "true"


def _readable_file(text: str) -> Path | None:
    """A file that can be read now (empty: unset)."""
    if not text:
        return None
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"{'not a file' if path.exists() else 'no such file'}: {text}")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {text}: {exc.strerror or exc}") from None
    return path


def _secret(text: str) -> str | None:
    """A password as given (empty: unset). Its parse never fails, so no error shows it."""
    return text or None


def _password_file(text: str) -> str | None:
    """The password in a file (a mounted secret): its text less one trailing newline."""
    path = _readable_file(text)
    if path is None:
        return None
    try:
        secret = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"cannot read {text}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}"
        ) from None
    secret = secret[:-1] if secret.endswith("\n") else secret
    secret = secret[:-1] if secret.endswith("\r") else secret
    if not secret:
        raise ValueError(f"{text} is empty")
    return secret


def _optional_text(text: str) -> str | None:
    return text or None


#: the Kafka security settings, by :class:`KafkaSecurity` field; ``sasl_password_file`` is read
#: into ``sasl_password``. Each is a flag of ``hotspot worker`` and of every command that reaches
#: a configured broker (:func:`add_security_options`).
SECURITY_OPTIONS: dict[str, Option] = {
    "protocol": Option(
        "HOTSPOT_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        _protocol,
        "--kafka-security-protocol",
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    ),
    "ssl_cafile": Option(
        "HOTSPOT_KAFKA_SSL_CAFILE",
        None,
        _readable_file,
        "--kafka-ssl-cafile",
        "CA bundle (PEM) the broker's certificate is checked against (default: the system's)",
    ),
    "ssl_certfile": Option(
        "HOTSPOT_KAFKA_SSL_CERTFILE",
        None,
        _readable_file,
        "--kafka-ssl-certfile",
        "client certificate (PEM), for mutual TLS",
    ),
    "ssl_keyfile": Option(
        "HOTSPOT_KAFKA_SSL_KEYFILE",
        None,
        _readable_file,
        "--kafka-ssl-keyfile",
        "client certificate's private key (PEM), for mutual TLS",
    ),
    "ssl_check_hostname": Option(
        "HOTSPOT_KAFKA_SSL_CHECK_HOSTNAME",
        "true",
        _boolean,
        "--kafka-ssl-check-hostname",
        "true or false: whether the broker's certificate must name the host connected to",
    ),
    "sasl_mechanism": Option(
        "HOTSPOT_KAFKA_SASL_MECHANISM",
        None,
        _mechanism,
        "--kafka-sasl-mechanism",
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
    ),
    "sasl_username": Option(
        "HOTSPOT_KAFKA_SASL_USERNAME", None, _optional_text, "--kafka-sasl-username", "SASL user"
    ),
    "sasl_password": Option(
        "HOTSPOT_KAFKA_SASL_PASSWORD",
        None,
        _secret,
        "--kafka-sasl-password",
        "SASL password (a flag shows in the process list: prefer the _FILE variable)",
    ),
    "sasl_password_file": Option(
        "HOTSPOT_KAFKA_SASL_PASSWORD_FILE",
        None,
        _password_file,
        "--kafka-sasl-password-file",
        "file holding the SASL password (one trailing newline is dropped)",
    ),
}

_ENV = {key: option.env for key, option in SECURITY_OPTIONS.items()}


def _check(security: KafkaSecurity) -> None:
    """The settings together: what one needs, what makes no sense without another."""
    env = _ENV
    if security.protocol not in SECURITY_PROTOCOLS:
        raise SettingError(env["protocol"], _protocol_reason(security.protocol))
    tls_files = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    if not security.uses_tls:
        for key in tls_files:
            if getattr(security, key) is not None:
                raise SettingError(
                    env[key], f"set, but {env['protocol']} is {security.protocol} (no TLS)"
                )
    if (security.ssl_certfile is None) != (security.ssl_keyfile is None):
        missing, other = (
            ("ssl_keyfile", "ssl_certfile")
            if security.ssl_keyfile is None
            else ("ssl_certfile", "ssl_keyfile")
        )
        raise SettingError(env[missing], f"required with {env[other]} (mutual TLS needs both)")
    sasl = ("sasl_mechanism", "sasl_username", "sasl_password")
    if security.uses_sasl:
        for key in sasl:
            if not getattr(security, key):
                name = (
                    env[key]
                    if key != "sasl_password"
                    else f"{env[key]} or {env['sasl_password_file']}"
                )
                raise SettingError(name, f"required with {env['protocol']}={security.protocol}")
        if security.sasl_mechanism not in SASL_MECHANISMS:
            raise SettingError(
                env["sasl_mechanism"], f"must be one of {', '.join(SASL_MECHANISMS)}"
            )
    else:
        for key in sasl:
            if getattr(security, key) is not None:
                name = env[key] if key != "sasl_password" else f"{env[key]} (or _FILE)"
                raise SettingError(
                    name, f"set, but {env['protocol']} is {security.protocol} (no SASL)"
                )
    if security.uses_tls:
        _check_pem(security)


def _protocol_reason(value: str) -> str:
    return f"must be one of {', '.join(SECURITY_PROTOCOLS)}, not {value!r}"


def _check_pem(security: KafkaSecurity) -> None:
    """The CA bundle and the client certificate load (a file that is not PEM fails here,
    naming its variable, not at the first connection)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if security.ssl_cafile is not None:
        try:
            context.load_verify_locations(cafile=security.ssl_cafile)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise SettingError(
                _ENV["ssl_cafile"], f"not a PEM CA bundle: {_ssl_reason(exc)}"
            ) from None
    if security.ssl_certfile is not None:
        try:
            context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise SettingError(
                f"{_ENV['ssl_certfile']}/{_ENV['ssl_keyfile']}",
                f"not a PEM certificate and its key: {_ssl_reason(exc)}",
            ) from None


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return str(exc) or type(exc).__name__


#: no TLS, no SASL (the embedded broker of ``demo``, ``bench`` and the tests)
PLAINTEXT = KafkaSecurity()


def kafka_security(given: Mapping[str, Any], environ: Mapping[str, str]) -> KafkaSecurity:
    """The security settings from flags (``given``: argparse's values, None where not given)
    and the environment, flags first; raises :class:`SettingError` naming the first bad one."""
    values = {key: read(option, given, environ) for key, option in SECURITY_OPTIONS.items()}
    from_file = values.pop("sasl_password_file")
    if from_file is not None:
        if values["sasl_password"] is not None:
            both = given_name(SECURITY_OPTIONS["sasl_password_file"], given)
            other = given_name(SECURITY_OPTIONS["sasl_password"], given)
            raise SettingError(both, f"set together with {other}; give one")
        values["sasl_password"] = from_file
    names = {f.name for f in fields(KafkaSecurity)}
    return KafkaSecurity(**{k: v for k, v in values.items() if k in names})


def add_security_options(parser: argparse.ArgumentParser) -> None:
    """The security flags on ``parser`` (of a command that reaches a configured broker); read
    them back with :func:`security_from_args`. Help shows variables and defaults, never a
    secret."""
    group = parser.add_argument_group("Kafka security (each also its HOTSPOT_KAFKA_* variable)")
    for option in SECURITY_OPTIONS.values():
        assert option.flag is not None  # every security option is a flag
        group.add_argument(option.flag, default=None, help=security_help(option))


def security_help(option: Option) -> str:
    """A flag's help: what it is, its variable, its default (the default of a secret is never
    shown: there is none)."""
    shown = f"${option.env}"
    if option.default is not None:
        shown += f", default {option.default}"
    return f"{option.help}; {shown}" if option.help else shown


def security_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> KafkaSecurity:
    """The security settings of a command's flags (:func:`add_security_options`) over the
    environment; raises :class:`SettingError` naming the first bad one."""
    return kafka_security(vars(args), os.environ if environ is None else environ)


class BrokerUnreachable(RuntimeError):
    """The broker did not answer; the message is one line for the operator."""


class BrokerRefused(BrokerUnreachable):
    """The broker answered but the connection could not be secured or authenticated: its
    certificate is not trusted, TLS failed, or it refused the SASL credentials. Retrying
    does not help; the message is one line for the operator."""


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, positive) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def bootstrap_servers(url: str) -> list[str]:
    """``kafka://h1:p1;h2:p2`` → ``["h1:p1", "h2:p2"]``."""
    servers = url.split("://", 1)[-1]
    return [s.strip() for s in servers.replace(",", ";").split(";") if s.strip()]


async def connect_admin(
    url: str, timeout_s: float = 20.0, *, security: KafkaSecurity
) -> AIOKafkaAdminClient:
    """An admin client connected to ``url``, or ``BrokerUnreachable`` (``BrokerRefused`` when
    TLS or SASL failed) with a one-line reason."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(url),
        request_timeout_ms=int(timeout_s * 1000),
        **security.client_kwargs(),
    )
    await start_client(admin, admin.close, url, security, timeout_s)
    return admin


async def start_client(
    client: Any,
    close: Callable[[], Awaitable[None]],
    url: str,
    security: KafkaSecurity,
    timeout_s: float,
) -> None:
    """Start an aiokafka ``client`` within ``timeout_s``, or ``close`` it and raise
    ``BrokerUnreachable`` (``BrokerRefused`` when TLS or SASL failed) with a one-line reason."""
    try:
        await asyncio.wait_for(client.start(), timeout_s)
    except Exception as exc:  # aiokafka's SCRAM lets a KeyError out on refused credentials
        with contextlib.suppress(Exception):
            await close()
        refused = await why_refused(url, security, min(timeout_s, 4.0))
        if refused is not None:
            raise refused from None
        detail = security.scrub(str(exc) or type(exc).__name__)
        raise BrokerUnreachable(f"cannot reach the broker at {url}: {detail}") from None


async def why_refused(url: str, security: KafkaSecurity, timeout_s: float) -> BrokerRefused | None:
    """Why a client could not start, when the broker answers but refuses the connection: a
    direct connection to each bootstrap server says what aiokafka's bootstrap only logs.
    None when no server could be reached at all (or every one now works)."""
    context = security.ssl_context()
    over = f"cannot connect to {url} over {security.protocol}"
    for server in bootstrap_servers(url):
        host, _, port_text = server.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            continue
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        except (OSError, TimeoutError):
            continue  # not even TCP: unreachable, as the caller says
        await _close(writer)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None
                ),
                timeout_s,
            )
            # TLS 1.3 refuses a client certificate after the handshake: the server hangs up
            closed = context is not None and await _hangs_up(reader)
        except TimeoutError:
            return BrokerRefused(
                f"{over}: no answer to the TLS handshake; does {server} speak TLS?"
            )
        except ssl.SSLCertVerificationError as exc:
            return BrokerRefused(f"{over}: certificate verify failed ({exc.verify_message})")
        except ssl.SSLError as exc:
            return BrokerRefused(
                f"{over}: TLS handshake failed ({_ssl_reason(exc)}); does {server} speak TLS?"
            )
        except OSError:
            continue
        await _close(writer)
        if closed:
            wanted = (
                "did it refuse the client certificate?"
                if security.ssl_certfile
                else f"does it require a client certificate ({_ENV['ssl_certfile']})?"
            )
            return BrokerRefused(f"{over}: the broker hung up after the TLS handshake; {wanted}")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host, port, request_timeout_ms=int(timeout_s * 1000), **security.client_kwargs()
                ),
                timeout_s,
            )
        except Exception as exc:
            return _refusal(over, security, exc)
        try:
            await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
        except Exception as exc:
            return _refusal(over, security, exc)
        finally:
            conn.close()
    return None


async def _hangs_up(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes a fresh connection within a second, unasked."""
    try:
        return await asyncio.wait_for(reader.read(1), 1.0) == b""
    except TimeoutError:
        return False


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


def _refusal(over: str, security: KafkaSecurity, exc: BaseException) -> BrokerRefused:
    """The one line for a connection that was made but then failed (in TLS or SASL)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLError):
        return BrokerRefused(f"{over}: TLS failed ({_ssl_reason(cause)})")
    detail = security.scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if security.uses_sasl:
        who = f"{security.sasl_mechanism} as {security.sasl_username}"
        if isinstance(exc, KafkaConnectionError):
            return BrokerRefused(
                f"{over}: the broker closed the connection in SASL authentication ({who}); "
                "does it offer that mechanism, and know that user?"
            )
        if isinstance(exc, KeyError | ValueError):  # aiokafka's SCRAM on the server's error
            detail = "authentication failed"
        return BrokerRefused(
            f"{over}: the broker refused the SASL credentials "
            f"({security.sasl_mechanism} as {security.sasl_username}): {detail}"
        )
    if isinstance(exc, KafkaConnectionError):
        detail = "the broker closed the connection; does it expect TLS or SASL?"
    return BrokerRefused(f"{over}: {detail}")


async def topic_partitions(admin: AIOKafkaAdminClient, timeout_s: float = 20.0) -> dict[str, int]:
    existing = await asyncio.wait_for(admin.describe_topics(), timeout_s)
    return {t["topic"]: len(t["partitions"]) for t in existing if not t.get("error_code")}


async def ensure_topic(
    url: str,
    topic: str,
    partitions: int,
    replication_factor: int = 1,
    configs: dict[str, str] | None = None,
    *,
    security: KafkaSecurity,
) -> int:
    """Create ``topic`` (with ``configs``, e.g. ``cleanup.policy``) if it is missing; returns
    its partition count."""
    admin = await connect_admin(url, security=security)
    try:
        counts = await topic_partitions(admin)
        if topic in counts:
            return counts[topic]
        await admin.create_topics(
            [NewTopic(topic, partitions, replication_factor, topic_configs=configs)]
        )
        return partitions
    except (TimeoutError, KafkaError, OSError) as exc:
        raise BrokerUnreachable(f"broker at {url} failed: {exc or type(exc).__name__}") from None
    finally:
        await close_quietly(admin)


async def broker_answers(url: str, timeout_s: float = 2.0, *, security: KafkaSecurity) -> bool:
    """Whether the broker at ``url`` answers a metadata request within ``timeout_s``."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers(url),
        request_timeout_ms=int(timeout_s * 1000),
        **security.client_kwargs(),
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        return True
    except Exception:  # any failure is "not now": the probe runs again
        return False
    finally:
        await close_quietly(client)


async def close_quietly(admin: AIOKafkaAdminClient | AIOKafkaClient) -> None:
    with contextlib.suppress(Exception):
        await admin.close()
