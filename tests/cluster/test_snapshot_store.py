"""Controller snapshot files (``cluster/snapshot_store``, ``ControllerSnapshots.load``)
on the in-memory filesystem: round trip, damage refused with the file named, a crash
at every step of a write keeps the older snapshot valid, the newest two kept, and
which snapshot a start uses when one is damaged."""

from __future__ import annotations

import pytest

from sentinel.cluster.controller_snapshots import ControllerSnapshots
from sentinel.cluster.metadata import MetadataImage
from sentinel.cluster.records import (
    CommitOffsets,
    CommittedOffset,
    CreateTopic,
    PartitionAssignment,
    RegisterBroker,
)
from sentinel.cluster.snapshot_store import (
    HEADER_BYTES,
    SnapshotStore,
    decode_file,
    encode_file,
    file_name,
)
from sentinel.errors import CorruptionError
from sentinel.fs import MemFS, SimulatedCrash

DIR = "/data/cluster-metadata-snapshot"


def image(offsets: int = 3) -> MetadataImage:
    img = MetadataImage()
    img.apply(0, RegisterBroker(1, "127.0.0.1", 9092, 9093))
    img.apply(1, CreateTopic("t", (PartitionAssignment(1, (1, 2)),), {"a": "b"}, 2))
    for n in range(offsets):
        img.apply(2 + n, CommitOffsets("g", (CommittedOffset("t", 0, n, "m"),)))
    return img


def test_a_file_round_trips_and_names_its_offset() -> None:
    body = image().encode_snapshot()
    data = encode_file(41, body)
    assert decode_file(data, "x") == (41, body)
    fs = MemFS()
    store = SnapshotStore(fs, DIR)
    store.write(41, body)
    assert fs.exists(f"{DIR}/{file_name(41)}")
    snap = store.read(41)
    assert (snap.offset, snap.body) == (41, body)
    assert MetadataImage.decode_snapshot(snap.body) == image()


def test_every_flipped_byte_is_refused_with_the_file_named() -> None:
    fs = MemFS()
    store = SnapshotStore(fs, DIR)
    store.write(7, image().encode_snapshot())
    path = store.path(7)
    good = fs.read_all(path)
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        f = fs.create(path)
        f.write(bytes(bad))
        f.close()
        with pytest.raises(CorruptionError) as caught:
            store.read(7)
        assert path in str(caught.value) and "\n" not in str(caught.value)
    for cut in (0, 5, HEADER_BYTES, len(good) - 1):  # torn files too
        f = fs.create(path)
        f.write(good[:cut])
        f.close()
        with pytest.raises(CorruptionError, match=path):
            store.read(7)


def test_a_crash_at_every_step_of_a_write_keeps_the_older_snapshot() -> None:
    old, new = image(1).encode_snapshot(), image(5).encode_snapshot()
    step = 0
    while True:
        fs = MemFS()
        store = SnapshotStore(fs, DIR)
        store.write(10, old)
        store.write(20, old)
        fs.fail_after(step)
        try:
            store.write(30, new)
            done = True
        except SimulatedCrash:
            done = False
        fs.crash()
        reopened = SnapshotStore(fs, DIR)  # removes an interrupted .tmp
        assert not [n for n in fs.listdir(DIR) if n.endswith(".tmp")]
        offsets = reopened.offsets()
        assert offsets[-1] in (20, 30), (step, offsets)
        for offset in offsets:  # whatever is there checks out
            body = reopened.read(offset).body
            assert body == (new if offset == 30 else old)
        if done:
            assert offsets == [20, 30]
            break
        step += 1
    assert step >= 5  # create, write, sync, rename, sync_dir... each was interrupted


def test_the_newest_two_are_kept() -> None:
    fs = MemFS()
    store = SnapshotStore(fs, DIR)
    for offset in (5, 9, 12, 40):
        store.write(offset, image().encode_snapshot())
    assert store.offsets() == [12, 40]


def keeper(fs: MemFS) -> ControllerSnapshots:
    return ControllerSnapshots(fs, DIR, 1, [1, 2, 3], every=10)


def damage(fs: MemFS, path: str) -> None:
    data = bytearray(fs.read_all(path))
    data[-1] ^= 0xFF
    f = fs.create(path)
    f.write(bytes(data))
    f.sync()
    f.close()


def test_load_takes_the_newest_valid_snapshot() -> None:
    fs = MemFS()
    k = keeper(fs)
    assert k.load(0) is None
    k.store.write(10, image(1).encode_snapshot())
    k.store.write(20, image(4).encode_snapshot())
    loaded = keeper(fs).load(10)
    assert loaded is not None and loaded[1] == 20 and loaded[0] == image(4)


def test_a_damaged_newest_snapshot_covered_by_the_older_and_the_log_is_passed_over() -> None:
    fs = MemFS()
    k = keeper(fs)
    k.store.write(10, image(1).encode_snapshot())
    k.store.write(20, image(4).encode_snapshot())
    damage(fs, k.store.path(20))
    loaded = keeper(fs).load(10)  # the log starts at the older one: it covers 10..20
    assert loaded is not None and loaded[1] == 10 and loaded[0] == image(1)


def test_a_damaged_snapshot_nothing_covers_refuses_the_start_naming_it() -> None:
    fs = MemFS()
    k = keeper(fs)
    k.store.write(10, image(1).encode_snapshot())
    k.store.write(20, image(4).encode_snapshot())
    damage(fs, k.store.path(20))
    with pytest.raises(CorruptionError) as caught:
        keeper(fs).load(15)  # the log starts past the older snapshot
    assert k.store.path(20) in str(caught.value)
    damage(fs, k.store.path(10))
    with pytest.raises(CorruptionError, match=k.store.path(20)):
        keeper(fs).load(0 + 1)
    assert keeper(fs).load(0) is None  # the whole log is there: replayed from 0


def test_a_snapshot_whose_image_does_not_decode_is_damaged_too() -> None:
    fs = MemFS()
    k = keeper(fs)
    k.store.write(10, b'{"v":1}')
    with pytest.raises(CorruptionError, match=k.store.path(10)):
        k.load(10)
