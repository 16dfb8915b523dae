"""Every topic of the processor, in one place: names, partition counts and their creation.

Faust does not create source topics, and a topic auto-created by the broker gets the broker's
default partition count, which then clashes with the changelogs (``PartitionsMismatch``). So the
worker creates every topic it reads or writes before Faust starts, with the partition count of
an existing ``pings`` topic if there is one, else the configured count.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from stream.kafka import BrokerUnreachable, close_quietly, connect_admin, topic_partitions
from stream.worker.settings import Settings, TopicNames

#: the largest record batch the worker produces (one per partition and publish), and the most
#: its consumers fetch per partition: a fetch never has to exceed it, and what one fetch holds
#: in memory stays small
MAX_BATCH_BYTES = 512 * 1024

#: the positions topic keeps each unit's last fix (compacted), and nothing older than six hours
#: (a fix that old is long stale: deploy/README.md, Live locations)
POSITIONS_RETENTION_MS = 6 * 3600 * 1000
POSITIONS_CONFIGS = {
    "cleanup.policy": "compact,delete",
    "retention.ms": str(POSITIONS_RETENTION_MS),
}


@dataclass(frozen=True)
class TopicPlan:
    names: TopicNames
    app_id: str
    partitions: int

    @property
    def rekeyed(self) -> str:
        """Internal: pings that arrived without their ``unit_id`` as key, re-keyed."""
        return f"{self.app_id}-pings-rekeyed"

    @property
    def ping_topics(self) -> tuple[str, str]:
        """The topics the presence stage reads: the pings, and those it re-keyed itself."""
        return (self.names.pings, self.rekeyed)

    @property
    def visit_updates(self) -> str:
        """Internal: presence changes re-keyed by ``hotspot_id`` for the coverage stage."""
        return f"{self.app_id}-visit-updates"

    @property
    def positions(self) -> str:
        """Internal, compacted: each unit's last usable fix, keyed by ``unit_id``, read whole by
        every worker for dispatch suggestions. Holds live locations (deploy/README.md)."""
        return f"{self.app_id}-unit-positions"

    @property
    def short_windows(self) -> str:
        """Internal, compacted: per hot spot, keyed by ``hotspot_id``, until when its open
        window is still short (null: it is not), from the hot spot's owner; read whole by every
        worker, to tell a busy unit."""
        return f"{self.app_id}-short-windows"

    def topic_configs(self, topic: str) -> dict[str, str]:
        """The configs a topic is created with (the others take the broker's defaults)."""
        if topic == self.positions:
            return dict(POSITIONS_CONFIGS)
        if topic == self.short_windows:
            return {"cleanup.policy": "compact"}
        return {}

    def all_topics(self) -> list[str]:
        n = self.names
        return [
            n.pings,
            self.rekeyed,
            n.assignments,
            n.geofence_events,
            n.dwell_events,
            n.coverage_alerts,
            n.pings_dlq,
            n.assignments_dlq,
            self.visit_updates,
            n.dispatch_suggestions,
            self.positions,
            self.short_windows,
        ]


@dataclass(frozen=True)
class BrokerInfo:
    cluster_id: str | None
    partitions: int


async def prepare_broker(settings: Settings, timeout_s: float = 20.0) -> BrokerInfo:
    """Reach the broker, learn its cluster id, create missing topics.

    Returns the partition count the worker must use (that of an existing pings topic).
    Raises ``BrokerUnreachable`` with a one-line reason (``BrokerRefused`` when the broker
    answers but TLS or SASL fails: a worker that retried would retry for ever).
    """
    admin = await connect_admin(settings.broker, timeout_s, security=settings.kafka)
    try:
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        counts = await topic_partitions(admin, timeout_s)
        partitions = counts.get(settings.topics.pings) or settings.partitions
        plan = TopicPlan(settings.topics, settings.app_id, partitions)
        missing = [t for t in plan.all_topics() if t not in counts]
        if missing:
            await asyncio.wait_for(
                admin.create_topics(
                    [
                        NewTopic(
                            t,
                            partitions,
                            settings.replication_factor,
                            topic_configs=plan.topic_configs(t),
                        )
                        for t in missing
                    ]
                ),
                timeout_s,
            )
        mismatched = [
            f"{t} has {counts[t]}"
            for t in (plan.rekeyed, plan.visit_updates)
            if t in counts and counts[t] != partitions
        ]
        if mismatched:
            raise BrokerUnreachable(
                f"topic {settings.topics.pings} has {partitions} partitions but "
                + ", ".join(mismatched)
                + "; use a fresh --app-id"
            )
        return BrokerInfo(cluster.get("cluster_id"), partitions)
    except (TimeoutError, KafkaError, OSError) as exc:
        raise BrokerUnreachable(
            f"broker at {settings.broker} failed: {exc or type(exc).__name__}"
        ) from None
    finally:
        await close_quietly(admin)
