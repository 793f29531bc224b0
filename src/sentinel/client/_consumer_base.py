"""What ``Consumer`` and ``AsyncConsumer`` share: options, the fetcher and group
plumbing, pause and commit helpers (see ``consumer`` for the behaviour)."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import (
    Callable,
    Mapping,
    Sequence,
)
from typing import Any, ClassVar

from sentinel.client._consumer_core import ConsumerConfig, ConsumerCore
from sentinel.client._fetcher import Fetcher
from sentinel.client._group import RebalanceCallback
from sentinel.client._kafka_config import resolve
from sentinel.client.errors import (
    ClientStateError,
)
from sentinel.client.types import ConsumerRecord, TopicPartition
from sentinel.errors import InvalidArgumentError

log = logging.getLogger("sentinel.client.consumer")

Deserializer = Callable[[bytes], Any]
RECHECK_S = 1.0  # a blocking wait for records looks at the group's state this often
CommitCallback = Callable[[Mapping[TopicPartition, int], BaseException | None], object]


def consumer_options(**options: Any) -> dict[str, Any]:
    return options


class ConsumerBase:
    """The options and the core that ``Consumer`` and ``AsyncConsumer`` share; each
    flavour sets ``_callbacks_on_thread`` and finishes its construction in ``_open``."""

    _callbacks_on_thread: ClassVar[bool]

    def __init__(
        self,
        bootstrap: str | Sequence[str] | Mapping[str, object] | None = None,
        *,
        bootstrap_servers: str | Sequence[str] | None = None,
        group_id: str | None = None,
        topics: Sequence[str] = (),
        key_deserializer: Deserializer | None = None,
        value_deserializer: Deserializer | None = None,
        consumer_timeout_ms: float | None = None,
        auto_offset_reset: str = "latest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3000,
        rebalance_timeout_ms: int | None = None,
        max_poll_records: int = 500,
        fetch_max_bytes: int = 1024 * 1024,
        fetch_max_wait_ms: int = 500,
        assignor: str = "roundrobin",
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        client_id: str = "sentinel-python",
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: float = 100,
        allow_auto_create_topics: bool = False,
        group_instance_id: str | None = None,
    ) -> None:
        given = consumer_options(
            group_id=group_id,
            key_deserializer=key_deserializer,
            value_deserializer=value_deserializer,
            auto_offset_reset=auto_offset_reset,
            enable_auto_commit=enable_auto_commit,
            auto_commit_interval_ms=auto_commit_interval_ms,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            max_poll_records=max_poll_records,
            fetch_max_bytes=fetch_max_bytes,
            fetch_max_wait_ms=fetch_max_wait_ms,
            assignor=assignor,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            allow_auto_create_topics=allow_auto_create_topics,
            group_instance_id=group_instance_id,
        )
        address, options = resolve("consumer", bootstrap, bootstrap_servers, given, _DEFAULTS)
        self._key_deserializer: Deserializer | None = options.pop("key_deserializer")
        self._value_deserializer: Deserializer | None = options.pop("value_deserializer")
        if consumer_timeout_ms is not None and consumer_timeout_ms < 0:
            raise InvalidArgumentError(
                f"consumer_timeout_ms must be >= 0 or None, got {consumer_timeout_ms}"
            )
        self._iter_timeout_s = None if consumer_timeout_ms is None else consumer_timeout_ms / 1000
        self.config = ConsumerConfig.build(address, options)
        self._core = ConsumerCore(self.config, callbacks_on_thread=self._callbacks_on_thread)
        self._core.callbacks.update(on_assign=on_assign, on_revoke=on_revoke)
        self._fetcher = self._core.fetcher
        self._closed = False
        self._open(list(topics))

    def _deserialize(self, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        """Apply the deserializers (None stays None) to ``records``."""
        kd, vd = self._key_deserializer, self._value_deserializer
        if kd is None and vd is None:
            return records
        return [
            r._replace(
                key=r.key if kd is None or r.key is None else kd(r.key),
                value=r.value if vd is None or r.value is None else vd(r.value),
            )
            for r in records
        ]

    def _open(self, topics: list[str]) -> None:
        raise NotImplementedError


_DEFAULTS: dict[str, Any] = ConsumerBase.__init__.__kwdefaults__ or {}


def set_paused(
    fetcher: Fetcher,
    tps: list[TopicPartition],
    paused: bool,
    call_soon: Callable[..., None] | None,
) -> None:
    with fetcher.lock:
        for tp in tps:
            part = fetcher.partitions.get(tp)
            if part is None:
                raise ClientStateError(f"{tp} is not assigned to this consumer")
            part.paused = paused
    if call_soon is not None:
        for tp in tps:
            call_soon(fetcher.wake, tp)


def commit_done(
    future: concurrent.futures.Future[dict[TopicPartition, int]],
    offsets: Mapping[TopicPartition, int],
    callback: CommitCallback,
) -> None:
    try:
        callback(offsets, future.exception())
    except Exception:
        log.exception("commit callback failed")


def direct_call(fn: Callable[..., object], *args: object) -> None:
    fn(*args)
