"""Snapshots of the controller's state: taken, loaded at start, served, installed.

Without them the metadata log (every offset commit is a record in it) grows forever
and every broker replays all of it at each start. With them (as KRaft's metadata
snapshots, KIP-630):

- Taking: after every ``every`` offsets applied since the newest snapshot (default
  ``SNAPSHOT_EVERY``), the image is encoded at once (it is exactly the applied prefix)
  and written durably in a worker thread (``snapshot_store``: the newest two kept).
  Then group 0's log start moves to the *previous* snapshot's offset (never past the
  commit or what is applied: ``MultiRaftDriver.request_start``). One interval of log is
  kept beyond the newest snapshot, so a newest snapshot found damaged at start is
  covered by the older one plus the log.
- Loading (``load``, at start): the newest snapshot that checks out, if the log covers
  what lies between it and the newest one (its offset at or past the log start). A
  damaged newest snapshot that nothing covers refuses the start with one line naming
  the file (``CorruptionError``; removing the file is the remedy: the broker then
  starts as one whose log starts past its snapshot, and installs another broker's).
  The broker then replays only the log past the snapshot it loaded.
- Serving (the transport call ``controller_snapshot``): the framed bytes of the newest
  snapshot here. The log start here only ever moves to a snapshot held here, so the
  newest covers it.
- Installing: a broker whose log was started over at the leader's log start (its
  image is stale, ``Controller.hold``) fetches a snapshot covering that offset from the
  leader (else from the other brokers, in turn, until one has it), writes it as its
  own newest snapshot, then ``Controller.install``s it; the held entries past it are
  applied only then. A crash before the write leaves a log starting past the newest
  snapshot: the next start holds and installs again.

Why 10,000: a commit record is ~100-200 bytes, so the log kept is a few MB and a
start replays at most 10,000 records (well under a second), while a snapshot (the
whole image: every topic and every group's offsets) is written at most once per
10,000 changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from sentinel.cluster.controller import CONTROLLER_GROUP, Controller
from sentinel.cluster.metadata import MetadataImage
from sentinel.cluster.records import MetadataRecordError
from sentinel.cluster.snapshot_store import SnapshotStore, decode_file
from sentinel.cluster.transport import PeerTransport
from sentinel.errors import CorruptionError, NotLeaderError, SentinelError
from sentinel.fs import FS
from sentinel.raft.multi_driver import MultiRaftDriver
from sentinel.stopping import cancel_and_wait

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 10_000
CALL_KIND = "controller_snapshot"
FETCH_TIMEOUT_S = 10.0
FETCH_RETRY_S = 0.2


class ControllerSnapshots:
    def __init__(
        self, fs: FS, directory: str, node_id: int, brokers: Sequence[int],
        every: int | None = None,
    ) -> None:
        every = SNAPSHOT_EVERY if every is None else every
        if every < 1:
            raise ValueError("snapshot interval must be at least 1")
        self.store = SnapshotStore(fs, directory)
        self.node_id = node_id
        self.brokers = tuple(sorted(brokers))
        self.every = every
        self.last = 0  # the offset the newest snapshot here covers
        self.taken = 0  # snapshots written here (counters, for tests and metrics)
        self.installed = 0  # snapshots installed from another broker
        self._controller: Controller | None = None
        self._driver: MultiRaftDriver | None = None
        self._transport: PeerTransport | None = None
        self._writing: asyncio.Task[None] | None = None
        self._installing: asyncio.Task[None] | None = None

    def bind(
        self, controller: Controller, driver: MultiRaftDriver, transport: PeerTransport
    ) -> None:
        self._controller, self._driver, self._transport = controller, driver, transport
        controller.after_apply = self.applied
        controller.on_stale = self.stale

    async def stop(self) -> None:
        """Stop installing; a snapshot being written is finished (its worker thread
        would go on anyway), so nothing writes the directory once this returns."""
        if self._installing is not None:
            await cancel_and_wait([self._installing], "the controller snapshot install")
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writing)
        self._writing = self._installing = None

    # ------------------------------------------------------------ loading

    def load(self, log_start: int) -> tuple[MetadataImage, int] | None:
        """The image and offset of the newest usable snapshot (None: none here and the
        log starts at 0). Raises ``CorruptionError`` naming a damaged snapshot that no
        older one plus the log covers."""
        damaged: CorruptionError | None = None
        for offset in reversed(self.store.offsets()):
            try:
                snap = self.store.read(offset)
                image = MetadataImage.decode_snapshot(snap.body)
            except CorruptionError as exc:
                damaged = damaged or exc
                continue
            except MetadataRecordError as exc:
                damaged = damaged or CorruptionError(self.store.path(offset), "the body", str(exc))
                continue
            if damaged is not None:
                if offset < log_start:
                    raise _uncovered(damaged)
                log.warning("%s: starting from the older %s and the log", damaged, snap.path)
            self.last = offset
            return image, offset
        if damaged is not None and log_start > 0:
            raise _uncovered(damaged)
        if damaged is not None:
            log.warning("%s: replaying the whole metadata log instead", damaged)
        return None

    # ------------------------------------------------------------ taking

    def applied(self) -> None:
        """After every applied entry: snapshot when ``every`` offsets have passed."""
        c = self._controller
        assert c is not None
        end = c.applied_end
        if end - self.last < self.every or c.holding is not None:
            return
        if self._writing is not None and not self._writing.done():
            return
        body = c.image.encode_snapshot()
        self._writing = asyncio.get_running_loop().create_task(
            self._write(end, body), name="controller-snapshot"
        )

    async def _write(self, offset: int, body: bytes) -> None:
        try:
            await asyncio.to_thread(self.store.write, offset, body)
        except (OSError, SentinelError) as exc:
            log.error("controller snapshot at %d not written: %s", offset, exc)
            return
        self.last = max(self.last, offset)
        self.taken += 1
        log.info("controller snapshot at %d written (%d bytes)", offset, len(body))
        self._move_start()

    def _move_start(self) -> None:
        offsets = self.store.offsets()
        if len(offsets) >= 2 and self._driver is not None:
            self._driver.request_start(CONTROLLER_GROUP, offsets[-2])

    # ------------------------------------------------------------ serving

    async def serve(self, src: int) -> bytes:
        """The framed bytes of the newest snapshot here (the call ``controller_snapshot``)."""
        offsets = self.store.offsets()
        if not offsets:
            raise NotLeaderError(f"broker {self.node_id} holds no controller snapshot", None)
        return await asyncio.to_thread(self.store.read_file, offsets[-1])

    # ------------------------------------------------------------ installing

    def stale(self, need: int) -> None:
        """The controller's image is stale below ``need``: fetch and install a snapshot."""
        if self._installing is None or self._installing.done():
            self._installing = asyncio.get_running_loop().create_task(
                self._install(), name="controller-snapshot-install"
            )

    def _sources(self) -> list[int]:
        assert self._controller is not None
        leader = self._controller.leader
        others = [b for b in self.brokers if b not in (self.node_id, leader)]
        return ([leader] if leader is not None and leader != self.node_id else []) + others

    async def _install(self) -> None:
        c, transport = self._controller, self._transport
        assert c is not None and transport is not None
        if self._writing is not None:  # a snapshot of the stale image being written
            with contextlib.suppress(Exception):
                await self._writing
        while (need := c.holding) is not None:
            for peer in self._sources():
                try:
                    data = await transport.call(peer, CALL_KIND, b"", FETCH_TIMEOUT_S)
                    offset, body = decode_file(data, f"the snapshot from broker {peer}")
                    image = MetadataImage.decode_snapshot(body)
                except SentinelError as exc:
                    log.debug("controller snapshot from broker %d: %s", peer, exc)
                    continue
                if offset < need:
                    log.debug("the snapshot of broker %d covers %d, not %d", peer, offset, need)
                    continue
                self._writing = asyncio.get_running_loop().create_task(
                    asyncio.to_thread(self.store.write_file, offset, data)
                )
                try:
                    await asyncio.shield(self._writing)  # a stop lets the write finish
                except (OSError, SentinelError) as exc:
                    log.error("controller snapshot at %d not stored: %s", offset, exc)
                    break  # retried after a pause
                need = c.holding if c.holding is not None else need
                if offset < need:
                    continue
                self.last = max(self.last, offset)
                c.install(image, offset)
                self.installed += 1
                log.info("controller snapshot at %d installed from broker %d", offset, peer)
                return
            await asyncio.sleep(FETCH_RETRY_S)


def _uncovered(damaged: CorruptionError) -> CorruptionError:
    return CorruptionError(
        damaged.path, damaged.where,
        f"{damaged.detail}; no older snapshot plus the metadata log covers it (remove the "
        "file and the broker installs a snapshot from another broker at its next start)",
    )
