"""How the project's clients reach Kafka: the broker URL, the key partitioner, admin calls.

Every Kafka client the project makes (the worker, the control room's feed, the webhook outbox,
``replay``, ``demo``, ``bench``) takes its bootstrap servers from :func:`bootstrap_servers`, and
every keyed record whose partition the project computes itself goes where
:func:`key_partition` says, which is where Kafka's default partitioner puts it.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2


class BrokerUnreachable(RuntimeError):
    """The broker did not answer; the message is one line for the operator."""


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, positive) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def bootstrap_servers(url: str) -> list[str]:
    """``kafka://h1:p1;h2:p2`` → ``["h1:p1", "h2:p2"]``."""
    servers = url.split("://", 1)[-1]
    return [s.strip() for s in servers.replace(",", ";").split(";") if s.strip()]


async def connect_admin(url: str, timeout_s: float = 20.0) -> AIOKafkaAdminClient:
    """An admin client connected to ``url``, or ``BrokerUnreachable`` with a one-line reason."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(url), request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        await close_quietly(admin)
        detail = str(exc) or type(exc).__name__
        raise BrokerUnreachable(f"cannot reach the broker at {url}: {detail}") from None
    return admin


async def topic_partitions(admin: AIOKafkaAdminClient, timeout_s: float = 20.0) -> dict[str, int]:
    existing = await asyncio.wait_for(admin.describe_topics(), timeout_s)
    return {t["topic"]: len(t["partitions"]) for t in existing if not t.get("error_code")}


async def ensure_topic(
    url: str,
    topic: str,
    partitions: int,
    replication_factor: int = 1,
    configs: dict[str, str] | None = None,
) -> int:
    """Create ``topic`` (with ``configs``, e.g. ``cleanup.policy``) if it is missing; returns
    its partition count."""
    admin = await connect_admin(url)
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


async def broker_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether the broker at ``url`` answers a metadata request within ``timeout_s``."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers(url), request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        return True
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await close_quietly(client)


async def close_quietly(admin: AIOKafkaAdminClient | AIOKafkaClient) -> None:
    with contextlib.suppress(Exception):
        await admin.close()
