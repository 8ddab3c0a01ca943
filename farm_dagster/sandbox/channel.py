"""The two ways the parent and its sandboxed child exchange protocol messages.

:class:`Channel`: length-prefixed frames over a pair of pipes (any platform).
:class:`SharedChannel`: mailboxes in shared memory, the pipes only ring (x86-64 Linux).

Why shared memory: a backtest hands the agent a bar and takes its answer back once per bar, 100,000 times on a
large run. Through pipes every hand-off is a write, a poll and a read on each side, and a round
trip took 10.3-10.8 us; through a shared page that both sides watch, well under 1 us (a
ping-pong between two processes; bench/RESULTS.md). The pipes stay, for what memory cannot do: waking a side that
went to sleep after waiting long (``DOORBELL``), and telling a side that the other one died (end
of file).

Layout of the region (a sealed memfd: its size cannot change, so neither side can make the
other's reads fault): one cache line per side's *sleeping* flag, then one mailbox per direction.
A mailbox is a header line (``seq``, ``ack``: one byte each, counting messages modulo 256;
``size``: the part's length, its top bit set when more parts follow) and ``capacity`` bytes of
payload. The writer waits for ``ack == seq`` (the reader took the previous part), writes the
payload, the size, then ``seq + 1``; the reader sees ``seq`` change, copies the part out, writes
``ack``. A message larger than the mailbox travels in parts. Whoever writes rings the other side's
pipe only when its sleeping flag is up; a wake-up lost to the flag's race costs one sleep of at
most ``_FIRST_NAP`` before the sleeper looks again.

Trust: the sandboxed side can write anything into the region at any time. The parent copies a
part out once before looking at it, checks its size against the mailbox, and believes nothing
else there: a forged message is a message the agent could have sent through a pipe, and the
wall-clock deadline bounds every wait, for an answer as for an ``ack``.

Memory order: x86-64 keeps stores in order and loads in order (TSO), so a reader that sees
``seq`` change sees the payload written before it. Other processors need fences that Python
cannot issue: there :func:`shared_memory_supported` is False and the pipes carry the messages
(:class:`Channel`).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import platform
import select
import struct
import time
from collections.abc import Callable

from farm_dagster.engine.protocol import HEADER, MAX_FRAME, ProtocolError

# A bar of 100 symbols is about 4 KB and the agent's answers a few KB: 1 MiB per direction keeps
# every usual message in one part (a bar of up to ~26,000 symbols).
CAPACITY = 1 << 20
DOORBELL = b"\x01"
# How long a waiting side watches the mailbox without sleeping. The other side usually answers
# within tens of microseconds; past this the wait is long and a sleep costs little.
SPIN_SECONDS = 200e-6
# A sleeper looks again after this long even when nobody rang (a lost wake-up), then backs off.
_FIRST_NAP_MS, _LONGEST_NAP_MS = 1, 50

_LINE = 64
_MORE = 1 << 31
_SIZE = struct.Struct("<I")
_SEQ, _ACK, _SIZE_AT = 0, _LINE, 2 * _LINE  # offsets in a mailbox header (own lines: no false sharing)
_HEADER = 3 * _LINE
_SLEEPING = {"parent": 0, "child": _LINE}  # offsets of each side's flag
_MAILBOXES = 2 * _LINE


class ChannelClosed(EOFError):
    """The other side closed its end of the channel."""


# How long recv() polls actively before sleeping. Why: the two processes hand a bar back and forth
# every ~100 us; on a virtual machine an idle vCPU halts, and waking it costs tens of microseconds
# per hand-off (measured: 42 us round trip sleeping vs 4 us polling). Polling yields the CPU on
# every turn, so a busy machine loses little, and it is bounded so an idle wait still sleeps.
PIPE_SPIN_SECONDS = 200e-6


class _PipeEnds:
    """What both channels keep of the pipes: the two ends, a poll on the reading one, and closing."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self._poll = select.poll()
        self._poll.register(read_fd, select.POLLIN | select.POLLHUP | select.POLLERR)

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Channel(_PipeEnds):
    """Length-prefixed frames over a pair of pipe fds (see :mod:`farm_dagster.engine.protocol`)."""

    def __init__(self, read_fd: int, write_fd: int, spin_seconds: float = PIPE_SPIN_SECONDS) -> None:
        super().__init__(read_fd, write_fd)
        self.spin_seconds = spin_seconds
        self._buf = bytearray()

    def send(self, payload: bytes) -> None:
        data = [HEADER.pack(len(payload)), payload]
        total = 4 + len(payload)
        sent = os.writev(self.write_fd, data)
        if sent < total:  # pipe full: finish the frame with plain writes
            view = memoryview(b"".join(data))[sent:]
            while view:
                view = view[os.write(self.write_fd, view) :]

    def recv(self, timeout: float | None = None) -> bytes:
        """Next frame's payload; ``TimeoutError`` after ``timeout`` seconds, ``ChannelClosed`` on EOF."""
        buf = self._buf
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if len(buf) >= 4:
                (size,) = HEADER.unpack_from(buf)
                if size > MAX_FRAME or size == 0:
                    raise ProtocolError(f"frame of {size} bytes")
                if len(buf) >= 4 + size:
                    payload = bytes(buf[4 : 4 + size])
                    del buf[: 4 + size]
                    return payload
            if not self._spin() and deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._poll.poll(max(0, int(left * 1000) + 1)):
                    raise TimeoutError("no message before the deadline")
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                raise ChannelClosed("channel closed by the other side")
            buf += chunk

    def ready(self) -> bool:
        """True when :meth:`recv` has something to read now (a whole frame buffered, data or EOF)."""
        buf = self._buf
        if len(buf) >= 4 and len(buf) >= 4 + HEADER.unpack_from(buf)[0]:
            return True
        return bool(self._poll.poll(0))

    def _spin(self) -> bool:
        """Poll without sleeping for up to ``spin_seconds``; True when data (or EOF) is ready."""
        if self.spin_seconds <= 0:
            return False
        poll, clock, yield_cpu = self._poll.poll, time.perf_counter, os.sched_yield
        end = clock() + self.spin_seconds
        while not poll(0):
            if clock() >= end:
                return False
            yield_cpu()
        return True


