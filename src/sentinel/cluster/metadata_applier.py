"""What the controller's committed metadata does to this broker: its topics, the
replicas it hosts and its stored offsets.

``MetadataApplier.apply`` carries out one committed record (the controller's image has
applied it already); ``reconcile`` makes this broker what a whole image says, for a
snapshot loaded at start or installed (what every record this broker never applied
would have done). A replica is hosted while this broker is one of the partition's
replicas or of a move's target, and dropped only once the move is committed
(``_place``). ``created_from`` reads the controller's log for the topics created past a
snapshot, which a reconcile at start must keep; ``registered_in`` for the brokers'
addresses, which a restarted broker names before its image has replayed them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Set
from typing import TYPE_CHECKING

from sentinel.broker.group_events import OffsetAndMetadata
from sentinel.cluster.metadata import BrokerAddresses, MetadataImage, TopicImage
from sentinel.cluster.records import (
    AlterConfigs,
    CommitOffsets,
    CreatePartitions,
    CreateTopic,
    DeleteGroupOffsets,
    DeleteTopic,
    MetadataRecordError,
    PartitionAssignment,
    PartitionReplicas,
    ReassignPartition,
    Record,
    RegisterBroker,
    decode_record,
)
from sentinel.cluster.replica_hosting import HostedReplicas
from sentinel.raft.partition_log_adapter import PartitionRaftLog
from sentinel.record import decode_records, parse_header

if TYPE_CHECKING:
    from sentinel.broker.service import BrokerService


class MetadataApplier:
    """Applies the controller's records and images to broker ``node_id``'s storage
    (through ``service``) and replicas; ``image`` is the controller's image now."""

    def __init__(
        self,
        node_id: int,
        service: BrokerService,
        replicas: HostedReplicas,
        image: Callable[[], MetadataImage],
    ) -> None:
        self._node_id = node_id
        self._service = service
        self._replicas = replicas
        self._image = image

    def apply(self, offset: int, record: Record) -> None:
        """A committed metadata record, applied to this broker's storage and groups
        (the image has applied it already)."""
        service = self._service
        if isinstance(record, CreateTopic | CreatePartitions):
            found = self._image().topics.get(record.name)
            if found is not None:
                self._ensure_topic(found)
        elif isinstance(record, DeleteTopic):
            self._drop_topic(record.name)
        elif isinstance(record, AlterConfigs):
            self._set_configs(record.name, record.configs)
        elif isinstance(record, CommitOffsets):
            offsets = {
                (o.topic, o.partition): OffsetAndMetadata(o.offset, o.metadata)
                for o in record.offsets
            }
            # A log of a former release (offsets are in __consumer_offsets now):
            # kept in the meta store, never served.
            service.meta.commit_offsets(record.group_id, offsets)
        elif isinstance(record, DeleteGroupOffsets):
            service.meta.delete_group_offsets(record.group_id)
        elif isinstance(record, ReassignPartition | PartitionReplicas):
            where = self._image().partition_of_group(record.group)
            assignment = self._image().assignment_of(record.group)
            if where is not None and assignment is not None:
                self._place(where[0], where[1], assignment)

    def reconcile(self, image: MetadataImage, keep: Set[str] = frozenset()) -> None:
        """Make this broker's topics, Raft groups and stored offsets what ``image``
        says (a snapshot loaded at start or installed): what each record would have
        done, for records this broker never applied. A local topic absent from the
        image (unless named in ``keep``), or hosting a group the image gives another
        partition (deleted and re-created meanwhile), is deleted; missing ones are
        created."""
        service = self._service
        for topic in list(service.registry):
            want = image.topics.get(topic.name)
            if want is None:
                stale = topic.name not in keep
            else:
                stale = any(
                    part.topic == topic.name and part.index < len(want.partitions)
                    and want.partitions[part.index].group != group
                    for group, part in self._replicas.by_group.items()
                )
            if stale:
                self._drop_topic(topic.name)
        for found in image.topics.values():
            self._ensure_topic(found)
            self._set_configs(found.name, found.configs)
        meta = service.meta
        stored = meta.all_offsets()
        for group_id in stored.keys() - image.offsets.keys():
            meta.delete_group_offsets(group_id)
        for group_id, committed in image.offsets.items():
            offsets = {k: OffsetAndMetadata(v.offset, v.metadata) for k, v in committed.items()}
            if stored.get(group_id) != offsets:
                if group_id in stored:
                    meta.delete_group_offsets(group_id)
                meta.commit_offsets(group_id, offsets)

    def _ensure_topic(self, found: TopicImage) -> None:
        """The topic here with every partition of ``found``, hosted ones in their groups."""
        service = self._service
        hosted = [i for i, a in enumerate(found.partitions) if self._node_id in a.replicas]
        total = len(found.partitions)
        topic = service.registry.find(found.name)
        known = 0 if topic is None else len(topic.partitions)
        for index in hosted:
            if index >= known:  # created empty below: it must be new to this broker
                self._replicas.check_not_forgotten(
                    found.name, index, found.partitions[index].group
                )
        if topic is None:
            service.create_topic_here(
                found.name, total, found.replication_factor, found.configs, hosted
            )
        elif len(topic.partitions) < total:
            first_new = len(topic.partitions)
            service.add_partitions_here(found.name, total, [i for i in hosted if i >= first_new])
        for index, assignment in enumerate(found.partitions):
            self._place(found.name, index, assignment)

    def _drop_topic(self, name: str) -> None:
        if self._service.registry.find(name) is not None:
            for part in [p for p in self._replicas.by_group.values() if p.topic == name]:
                self._replicas.unhost(part)
            self._service.delete_topic_here(name)

    def _set_configs(self, name: str, configs: Mapping[str, str]) -> None:
        topic = self._service.registry.find(name)
        if topic is not None and dict(topic.configs) != dict(configs):
            gone = [k for k in topic.configs if k not in configs]
            self._service.registry.alter_configs(name, configs, gone)

    def _place(self, topic_name: str, index: int, assignment: PartitionAssignment) -> None:
        """Host or drop this broker's replica of a partition as the image says: hosted
        while this broker is one of its replicas or of a move's target; dropped (group
        stopped, data deleted) only once no move is under way and it is not a replica,
        i.e. after ``PartitionReplicas`` is committed: a voter never loses its log while
        the group may still count on it."""
        target = self._image().target_of(assignment.group)
        if self._node_id in assignment.replicas or (
            target is not None and self._node_id in target
        ):
            self._replicas.host(topic_name, index, assignment)
        elif target is None:
            part = self._replicas.by_group.get(assignment.group)
            if part is not None:
                self._replicas.unhost(part)
            if self._service.registry.find(topic_name) is not None:
                self._service.registry.unhost_partition(topic_name, index)


