"""The gRPC front door: translate proto messages to broker service calls and back.

Thin on purpose: validation, defaults, metadata and the follow loop live in the
service (``BrokerService``, the facade every door calls); this module maps messages to
its calls and its frozen results back, records metrics at the boundary, and turns
errors into statuses (``server.errors``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from sentinel.broker.group_events import OffsetAndMetadata, TopicPartition
from sentinel.broker.limits import PolicyViolationError
from sentinel.broker.outcomes import FetchOutcome, FetchPosition, TopicMetadata
from sentinel.broker.request_budget import Reservation
from sentinel.broker.service import Acks, BrokerService
from sentinel.broker.validation import BROKER_DEFAULT, InvalidRequiredAcksError
from sentinel.errors import InvalidArgumentError, SentinelError
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import BatchBuilder, decode_records, iter_batches, parse_header
from sentinel.server.errors import Refusal, refusal_for
from sentinel.server.grpc_admission import Admission
from sentinel.server.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_STREAM_BYTES = 1024 * 1024
MAX_STREAM_BYTES = 16 * 1024 * 1024
MAX_WAIT_MS = 30_000
"""The longest a Fetch or FetchMany long-polls, whatever it asks."""
_ACKS = {pb.ACKS_LEADER: Acks.LEADER, pb.ACKS_NONE: Acks.NONE, pb.ACKS_ALL: Acks.ALL}
MAX_ADMISSION_WAIT_S = 30.0
"""The longest a request waits for room in the in-flight budget (less if its deadline
is nearer)."""


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    exc: BaseException,
    refusal: Refusal | None = None,
) -> None:
    refusal = refusal or refusal_for(exc)
    if refusal is None:
        log.exception("internal error", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc!r}")
        return
    context.set_trailing_metadata(refusal.trailing())
    await context.abort(refusal.status, refusal.message)


class MalformedRequest:
    """What a request that does not parse as its protobuf message becomes."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return MalformedRequest(str(exc))

    return deserialize