def shared_memory_supported() -> bool:
    """True where the mailboxes are safe (see the module's note on memory order) and memfd exists."""
    return platform.machine().lower() in ("x86_64", "amd64") and hasattr(os, "memfd_create")


def region_size(capacity: int = CAPACITY) -> int:
    return _MAILBOXES + 2 * (_HEADER + capacity)


def create_region(capacity: int = CAPACITY) -> int:
    """A sealed memfd of :func:`region_size` bytes, zeroed, for :class:`SharedChannel` (parent side)."""
    fd = os.memfd_create("farm-channel", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, region_size(capacity))
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    except BaseException:
        os.close(fd)
        raise
    return fd


class SharedChannel(_PipeEnds):
    """The :class:`Channel` interface over the shared mailboxes.

    ``side`` is "parent" or "child"; ``read_fd``/``write_fd`` are the pipes from and to the other
    side, used here only as doorbells and to learn of its death.
    """

    def __init__(
        self,
        read_fd: int,
        write_fd: int,
        region_fd: int,
        side: str,
        capacity: int = CAPACITY,
        spin_seconds: float = SPIN_SECONDS,
    ) -> None:
        if side not in _SLEEPING:
            raise ValueError(f"side must be 'parent' or 'child', not {side!r}")
        super().__init__(read_fd, write_fd)
        self.capacity, self.spin_seconds = capacity, spin_seconds
        self._mm = mmap.mmap(region_fd, region_size(capacity))
        os.set_blocking(write_fd, False)  # a full pipe holds enough wake-ups already
        to_child, to_parent = _MAILBOXES, _MAILBOXES + _HEADER + capacity
        out_box, in_box = (to_child, to_parent) if side == "parent" else (to_parent, to_child)
        other = "child" if side == "parent" else "parent"
        self._my_flag, self._their_flag = _SLEEPING[side], _SLEEPING[other]
        self._out_seq, self._out_ack, self._out_size = out_box + _SEQ, out_box + _ACK, out_box + _SIZE_AT
        self._out_data = out_box + _HEADER
        self._in_seq, self._in_ack, self._in_size = in_box + _SEQ, in_box + _ACK, in_box + _SIZE_AT
        self._in_data = in_box + _HEADER
        # Counted from the fresh region's zeros, not read from it: the parent may have written
        # its first message before the child maps the region.
        self._sent = self._seen = 0
        # time.monotonic() past which a send stops waiting for the reader to take a part (the
        # sandbox sets its wall-clock deadline: an agent that never takes its bar cannot hang us)
        self.deadline: float | None = None

    # ---------------------------------------------------------------- sending
    def send(self, payload: bytes) -> None:
        """Write ``payload`` (in parts when larger than the mailbox); waits only for a taken part."""
        mm, capacity, n = self._mm, self.capacity, len(payload)
        start = 0
        while True:
            if mm[self._out_ack] != self._sent:
                self._wait(self._part_taken, self.deadline)
            end = min(n, start + capacity)
            mm[self._out_data : self._out_data + end - start] = payload[start:end]
            _SIZE.pack_into(mm, self._out_size, (end - start) | (_MORE if end < n else 0))
            self._sent = (self._sent + 1) & 255
            mm[self._out_seq] = self._sent
            self._ring_if_asleep()
            if end >= n:
                return
            start = end

    def _part_taken(self) -> bool:
        return self._mm[self._out_ack] == self._sent

    def _ring_if_asleep(self) -> None:
        if self._mm[self._their_flag]:
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(self.write_fd, DOORBELL)  # a dead reader is learnt of by reading

    # -------------------------------------------------------------- receiving
    def ready(self) -> bool:
        """True when a message (its first part) is in: one memory read, no system call.

        The other side's death is learnt of by :meth:`recv`, which a caller reaches once there
        is nothing else to do.
        """
        return self._mm[self._in_seq] != self._seen

    _arrived = ready  # what a receiving wait watches for

    def recv(self, timeout: float | None = None) -> bytes:
        """Next message; ``TimeoutError`` after ``timeout`` seconds, ``ChannelClosed`` on EOF."""
        deadline = None if timeout is None else time.monotonic() + timeout
        parts: list[bytes] = []
        total = 0
        mm = self._mm
        while True:
            if mm[self._in_seq] == self._seen:
                self._wait(self._arrived, deadline)
            self._seen = mm[self._in_seq]
            (size,) = _SIZE.unpack_from(mm, self._in_size)
            more, size = size & _MORE, size & ~_MORE
            if size == 0 or size > self.capacity or total + size > MAX_FRAME:
                raise ProtocolError(f"message part of {size} bytes (mailbox of {self.capacity})")
            part = mm[self._in_data : self._in_data + size]  # one copy; the writer may scribble later
            mm[self._in_ack] = self._seen
            self._ring_if_asleep()
            if not more and not parts:
                return part
            parts.append(part)
            total += size
            if not more:
                return b"".join(parts)

    def _wait(self, check: Callable[[], bool], deadline: float | None) -> None:
        """Watch the region until ``check()`` (:meth:`_arrived` or :meth:`_part_taken`); sleep on
        the pipe past ``spin_seconds``."""
        clock = time.perf_counter
        end = clock() + self.spin_seconds
        while not check():
            if clock() >= end:
                break
        else:
            return
        mm, flag, nap = self._mm, self._my_flag, _FIRST_NAP_MS
        while True:
            mm[flag] = 1
            if check():
                mm[flag] = 0
                return
            wait_ms = nap
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    mm[flag] = 0
                    raise TimeoutError("no message before the deadline")
                wait_ms = min(nap, int(left * 1000) + 1)
            woke = self._poll.poll(wait_ms)
            mm[flag] = 0
            if woke:
                chunk = os.read(self.read_fd, 4096)  # doorbells: their content means nothing
                if not chunk and not check():
                    raise ChannelClosed("channel closed by the other side")
            if check():
                return
            nap = min(2 * nap, _LONGEST_NAP_MS)

    def close(self) -> None:
        super().close()
        with contextlib.suppress(BufferError, ValueError):
            self._mm.close()
