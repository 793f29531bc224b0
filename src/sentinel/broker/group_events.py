"""What goes into and comes out of the group coordinator: values, error codes, events.

Inputs are method calls on ``GroupCoordinator``; everything it hands back is a frozen
value defined here.

- A call answers its caller at once with a *result*: ``JoinResult``, ``Outcome``,
  ``CommitResult``, an ``ErrorCode`` (heartbeat) or a description. A result whose
  ``error`` is not ``ErrorCode.NONE`` changed nothing.
- Joins and syncs may have to wait for other members, so their answers are *events*:
  ``JoinCompleted`` / ``JoinFailed`` and ``SyncCompleted`` / ``SyncFailed``, keyed by
  ``(group_id, member_id)``. Events come out of whichever call finished the wait
  (``join``, ``sync``, ``leave``, ``tick``, ...), including, often, the waiting call
  itself. A member has at most one join and one sync outstanding; a newer request from
  the same member replaces the older one, which the driver answers itself (Kafka's
  clients have given up on it by then).
- ``StateChanged`` and ``MemberRemoved`` answer nobody; they are there for logs, metrics
  and tests. ``GroupDeleted`` tells the driver to drop the group's stored offsets.

Error codes carry Kafka's numbers so the Kafka front door passes them through; the gRPC
door maps them to its status codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from sentinel.broker.group_state import GroupState, is_legal
from sentinel.errors import InvalidArgumentError

TopicPartition = tuple[str, int]
"""(topic, partition)."""


class ErrorCode(IntEnum):
    """Outcomes a group operation reports to the client, with Kafka's numbers."""

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_METADATA_TOO_LARGE = 12
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    UNSUPPORTED_VERSION = 35
    INVALID_REQUEST = 42
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    MEMBER_ID_REQUIRED = 79
    GROUP_MAX_SIZE_REACHED = 81
    FENCED_INSTANCE_ID = 82  # a static member's old member id, replaced (KIP-345)
    GROUP_SUBSCRIBED_TO_TOPIC = 86  # OffsetDelete of a topic the live members read
    UNSUPPORTED_ASSIGNOR = 112


class RemovalReason(Enum):
    """Why a member left the group."""

    LEFT = "left"  # LeaveGroup
    SESSION_TIMEOUT = "session timeout"  # no heartbeat within its session timeout
    REBALANCE_TIMEOUT = "rebalance timeout"  # did not rejoin before the join phase ended
    SYNC_TIMEOUT = "sync timeout"  # did not send SyncGroup before the rebalance timeout
    REPLACED = "replaced"  # a new member with its group.instance.id took its place


# --- values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinProtocol:
    """One assignment protocol a member supports; a member lists them by preference.

    ``name`` is the assignor (``"roundrobin"``, ``"range"``, or any name in Kafka mode).
    ``topics`` is the subscription, decoded: the coordinator needs it to assign on the
    server side and to notice partition changes; it is stored sorted and deduplicated.
    ``metadata`` is the opaque bytes a Kafka client sent (its encoded subscription),
    handed verbatim to the group leader; empty from the gRPC door. ``unread``: the
    consumer protocol's bytes were no subscription (``topics`` then empty): what the
    member reads is unknown, and it counts as subscribed to every topic (OffsetDelete).
    """

    name: str
    topics: tuple[str, ...] = ()
    metadata: bytes = b""
    unread: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "topics", tuple(sorted(set(self.topics))))

    @property
    def size(self) -> int:
        """Bytes this protocol costs to keep: name, topic names and metadata."""
        return len(self.name) + sum(len(t) for t in self.topics) + len(self.metadata)


@dataclass(frozen=True, slots=True)
class MemberAssignment:
    """The partitions one member owns in one generation.

    ``partitions`` maps topic to partitions; it is normalised to ascending tuples with
    empty topics dropped, so equal assignments compare equal. ``raw`` is the opaque bytes
    a Kafka leader sent for this member; the Kafka door returns them verbatim (they may
    carry user data the decoded view does not). Empty when the coordinator assigned.
    """

    partitions: Mapping[str, Sequence[int]] = field(default_factory=dict)
    raw: bytes = b""

    def __post_init__(self) -> None:
        normal = {
            topic: tuple(sorted(parts)) for topic, parts in sorted(self.partitions.items()) if parts
        }
        object.__setattr__(self, "partitions", normal)

    def __hash__(self) -> int:  # the dict field would make the generated hash fail
        return hash((tuple(self.partitions.items()), self.raw))

    def topic_partitions(self) -> list[TopicPartition]:
        return [(t, p) for t, parts in self.partitions.items() for p in parts]


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    """A committed position: the next offset to read, the client's note, the epoch."""

    offset: int
    metadata: str = ""
    leader_epoch: int = -1


@dataclass(frozen=True, slots=True)
class MemberSubscription:
    """One member as the Kafka group leader sees it in its JoinGroup response."""

    member_id: str
    topics: tuple[str, ...]
    metadata: bytes
    group_instance_id: str | None = None  # a static member's (KIP-345)


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinCompleted:
    """A member's join finished: it is in generation ``generation``.

    Kafka mode: the leader (``member_id == leader_id``) gets every member's subscription
    in ``members`` and must compute the assignment and send it with ``sync``; followers
    get ``members == ()`` and call ``sync`` to wait for theirs. Server-assigned mode: the
    group is already Stable and ``assignment`` is this member's share.
    """

    group_id: str
    member_id: str
    generation: int
    protocol_type: str
    protocol: str
    leader_id: str
    members: tuple[MemberSubscription, ...] = ()
    assignment: MemberAssignment | None = None

    def __post_init__(self) -> None:
        if self.generation < 1:
            raise InvalidArgumentError(f"a joined generation is >= 1, not {self.generation}")
        if self.members and self.member_id != self.leader_id:
            raise InvalidArgumentError("only the leader is sent the member list")

    @property
    def is_leader(self) -> bool:
        return self.member_id == self.leader_id


