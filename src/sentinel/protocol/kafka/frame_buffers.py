"""Receive buffers for large frames, reused across requests and connections.

A large frame (``DIRECT_FRAME_BYTES`` or more: a produce request's batches) is read
straight into a buffer of its own. A fresh buffer costs a page fault per 4 KiB page the
socket's bytes land in: measured on a 2-vCPU VM, 0.26 ms to take in 512 KiB into a new
anonymous mapping against 0.05 ms into a buffer that was used before (py-spy: 9 % of the
event loop's time in the Kafka door's broker-alone benchmark went to that).

A buffer is reused only when nothing refers to its bytes any more. That is not tracked;
it is asked of the buffer itself: a ``bytearray`` refuses to be resized while any
memoryview of it exists (``BufferError``), and the decoded request's batches, and
anything a handler kept of them, are memoryviews of the frame. So a buffer still read
by anyone is never written again, however long they keep it: the next frame takes
another buffer, or a fresh one.

Bounded: the buffers kept hold at most ``max_bytes`` together, none larger than
``max_buffer_bytes`` (larger frames get a fresh mapping whose pages are allocated as the
bytes arrive, as before). When a frame finds no free buffer of its size and the bound
is reached, free buffers of other sizes are given up for it.
"""

from __future__ import annotations

import mmap

from sentinel.errors import InvalidArgumentError

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""What the kept buffers may hold together, per listener."""
DEFAULT_MAX_BUFFER_BYTES = 4 * 1024 * 1024
"""The largest frame a kept buffer is made for."""


def fresh_buffer(size: int) -> mmap.mmap:
    """``size`` zero bytes whose pages are allocated as they are written (a
    ``bytearray`` of that size is written whole at once)."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _unreferenced(buffer: bytearray) -> bool:
    """Whether no memoryview of ``buffer`` exists (it can be resized): an append and a
    pop, which leave it as it was, refuse while one does."""
    try:
        buffer.append(0)
    except BufferError:
        return False
    buffer.pop()
    return True


class FrameBuffers:
    """The reusable receive buffers of one listener's connections (event-loop only)."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
    ) -> None:
        if max_bytes < 0 or max_buffer_bytes < 0:
            raise InvalidArgumentError("frame buffer bounds must not be negative")
        self.max_bytes = max_bytes
        self.max_buffer_bytes = min(max_buffer_bytes, max_bytes)
        self._kept: list[bytearray] = []
        self._kept_bytes = 0
        self.reused = 0
        """Frames that were received into a kept buffer (for tests and stats)."""

    @property
    def kept_bytes(self) -> int:
        return self._kept_bytes

    def take(self, size: int) -> memoryview | mmap.mmap:
        """A writable buffer of exactly ``size`` bytes for one frame's body (its old
        contents, if reused, are overwritten by the frame)."""
        if size > self.max_buffer_bytes:
            return fresh_buffer(size)
        for buffer in self._kept:
            # At most twice the frame: a small frame does not pin a large buffer.
            if size <= len(buffer) <= 2 * size and _unreferenced(buffer):
                self.reused += 1
                return memoryview(buffer)[:size]
        if self._kept_bytes + size > self.max_bytes:
            self._give_up_free(self._kept_bytes + size - self.max_bytes)
        if self._kept_bytes + size > self.max_bytes:
            return fresh_buffer(size)
        buffer = bytearray(size)
        self._kept.append(buffer)
        self._kept_bytes += size
        return memoryview(buffer)[:size]

    def _give_up_free(self, needed: int) -> None:
        """Drop free kept buffers, oldest first, until ``needed`` bytes are released."""
        kept: list[bytearray] = []
        for buffer in self._kept:
            if needed > 0 and _unreferenced(buffer):
                needed -= len(buffer)
                self._kept_bytes -= len(buffer)
            else:
                kept.append(buffer)
        self._kept = kept

    def clear(self) -> None:
        """Give up every kept buffer (the ones still referenced stay alive with their
        readers)."""
        self._kept = []
        self._kept_bytes = 0