def _stored_records(raft_log: PartitionRaftLog, start: int) -> Iterator[Record]:
    """The metadata records of the controller's log as stored here, from ``start`` on
    (committed or not; a record this broker cannot decode is skipped)."""
    at = max(start, raft_log.log_start)
    while at < raft_log.log_end:
        chunk = raft_log.entries(at, 64)
        if not chunk:
            break
        for entry in chunk:
            if entry.data and not parse_header(entry.data).is_control:
                for record in decode_records(entry.data):
                    try:
                        yield decode_record(record.value or b"")
                    except MetadataRecordError:
                        continue
        at = chunk[-1].end


def created_from(raft_log: PartitionRaftLog, start: int) -> frozenset[str]:
    """The names of the topics the CreateTopic records at or past ``start`` in the
    controller's log (as stored here) create."""
    return frozenset(
        change.name for change in _stored_records(raft_log, start)
        if isinstance(change, CreateTopic)
    )


def registered_in(raft_log: PartitionRaftLog) -> dict[int, BrokerAddresses]:
    """Each broker's addresses as its last RegisterBroker record in the controller's
    log stored here gives them: what a restarted broker says of its peers until its
    image has replayed their registrations (``ClusterNode.cluster``)."""
    found: dict[int, BrokerAddresses] = {}
    for change in _stored_records(raft_log, raft_log.log_start):
        if isinstance(change, RegisterBroker):
            found[change.node_id] = BrokerAddresses(
                change.node_id, change.host, change.grpc_port, change.kafka_port
            )
    return found