@dataclass(frozen=True, slots=True)
class _Failure:
    """A member's outstanding request will not complete; answer it with ``error``."""

    group_id: str
    member_id: str
    error: ErrorCode

    def __post_init__(self) -> None:
        if self.error is ErrorCode.NONE:
            raise InvalidArgumentError("a failure carries an error")


@dataclass(frozen=True, slots=True)
class JoinFailed(_Failure):
    """A member's outstanding join will not complete; answer it with ``error``."""


@dataclass(frozen=True, slots=True)
class SyncCompleted:
    """A member's sync finished: ``assignment`` is its share of ``generation``."""

    group_id: str
    member_id: str
    generation: int
    protocol_type: str
    protocol: str
    assignment: MemberAssignment


@dataclass(frozen=True, slots=True)
class SyncFailed(_Failure):
    """A member's outstanding sync will not complete; answer it with ``error``."""


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The group moved from ``old`` to ``new``; ``generation`` is the one it is now in."""

    group_id: str
    old: GroupState
    new: GroupState
    generation: int
    reason: str

    def __post_init__(self) -> None:
        if not is_legal(self.old, self.new):
            raise InvalidArgumentError(f"no transition {self.old.value} -> {self.new.value}")


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    group_id: str
    member_id: str
    reason: RemovalReason


@dataclass(frozen=True, slots=True)
class GroupDeleted:
    """The group is gone: delete its stored offsets."""

    group_id: str


Event = (
    JoinCompleted
    | JoinFailed
    | SyncCompleted
    | SyncFailed
    | StateChanged
    | MemberRemoved
    | GroupDeleted
)


# --- results --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinResult:
    """The immediate answer to ``join``.

    ``error == NONE``: the member (``member_id``, new or echoed) is in the group; its
    ``JoinCompleted`` is in ``events`` or will come later. ``MEMBER_ID_REQUIRED``:
    ``member_id`` is reserved for the client, which must join again with it. Any other
    error: nothing changed; ``member_id`` is the one asked for (``""`` for a new member).
    """

    error: ErrorCode
    member_id: str
    events: tuple[Event, ...] = ()
    #: Why the join was refused, for the client (INCONSISTENT_GROUP_PROTOCOL); may be "".
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The immediate answer to ``sync``, ``leave`` and ``delete_group``, plus events."""

    error: ErrorCode
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class OffsetsToPersist:
    """Offsets the driver must write durably, then hand back to ``offsets_persisted``."""

    group_id: str
    offsets: Mapping[TopicPartition, OffsetAndMetadata]


@dataclass(frozen=True, slots=True)
class CommitResult:
    """The answer to ``commit_offsets``.

    ``error`` is for the whole request; when it is not NONE nothing is to be persisted.
    ``partition_errors`` names partitions refused on their own (metadata too large).
    The rest are in ``to_persist``: acknowledge them only once they are durable.
    """

    error: ErrorCode
    partition_errors: Mapping[TopicPartition, ErrorCode] = field(default_factory=dict)
    to_persist: OffsetsToPersist | None = None

    def error_for(self, tp: TopicPartition) -> ErrorCode:
        """The code to answer for ``tp`` (Kafka's OffsetCommit answers per partition)."""
        if self.error is not ErrorCode.NONE:
            return self.error
        return self.partition_errors.get(tp, ErrorCode.NONE)


@dataclass(frozen=True, slots=True)
class OffsetDeleteResult:
    """The answer to ``delete_offsets`` (Kafka's OffsetDelete).

    ``error`` is for the whole request; when it is not NONE nothing is to be deleted.
    ``partition_errors`` names partitions refused on their own (GROUP_SUBSCRIBED_TO_TOPIC).
    ``to_delete`` holds the committed offsets to remove, as they are now: the driver
    removes them durably, then hands them back to ``offsets_deleted``. A partition
    neither refused nor in ``to_delete`` had no offset: nothing to do, no error.
    """

    error: ErrorCode
    partition_errors: Mapping[TopicPartition, ErrorCode] = field(default_factory=dict)
    to_delete: Mapping[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)

    def error_for(self, tp: TopicPartition) -> ErrorCode:
        """The code to answer for ``tp``."""
        if self.error is not ErrorCode.NONE:
            return self.error
        return self.partition_errors.get(tp, ErrorCode.NONE)


# --- descriptions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: GroupState


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    client_id: str
    client_host: str
    topics: tuple[str, ...]
    metadata: bytes
    assignment: MemberAssignment | None
    group_instance_id: str | None = None  # a static member's (KIP-345)


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """DescribeGroups for one group; an unknown group is Dead with GROUP_ID_NOT_FOUND."""

    group_id: str
    error: ErrorCode
    state: GroupState
    protocol_type: str
    protocol: str
    generation: int
    leader_id: str
    members: tuple[MemberDescription, ...] = ()
