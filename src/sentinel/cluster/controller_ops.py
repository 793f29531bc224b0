"""The operations this broker asks of the controller, and their arguments.

Each is one ``Controller.execute`` (run at the controller's leader, here or forwarded)
that returns once this broker has applied the resulting record. The two tasks every
broker runs for the cluster's own state are here too: registering this broker's
client addresses, and creating ``__consumer_offsets`` once (by the controller's
leader). Reports only a group's leader makes are in ``cluster/controller_reports``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from sentinel.broker.topics import TopicAlreadyExistsError
from sentinel.cluster.controller import Controller
from sentinel.cluster.metadata import MetadataImage
from sentinel.cluster.offsets_topic import OFFSETS_TOPIC, OFFSETS_TOPIC_CONFIGS
from sentinel.config import BrokerConfig
from sentinel.errors import SentinelError

log = logging.getLogger("sentinel.cluster.node")  # the name these lines always had

REGISTER_RETRY_S = 0.2
REGISTER_CHECK_S = 1.0  # how often the registration is checked once made


async def create_topic(
    controller: Controller,
    name: str,
    partitions: int,
    replication_factor: int,
    configs: Mapping[str, str] | None,
) -> None:
    await controller.execute("create_topic", {
        "name": name, "partitions": partitions,
        "replication_factor": replication_factor, "configs": dict(configs or {}),
    })


async def delete_topic(controller: Controller, name: str) -> None:
    await controller.execute("delete_topic", {"name": name})


async def create_partitions(controller: Controller, name: str, total: int) -> None:
    await controller.execute("create_partitions", {"name": name, "total": total})


async def reassign_partition(
    controller: Controller, topic: str, partition: int, replicas: Sequence[int]
) -> None:
    await controller.execute("reassign_partition", {
        "name": topic, "partition": partition, "replicas": list(replicas),
    })


async def alter_configs(
    controller: Controller, name: str, set_: Mapping[str, str], delete: Sequence[str]
) -> None:
    await controller.execute(
        "alter_configs", {"name": name, "set": dict(set_), "delete": list(delete)}
    )


def reassignments(
    image: MetadataImage,
) -> dict[tuple[str, int], tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every move under way: (topic, partition) -> (replicas now, target)."""
    moves = {}
    for group, target in image.reassignments.items():
        where, assignment = image.partition_of_group(group), image.assignment_of(group)
        if where is not None and assignment is not None:
            moves[where] = (assignment.replicas, target)
    return moves


async def register_forever(
    controller: Controller, node_id: int, current: Callable[[], BrokerConfig]
) -> None:
    """Make this broker's client addresses known through the controller (again
    whenever the image lacks or differs from them). ``current()``: the service's
    config, read as the task first runs (the server replaces it once it bound its
    ports)."""
    config = current()
    while True:
        mine = controller.image.brokers.get(node_id)
        want = (config.advertised, config.port, config.kafka_port)
        if mine is None or (mine.host, mine.grpc_port, mine.kafka_port) != want:
            try:
                await controller.execute("register_broker", {
                    "node_id": node_id, "host": want[0],
                    "grpc_port": want[1], "kafka_port": want[2],
                })
            except SentinelError as exc:
                log.debug("registering broker %d: %s", node_id, exc)
                await asyncio.sleep(REGISTER_RETRY_S)
                continue
        await asyncio.sleep(REGISTER_CHECK_S)


async def offsets_topic_forever(
    controller: Controller, node_id: int, partitions: int, brokers: int
) -> None:
    """The controller's leader creates ``__consumer_offsets`` once (Kafka's
    offsets.topic.num.partitions and replication factor min(3, brokers)); every
    broker's task ends once the image holds it."""
    while OFFSETS_TOPIC not in controller.image.topics:
        if controller.leader == node_id:
            try:
                await controller.execute("create_topic", {
                    "name": OFFSETS_TOPIC,
                    "partitions": partitions,
                    "replication_factor": min(3, brokers),
                    "configs": dict(OFFSETS_TOPIC_CONFIGS),
                })
            except TopicAlreadyExistsError:
                pass
            except SentinelError as exc:
                log.warning("creating %s: %s", OFFSETS_TOPIC, exc)
        await asyncio.sleep(REGISTER_RETRY_S)