def add_to_server(servicer: SentinelServicer, server: grpc.aio.Server) -> None:
    """Register every RPC of ``service Sentinel``; a request that does not parse reaches
    the servicer as ``MalformedRequest`` and is answered INVALID_ARGUMENT.

    Every RPC is registered as request-streaming (the same bytes on the wire as a unary
    request) so that the door reads the request itself, when its admission says
    (``grpc_admission``): a request gRPC has not been asked to read stays in the sender's
    flow-control window, not in the broker's memory."""
    service = pb.DESCRIPTOR.services_by_name["Sentinel"]
    handlers = {}
    for method in service.methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        parse = _tolerant(request_cls.FromString)
        target = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                servicer.admitted_stream(method.name, parse, target),
                response_serializer=response_cls.SerializeToString,
            )
        else:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(
                servicer.admitted(method.name, parse, target),
                response_serializer=response_cls.SerializeToString,
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def _capped(max_bytes: int, default: int = DEFAULT_STREAM_BYTES) -> int:
    """A fetch's byte limit as asked (0 or less: ``default``), at most MAX_STREAM_BYTES."""
    return min(max_bytes if max_bytes > 0 else default, MAX_STREAM_BYTES)


def _records_in(batches: bytes, from_offset: int) -> int:
    """Records at or after ``from_offset`` in the batches (from their headers)."""
    count = 0
    for view in iter_batches(batches, allow_partial_tail=True):
        header = parse_header(view)
        if header.is_control:  # a leader's marker in a replicated log: no user record
            continue
        first = max(header.base_offset, from_offset)
        if header.last_offset >= first:
            count += header.last_offset - first + 1
    return count


def _partition_error(exc: SentinelError) -> pb.PartitionError:
    """A partition's refusal in a FetchMany answer: what a Fetch of that partition alone
    would fail with (``refusal_for``); an error without a status of its own, INTERNAL."""
    refusal = refusal_for(exc)
    if refusal is None:
        log.error("FetchMany: a partition failed unexpectedly: %r", exc)
        refusal = Refusal(grpc.StatusCode.INTERNAL, exc.code_name, f"internal error: {exc!r}")
    return pb.PartitionError(
        code=exc.kafka_code,
        reason=refusal.reason,
        message=refusal.message,
        status=refusal.status.value[0],
        metadata=dict(refusal.metadata),
    )


def _decoded(batches: bytes, from_offset: int) -> list[pb.Record]:
    out: list[pb.Record] = []
    for view in iter_batches(batches, allow_partial_tail=True):
        if parse_header(view).is_control:
            continue
        for record in decode_records(view):
            if record.offset < from_offset:
                continue
            out.append(
                pb.Record(
                    key=record.key,
                    value=record.value,
                    headers=[pb.Header(key=k, value=v) for k, v in record.headers],
                    timestamp_ms=record.timestamp,
                    offset=record.offset,
                )
            )
    return out


class SentinelServicer(pb_grpc.SentinelServicer):
    def __init__(
        self,
        service: BrokerService,
        metrics: Metrics,
        admission: Admission | None = None,
    ) -> None:
        self._service = service
        self._metrics = metrics
        self._admission = admission or Admission(
            service.request_budget, service.config.max_request_bytes
        )

    # ---------------------------------------------------------- admission

    async def _admit(
        self,
        method: str,
        requests: AsyncIterable[bytes],
        context: grpc.aio.ServicerContext[Any, Any],
        parse: Callable[[bytes], Any],
    ) -> tuple[Reservation, Any] | None:
        """Read the request and hold what it weighs in the in-flight budget
        (``grpc_admission``). None when the request was refused (the call is aborted)."""
        remaining = context.time_remaining()
        # Refuse a little before the deadline, so that the caller hears why.
        wait = MAX_ADMISSION_WAIT_S if remaining is None else remaining * 0.9
        wait = min(wait, MAX_ADMISSION_WAIT_S)
        try:
            reservation, raw = await self._admission.admit(method, requests, wait)
        except Exception as exc:
            refusal = refusal_for(exc)
            self._metrics.requests.labels(method, refusal.reason if refusal else "INTERNAL").inc()
            await _abort(context, exc, refusal)
            return None
        if raw is None:
            return reservation, MalformedRequest("no request message")
        return reservation, parse(raw)

    def admitted(
        self,
        method: str,
        parse: Callable[[bytes], Any],
        target: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
    ) -> Callable[[AsyncIterable[bytes], grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        """A unary RPC behind the in-flight budget: held until it is answered."""

        async def handle(
            requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            admitted = await self._admit(method, requests, context, parse)
            if admitted is None:
                return None
            reservation, request = admitted
            try:
                return await target(request, context)
            finally:
                reservation.release()

        return handle

    def admitted_stream(
        self,
        method: str,
        parse: Callable[[bytes], Any],
        target: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]],
    ) -> Callable[[AsyncIterable[bytes], grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
        """A streaming RPC: its request is admitted like any; the stream holds nothing."""

        async def handle(
            requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            admitted = await self._admit(method, requests, context, parse)
            if admitted is None:
                return
            reservation, request = admitted
            reservation.release()
            async for response in target(request, context):
                yield response

        return handle

    async def _call(
        self,
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        work: Callable[[], Awaitable[T]],
    ) -> T:
        try:
            if isinstance(request, MalformedRequest):
                raise InvalidArgumentError(f"malformed {method} request: {request.detail}")
            result = await work()
        except Exception as exc:
            refusal = refusal_for(exc)
            self._metrics.requests.labels(method, refusal.reason if refusal else "INTERNAL").inc()
            await _abort(context, exc, refusal)
            raise  # abort() raises; this keeps the type checker honest
        self._metrics.requests.labels(method, "OK").inc()
        return result

    # ----------------------------------------------------------- produce

    async def Produce(
        self, request: pb.ProduceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ProduceResponse:
        async def work() -> pb.ProduceResponse:
            started = time.perf_counter()
            batches = request.record_batches
            key_hint = None
            if not batches and request.records:
                batches, key_hint = self._batch_from_records(request.records)
            acks = _ACKS.get(request.acks)
            if acks is None:
                raise InvalidRequiredAcksError(
                    f"acks {request.acks} is none of ACKS_LEADER, ACKS_NONE, ACKS_ALL"
                )
            outcome = await self._service.produce(
                request.topic, request.partition, batches, acks, key_hint
            )
            self._metrics.observe_produce(time.perf_counter() - started)
            if not outcome.duplicate:
                self._metrics.count_produced(outcome.topic, outcome.records, outcome.bytes)
            return pb.ProduceResponse(
                topic=outcome.topic,
                partition=outcome.partition,
                base_offset=outcome.base_offset,
                log_append_time_ms=outcome.log_append_time_ms,
                log_start_offset=outcome.log_start_offset,
                duplicate=outcome.duplicate,
            )

        return await self._call("Produce", request, context, work)

    @staticmethod
    def _batch_from_records(records: Any) -> tuple[bytes, bytes | None]:
        builder = BatchBuilder()
        now_ms = int(time.time() * 1000)
        for record in records:
            builder.append(
                record.key if record.HasField("key") else None,
                record.value if record.HasField("value") else None,
                [(h.key, h.value if h.HasField("value") else None) for h in record.headers],
                record.timestamp_ms or now_ms,
            )
        first = records[0]
        return builder.build(), (first.key if first.HasField("key") else None)

    # ----------------------------------------------------------- consume

    def _fetch_message(
        self, cls: Any, outcome: FetchOutcome, from_offset: int, decode: bool
    ) -> tuple[Any, int]:
        """The response message, and how many records at or after ``from_offset`` it holds
        (counted from batch headers)."""
        batches = outcome.batches  # joined once
        count = _records_in(batches, from_offset)
        if batches:  # a FetchMany answers mostly empty partitions: no counter work for them
            self._metrics.count_fetched(outcome.topic, count, len(batches))
        message = cls(
            topic=outcome.topic,
            partition=outcome.partition,
            record_batches=batches,
            records=_decoded(batches, from_offset) if decode else (),
            high_watermark=outcome.high_watermark,
            log_start_offset=outcome.log_start_offset,
            next_offset=outcome.next_offset,
        )
        return message, count

    async def Fetch(
        self, request: pb.FetchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FetchResponse:
        async def work() -> pb.FetchResponse:
            started = time.perf_counter()
            self._metrics.observe_fetch_start(
                context.peer(), request.topic, request.partition, request.offset
            )
            outcome = await self._service.fetch(
                request.topic,
                request.partition,
                request.offset,
                _capped(request.max_bytes),
                max(0, min(request.max_wait_ms, MAX_WAIT_MS)),
            )
            message: pb.FetchResponse
            message, _count = self._fetch_message(
                pb.FetchResponse, outcome, request.offset, request.decode_records
            )
            self._metrics.fetch_latency.observe(time.perf_counter() - started)
            return message

        return await self._call("Fetch", request, context, work)

    async def FetchMany(
        self, request: pb.FetchManyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FetchManyResponse:
        """Kafka's Fetch (``BrokerService.fetch_many``); a partition's error is in its
        result. At most ``--max-partitions`` positions (as many as the broker may create;
        a long-poll reads every position again each time one of their watermarks moves)."""

        async def work() -> pb.FetchManyResponse:
            started = time.perf_counter()
            limit = self._service.limits.max_partitions
            if len(request.positions) > limit:
                raise PolicyViolationError(
                    f"FetchMany names {len(request.positions)} partitions; at most {limit} "
                    "(--max-partitions)"
                )
            peer = context.peer()
            for p in request.positions:
                self._metrics.observe_fetch_start(peer, p.topic, p.partition, p.offset)
            outcomes = await self._service.fetch_many(
                [
                    FetchPosition(p.topic, p.partition, p.offset, _capped(p.max_bytes))
                    for p in request.positions
                ],
                max_wait_ms=max(0, min(request.max_wait_ms, MAX_WAIT_MS)),
                min_bytes=max(1, request.min_bytes),
                max_bytes=_capped(request.max_bytes, MAX_STREAM_BYTES),
            )
            partitions = []
            for pos, outcome in zip(request.positions, outcomes, strict=True):
                if outcome.error is not None:
                    error = _partition_error(outcome.error)
                    partitions.append(
                        pb.FetchedPartition(topic=pos.topic, partition=pos.partition, error=error)
                    )
                    continue
                message, _count = self._fetch_message(
                    pb.FetchedPartition, outcome, pos.offset, request.decode_records
                )
                partitions.append(message)
            self._metrics.fetch_latency.observe(time.perf_counter() - started)
            return pb.FetchManyResponse(partitions=partitions)

        return await self._call("FetchMany", request, context, work)

    async def Consume(
        self, request: pb.ConsumeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ConsumeResponse]:
        if isinstance(request, MalformedRequest):
            await _abort(context, InvalidArgumentError(f"malformed Consume: {request.detail}"))
            return
        offset = request.offset
        sent = 0
        max_bytes = min(request.max_bytes_per_message or DEFAULT_STREAM_BYTES, MAX_STREAM_BYTES)
        outcomes = self._service.consume(
            request.topic,
            request.partition,
            offset,
            max_bytes,
            max_wait_ms=request.max_wait_ms,
            follow=request.follow,
        )
        try:
            async for outcome in outcomes:
                message, count = self._fetch_message(
                    pb.ConsumeResponse, outcome, offset, request.decode_records
                )
                handed = count
                if request.max_messages:  # a stream hands over at most max_messages
                    handed = min(count, request.max_messages - sent)
                self._metrics.messages_consumed.labels(outcome.topic).inc(handed)
                sent += count
                offset = outcome.next_offset
                yield message
                if request.max_messages and sent >= request.max_messages:
                    return
        except Exception as exc:
            await _abort(context, exc)
            return
        finally:
            await outcomes.aclose()

    # ---------------------------------------------------------- metadata

    @staticmethod
    def _topic_info(topic: TopicMetadata) -> pb.TopicInfo:
        if topic.error is not None:
            raise topic.error
        partitions = [
            pb.PartitionInfo(
                partition=p.partition,
                leader=p.leader,
                replicas=list(p.replicas),
                isr=list(p.isr),
                log_start_offset=p.log_start_offset,
                log_end_offset=p.log_end_offset,
                high_watermark=p.high_watermark,
                size_bytes=p.size_bytes,
            )
            for p in topic.partitions
        ]
        return pb.TopicInfo(
            name=topic.name,
            partitions=partitions,
            configs=dict(topic.configs),
            replication_factor=topic.replication_factor,
        )

    async def FetchMetadata(
        self, request: pb.MetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MetadataResponse:
        async def work() -> pb.MetadataResponse:
            found = await self._service.metadata(
                list(request.topics), auto_create=request.allow_auto_topic_creation
            )
            return pb.MetadataResponse(
                brokers=[
                    pb.Broker(
                        node_id=b.node_id,
                        host=b.host,
                        port=b.port,
                        kafka_host=b.kafka_host,
                        kafka_port=b.kafka_port,
                    )
                    for b in found.brokers
                ],
                controller_id=found.controller_id,
                topics=[self._topic_info(t) for t in found.topics],
            )

        return await self._call("FetchMetadata", request, context, work)

    async def CreateTopic(
        self, request: pb.CreateTopicRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateTopicResponse:
        async def work() -> pb.CreateTopicResponse:
            topic = await self._service.create_topic(
                request.name,
                request.partitions,  # 0 is refused; -1: the broker's default
                request.replication_factor or BROKER_DEFAULT,
                dict(request.configs),
            )
            return pb.CreateTopicResponse(
                topic=self._topic_info(self._service.topic_metadata(topic))
            )

        return await self._call("CreateTopic", request, context, work)

    async def DeleteTopic(
        self, request: pb.DeleteTopicRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteTopicResponse:
        async def work() -> pb.DeleteTopicResponse:
            await self._service.delete_topic(request.name)
            return pb.DeleteTopicResponse()

        return await self._call("DeleteTopic", request, context, work)

    async def ListTopics(
        self, request: pb.ListTopicsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListTopicsResponse:
        async def work() -> pb.ListTopicsResponse:
            return pb.ListTopicsResponse(
                topics=[self._topic_info(t) for t in (await self._service.metadata()).topics]
            )

        return await self._call("ListTopics", request, context, work)

    async def DescribeTopic(
        self, request: pb.DescribeTopicRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DescribeTopicResponse:
        async def work() -> pb.DescribeTopicResponse:
            return pb.DescribeTopicResponse(
                topic=self._topic_info(
                    self._service.topic_metadata(await self._service.topic(request.name))
                )
            )

        return await self._call("DescribeTopic", request, context, work)

    async def CreatePartitions(
        self, request: pb.CreatePartitionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreatePartitionsResponse:
        async def work() -> pb.CreatePartitionsResponse:
            topic = await self._service.add_partitions(request.name, request.total)
            return pb.CreatePartitionsResponse(
                topic=self._topic_info(self._service.topic_metadata(topic))
            )

        return await self._call("CreatePartitions", request, context, work)

    async def ReassignPartition(
        self, request: pb.ReassignPartitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReassignPartitionResponse:
        async def work() -> pb.ReassignPartitionResponse:
            await self._service.reassign_partition(
                request.topic, request.partition, list(request.replicas)
            )
            return pb.ReassignPartitionResponse()

        return await self._call("ReassignPartition", request, context, work)

    async def ListPartitionReassignments(
        self,
        request: pb.ListPartitionReassignmentsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.ListPartitionReassignmentsResponse:
        async def work() -> pb.ListPartitionReassignmentsResponse:
            moves = self._service.list_partition_reassignments()
            return pb.ListPartitionReassignmentsResponse(reassignments=[
                pb.PartitionReassignment(
                    topic=topic, partition=index, replicas=list(now), target=list(target)
                )
                for (topic, index), (now, target) in sorted(moves.items())
            ])

        return await self._call("ListPartitionReassignments", request, context, work)

    async def ListOffsets(
        self, request: pb.ListOffsetsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListOffsetsResponse:
        async def work() -> pb.ListOffsetsResponse:
            offset, timestamp = self._service.list_offset(
                request.topic, request.partition, request.timestamp_ms
            )
            return pb.ListOffsetsResponse(offset=offset, timestamp_ms=timestamp)

        return await self._call("ListOffsets", request, context, work)

    # ------------------------------------------------------------ groups

    async def JoinGroup(
        self, request: pb.JoinGroupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.JoinGroupResponse:
        async def work() -> pb.JoinGroupResponse:
            joined = await self._service.join_group(
                request.group_id,
                request.member_id,
                client_id=request.client_id,
                topics=list(request.topics),
                assignor=request.assignor,
                session_timeout_ms=request.session_timeout_ms,
                rebalance_timeout_ms=request.rebalance_timeout_ms,
                auto_create_topics=request.allow_auto_topic_creation,
                group_instance_id=request.group_instance_id or None,
            )
            assignment = joined.assignment.partitions if joined.assignment else {}
            return pb.JoinGroupResponse(
                member_id=joined.member_id,
                generation=joined.generation,
                leader_id=joined.leader_id,
                assignment=[
                    pb.TopicPartitions(topic=t, partitions=list(p))
                    for t, p in sorted(assignment.items())
                ],
                members=[m.member_id for m in joined.members],
            )

        return await self._call("JoinGroup", request, context, work)

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HeartbeatResponse:
        async def work() -> pb.HeartbeatResponse:
            self._service.heartbeat(
                request.group_id,
                request.member_id,
                request.generation,
                request.group_instance_id or None,
            )
            return pb.HeartbeatResponse()

        return await self._call("Heartbeat", request, context, work)

    async def LeaveGroup(
        self, request: pb.LeaveGroupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.LeaveGroupResponse:
        async def work() -> pb.LeaveGroupResponse:
            self._service.leave_group(
                request.group_id, request.member_id, request.group_instance_id or None
            )
            return pb.LeaveGroupResponse()

        return await self._call("LeaveGroup", request, context, work)

    async def CommitOffsets(
        self, request: pb.CommitOffsetsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CommitOffsetsResponse:
        async def work() -> pb.CommitOffsetsResponse:
            offsets: dict[TopicPartition, OffsetAndMetadata] = {
                (o.topic, o.partition): OffsetAndMetadata(o.offset, o.metadata)
                for o in request.offsets
            }
            results = await self._service.commit_offsets(
                request.group_id,
                request.member_id,
                request.generation,
                offsets,
                request.group_instance_id or None,
            )
            for result in results:
                if result.error is None:
                    self._metrics.observe_commit(
                        context.peer(),
                        request.group_id,
                        result.topic,
                        result.partition,
                        offsets[(result.topic, result.partition)].offset,
                    )
            for result in results:  # one status per call: the first refused partition's
                if result.error is not None:
                    raise result.error
            return pb.CommitOffsetsResponse()

        return await self._call("CommitOffsets", request, context, work)

    async def FetchOffsets(
        self, request: pb.FetchOffsetsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FetchOffsetsResponse:
        async def work() -> pb.FetchOffsetsResponse:
            wanted: list[TopicPartition] | None = [
                (tp.topic, p) for tp in request.partitions for p in tp.partitions
            ] or None
            found = self._service.fetch_offsets(request.group_id, wanted)
            return pb.FetchOffsetsResponse(
                offsets=[
                    pb.PartitionOffset(topic=t, partition=p, offset=om.offset, metadata=om.metadata)
                    for (t, p), om in sorted(found.items())
                ]
            )

        return await self._call("FetchOffsets", request, context, work)

    async def ListGroups(
        self, request: pb.ListGroupsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListGroupsResponse:
        async def work() -> pb.ListGroupsResponse:
            return pb.ListGroupsResponse(
                groups=[
                    pb.GroupSummary(group_id=g.group_id, state=g.state, members=g.members)
                    for g in self._service.list_groups()
                ]
            )

        return await self._call("ListGroups", request, context, work)

    async def DescribeGroup(
        self, request: pb.DescribeGroupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DescribeGroupResponse:
        async def work() -> pb.DescribeGroupResponse:
            described, lags = self._service.describe_group(request.group_id)
            members = []
            for member in described.members:
                parts = member.assignment.partitions if member.assignment else {}
                members.append(
                    pb.MemberInfo(
                        member_id=member.member_id,
                        client_id=member.client_id,
                        group_instance_id=member.group_instance_id or "",
                        assignment=[
                            pb.TopicPartitions(topic=t, partitions=list(p))
                            for t, p in sorted(parts.items())
                        ],
                    )
                )
            return pb.DescribeGroupResponse(
                group_id=request.group_id,
                state=str(described.state.value),
                protocol=described.protocol,
                generation=described.generation,
                members=members,
                lag=[
                    pb.PartitionLag(
                        topic=lag.topic,
                        partition=lag.partition,
                        committed_offset=lag.committed,
                        log_end_offset=lag.log_end_offset,
                        lag=lag.lag,
                    )
                    for lag in lags
                ],
            )

        return await self._call("DescribeGroup", request, context, work)

    # ---------------------------------------------- administration (issue 10)

    async def DeleteGroup(
        self, request: pb.DeleteGroupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteGroupResponse:
        async def work() -> pb.DeleteGroupResponse:
            await self._service.delete_group(request.group_id)
            return pb.DeleteGroupResponse()

        return await self._call("DeleteGroup", request, context, work)

    async def AlterTopicConfigs(
        self, request: pb.AlterTopicConfigsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AlterTopicConfigsResponse:
        async def work() -> pb.AlterTopicConfigsResponse:
            topic = await self._service.alter_topic_configs(
                request.name, dict(request.set), list(request.delete)
            )
            metadata = self._service.topic_metadata(topic)
            return pb.AlterTopicConfigsResponse(topic=self._topic_info(metadata))

        return await self._call("AlterTopicConfigs", request, context, work)

    async def DeleteRecords(
        self, request: pb.DeleteRecordsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteRecordsResponse:
        async def work() -> pb.DeleteRecordsResponse:
            start = await self._service.delete_records(
                request.topic, request.partition, request.before_offset
            )
            return pb.DeleteRecordsResponse(log_start_offset=start)

        return await self._call("DeleteRecords", request, context, work)

    async def AlterGroupOffsets(
        self, request: pb.AlterGroupOffsetsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AlterGroupOffsetsResponse:
        async def work() -> pb.AlterGroupOffsetsResponse:
            offsets: dict[TopicPartition, OffsetAndMetadata] = {
                (o.topic, o.partition): OffsetAndMetadata(o.offset, o.metadata)
                for o in request.offsets
            }
            await self._service.alter_group_offsets(request.group_id, offsets)
            return pb.AlterGroupOffsetsResponse()

        return await self._call("AlterGroupOffsets", request, context, work)
