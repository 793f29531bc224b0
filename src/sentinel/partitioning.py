"""Choosing a partition for a record, as Kafka's clients do.

- Keyed records: ``to_positive(murmur2(key)) % num_partitions``, bit for bit Kafka's
  ``BuiltInPartitioner.partitionForKey`` (``Utils.murmur2``, seed ``0x9747b28c``), so a
  key lands on the same partition whichever client wrote it.
- Keyless records: ``StickyPartitioner`` (KIP-480, Kafka's default since 2.4) keeps
  one partition per topic until the producer starts a new batch for it, then moves to
  another at random; ``RoundRobinPartitioner`` cycles through the partitions.
- Consumer groups: a group's offsets (and its coordinator, in a cluster) live in
  partition ``abs(javaHashCode(group.id)) % partitions`` of ``__consumer_offsets``
  (``offsets_partition``, Kafka's ``GroupMetadataManager.partitionFor``), which both the
  broker and the client compute.

Partitioners hold per-topic state and are not thread-safe: one per producer, used
from its event loop. Randomness is injected (a seeded ``random.Random`` in tests).
"""

from __future__ import annotations

import random
import struct
from typing import Protocol

from sentinel.errors import InvalidArgumentError

__all__ = [
    "OFFSETS_TOPIC",
    "Partitioner",
    "RoundRobinPartitioner",
    "StickyPartitioner",
    "default_partition",
    "java_string_hashcode",
    "murmur2",
    "offsets_partition",
    "to_positive",
]

OFFSETS_TOPIC = "__consumer_offsets"
_INT_MIN = -(1 << 31)

_M32 = 0xFFFFFFFF
_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: 32-bit MurmurHash2, seed 0x9747b28c, signed result."""
    length = len(data)
    nwords = length >> 2
    words = _WORDS.get(nwords)
    if words is None:
        words = _WORDS[nwords] = struct.Struct(f"<{nwords}I")
    h = (_SEED ^ length) & _M32
    for k in words.unpack_from(data):
        k = (k * _M) & _M32
        k ^= k >> _R
        h = ((h * _M) & _M32) ^ ((k * _M) & _M32)
    tail = length & 3
    if tail:
        i = length & ~3
        if tail == 3:
            h ^= data[i + 2] << 16
        if tail >= 2:
            h ^= data[i + 1] << 8
        h = ((h ^ data[i]) * _M) & _M32
    h ^= h >> 13
    h = (h * _M) & _M32
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Kafka's ``Utils.toPositive``: drop the sign bit (not ``abs``)."""
    return n & 0x7FFFFFFF


def default_partition(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's clients choose for ``key``."""
    if num_partitions <= 0:
        raise InvalidArgumentError(f"num_partitions must be positive, got {num_partitions}")
    return to_positive(murmur2(key)) % num_partitions


class Partitioner(Protocol):
    """Chooses partitions for a producer.

    ``partition`` is called per record. ``on_new_batch`` is called when the producer
    closes the batch it was filling for ``topic`` (full, or its linger expired) and is
    about to start another: the sticky partitioner moves on then.
    """

    def partition(self, topic: str, key: bytes | None, num_partitions: int) -> int:
        """The partition for a record of ``topic`` with ``key``."""
        ...

    def on_new_batch(self, topic: str, previous_partition: int, num_partitions: int) -> None:
        """The batch for ``previous_partition`` of ``topic`` is done."""
        ...


def _check(num_partitions: int) -> None:
    if num_partitions <= 0:
        raise InvalidArgumentError(f"num_partitions must be positive, got {num_partitions}")


class RoundRobinPartitioner:
    """Keyless records go to partitions 0, 1, 2, ... in turn, per topic.

    Keyed records are hashed as Kafka's default partitioner does, unless
    ``hash_keys=False``: Kafka's own ``RoundRobinPartitioner`` ignores keys.
    """

    def __init__(self, *, hash_keys: bool = True) -> None:
        self._hash_keys = hash_keys
        self._next: dict[str, int] = {}

    def partition(self, topic: str, key: bytes | None, num_partitions: int) -> int:
        _check(num_partitions)
        if key is not None and self._hash_keys:
            return to_positive(murmur2(key)) % num_partitions
        n = self._next.get(topic, 0)
        self._next[topic] = n + 1
        return n % num_partitions

    def on_new_batch(self, topic: str, previous_partition: int, num_partitions: int) -> None:
        """Nothing to do: every record moves on."""


class StickyPartitioner:
    """Kafka's sticky partitioner (KIP-480) for keyless records; murmur2 for keyed ones.

    A topic's keyless records all go to one partition, chosen at random, until
    ``on_new_batch`` reports that the batch for that partition is done; then another
    partition, different from the previous one, is chosen at random. Fewer, fuller
    batches than round-robin, same spread over time.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._sticky: dict[str, int] = {}

    def partition(self, topic: str, key: bytes | None, num_partitions: int) -> int:
        _check(num_partitions)
        if key is not None:
            return to_positive(murmur2(key)) % num_partitions
        current = self._sticky.get(topic)
        if current is None or current >= num_partitions:
            current = self._sticky[topic] = self._rng.randrange(num_partitions)
        return current

    def on_new_batch(self, topic: str, previous_partition: int, num_partitions: int) -> None:
        """Move ``topic`` off ``previous_partition`` if it is still the sticky one.

        As in Kafka, a report about a partition that is no longer sticky (another
        batch already moved it) changes nothing.
        """
        _check(num_partitions)
        current = self._sticky.get(topic)
        if current is not None and current != previous_partition:
            return
        if num_partitions == 1:
            self._sticky[topic] = 0
            return
        choice = self._rng.randrange(num_partitions - 1)
        self._sticky[topic] = choice if choice < previous_partition else choice + 1


def java_string_hashcode(text: str) -> int:
    """Java's ``String.hashCode``: ``s[0]*31^(n-1) + ... + s[n-1]`` over the UTF-16
    code units, in signed 32-bit arithmetic."""
    data = text.encode("utf-16-be", "surrogatepass")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def offsets_partition(group_id: str, partitions: int) -> int:
    """The ``__consumer_offsets`` partition of ``group_id`` (Kafka's ``Utils.abs``:
    MIN_VALUE is 0)."""
    h = java_string_hashcode(group_id)
    return (0 if h == _INT_MIN else abs(h)) % partitions
