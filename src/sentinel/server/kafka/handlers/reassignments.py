"""AlterPartitionReassignments (45) v0 and ListPartitionReassignments (46) v0: moving a
partition's replicas to other brokers (KIP-455), as kafka-python's admin client does.

Both translate ``BrokerService``: ``reassign_partition`` per partition (recorded by the
controller and carried out by the partition's leader, one broker at a time) and
``list_partition_reassignments``. A move in progress reads as Kafka shows it: the
replicas are the current ones plus those being added, with the adding and removing ones
apart. Cancelling a move (``replicas`` null) is not supported: a partition under way
answers INVALID_REPLICA_ASSIGNMENT saying so, one not moving NO_REASSIGNMENT_IN_PROGRESS.
A broker alone refuses each partition (INVALID_REQUEST: moving needs a cluster).
"""

from __future__ import annotations

from sentinel.broker.service import BrokerService
from sentinel.errors import SentinelError
from sentinel.protocol.kafka.messages.alter_partition_reassignments import (
    AlterPartitionReassignmentsRequest,
    AlterPartitionReassignmentsResponse,
    ReassignablePartition,
    ReassignablePartitionResponse,
    ReassignableTopicResponse,
)
from sentinel.protocol.kafka.messages.list_partition_reassignments import (
    ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
    OngoingPartitionReassignment,
    OngoingTopicReassignment,
)
from sentinel.server.kafka.handlers import KafkaRequestContext, handles

ALTER_PARTITION_REASSIGNMENTS = 45
LIST_PARTITION_REASSIGNMENTS = 46
INVALID_REPLICA_ASSIGNMENT = 39
NO_REASSIGNMENT_IN_PROGRESS = 85


async def _alter_one(
    service: BrokerService, topic: str, partition: ReassignablePartition
) -> ReassignablePartitionResponse:
    index = partition.partition_index
    if partition.replicas is None:
        if (topic, index) in service.list_partition_reassignments():
            return ReassignablePartitionResponse(
                partition_index=index, error_code=INVALID_REPLICA_ASSIGNMENT,
                error_message="cancelling a replica move is not supported: it goes on",
            )
        return ReassignablePartitionResponse(
            partition_index=index, error_code=NO_REASSIGNMENT_IN_PROGRESS,
            error_message=f"no replica move of {topic}-{index} is under way",
        )
    try:
        await service.reassign_partition(topic, index, partition.replicas)
    except SentinelError as exc:
        return ReassignablePartitionResponse(
            partition_index=index, error_code=exc.kafka_code, error_message=str(exc)
        )
    return ReassignablePartitionResponse(partition_index=index, error_message=None)


@handles(ALTER_PARTITION_REASSIGNMENTS)
async def alter_partition_reassignments(
    service: BrokerService, ctx: KafkaRequestContext, request: AlterPartitionReassignmentsRequest
) -> AlterPartitionReassignmentsResponse:
    responses = []
    for topic in request.topics:
        partitions = [await _alter_one(service, topic.name, p) for p in topic.partitions]
        responses.append(ReassignableTopicResponse(name=topic.name, partitions=tuple(partitions)))
    return AlterPartitionReassignmentsResponse(error_message=None, responses=tuple(responses))


def _ongoing(index: int, now: tuple[int, ...], target: tuple[int, ...]
             ) -> OngoingPartitionReassignment:
    adding = tuple(b for b in target if b not in now)
    return OngoingPartitionReassignment(
        partition_index=index,
        replicas=now + adding,
        adding_replicas=adding,
        removing_replicas=tuple(b for b in now if b not in target),
    )


@handles(LIST_PARTITION_REASSIGNMENTS)
async def list_partition_reassignments(
    service: BrokerService, ctx: KafkaRequestContext, request: ListPartitionReassignmentsRequest
) -> ListPartitionReassignmentsResponse:
    moves = service.list_partition_reassignments()
    wanted: set[tuple[str, int]] | None = None
    if request.topics is not None:
        wanted = {(t.name, i) for t in request.topics for i in t.partition_indexes}
    by_topic: dict[str, list[OngoingPartitionReassignment]] = {}
    for (topic, index), (now, target) in sorted(moves.items()):
        if wanted is None or (topic, index) in wanted:
            by_topic.setdefault(topic, []).append(_ongoing(index, now, target))
    return ListPartitionReassignmentsResponse(
        error_message=None,
        topics=tuple(
            OngoingTopicReassignment(name=name, partitions=tuple(parts))
            for name, parts in by_topic.items()
        ),
    )
