"""The two channels between the parent and its sandboxed child: pipes, and shared-memory mailboxes.

Real pipes, a real sealed memfd and, for the end-to-end cases, a real locked-down child process.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

import pytest

from farm_dagster.engine.protocol import ProtocolError
from farm_dagster.sandbox.channel import (
    ChannelClosed,
    SharedChannel,
    create_region,
    region_size,
    shared_memory_supported,
)
from farm_dagster.sandbox.limits import SandboxLimits
from farm_dagster.sandbox.process import SandboxProcess, SandboxTimeout

needs_shared_memory = pytest.mark.skipif(
    not shared_memory_supported(), reason="shared-memory mailboxes need x86-64 Linux"
)

END = b"end of the test"  # no message of the tests has its length


def echo_main(channel) -> None:
    """Child entry: answers every message with its bytes reversed, until END."""
    while (payload := channel.recv()) != END:
        channel.send(payload[::-1])


def _pair(capacity: int) -> tuple[SharedChannel, SharedChannel]:
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    region = create_region(capacity)
    try:
        parent = SharedChannel(to_parent_r, to_child_w, region, "parent", capacity)
        child = SharedChannel(to_child_r, to_parent_w, region, "child", capacity)
    finally:
        os.close(region)
    return parent, child


@contextlib.contextmanager
def _echoing(delay: float = 0.0) -> Iterator[SharedChannel]:
    """The parent's end of a 4 KiB pair whose child, in a thread, echoes every message reversed
    (after ``delay`` seconds) until END, which leaving the block sends."""
    parent, child = _pair(4096)

    def serve() -> None:
        with contextlib.suppress(ChannelClosed):
            while (payload := child.recv(timeout=30)) != END:
                time.sleep(delay)
                child.send(payload[::-1])

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    try:
        yield parent
        parent.send(END)
    finally:
        worker.join(timeout=10)
        parent.close()
        child.close()


@needs_shared_memory
@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 3 * 4096 + 17])
def test_messages_of_any_size_arrive_whole_and_in_order(size: int) -> None:
    """A message larger than the 4 KiB mailbox travels in parts and arrives as one."""
    with _echoing() as parent:
        for k in range(20):
            message = os.urandom(size - 1) + bytes((k,))
            parent.send(message)
            assert parent.recv(timeout=30) == message[::-1]


@needs_shared_memory
def test_a_sleeping_reader_is_woken_by_the_doorbell(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers slower than the spin window: the parent sleeps on its pipe and the child rings it.
    Its naps are made longer than the test's timeout: without the ring, no answer would be seen."""
    from farm_dagster.sandbox import channel

    monkeypatch.setattr(channel, "_FIRST_NAP_MS", 600_000)
    monkeypatch.setattr(channel, "_LONGEST_NAP_MS", 600_000)
    with _echoing(delay=0.02) as parent:
        for k in range(5):
            parent.send(bytes((k, 1, 2)))
            assert parent.recv(timeout=5) == bytes((2, 1, k))
        assert parent._mm[parent._my_flag] == 0  # not left asleep


@needs_shared_memory
def test_the_other_sides_death_ends_the_wait() -> None:
    parent, child = _pair(4096)
    child.close()  # its pipe ends close, as when the process dies
    started = time.monotonic()
    with pytest.raises(ChannelClosed):
        parent.recv(timeout=30)
    assert time.monotonic() - started < 5  # learnt from the pipe, not from the timeout
    parent.close()


@needs_shared_memory
def test_silence_times_out_and_a_forged_size_is_refused() -> None:
    parent, child = _pair(4096)
    try:
        with pytest.raises(TimeoutError):
            parent.recv(timeout=0.1)
        # What a hostile child can do: write its own header into the parent's inbox.
        mm = child._mm
        mm[child._out_size : child._out_size + 4] = (4097).to_bytes(4, "little")
        mm[child._out_seq] = 1
        with pytest.raises(ProtocolError, match="4097 bytes"):
            parent.recv(timeout=1)
    finally:
        parent.close()
        child.close()


@needs_shared_memory
def test_a_send_gives_up_at_the_deadline_when_the_reader_never_takes_its_message() -> None:
    parent, child = _pair(4096)
    try:
        parent.deadline = time.monotonic() + 0.2
        parent.send(b"first")  # the mailbox is free
        with pytest.raises(TimeoutError):
            parent.send(b"second")  # the child never took the first
        assert child.recv(timeout=1) == b"first"  # nothing was overwritten
    finally:
        parent.close()
        child.close()


@needs_shared_memory
def test_the_region_cannot_be_resized_by_either_side() -> None:
    """Sealed: a child that shrank it would make the parent's reads fault (SIGBUS)."""
    region = create_region(4096)
    try:
        with pytest.raises(PermissionError):
            os.ftruncate(region, 4096)
        with pytest.raises(PermissionError):
            os.ftruncate(region, 2 * region_size(4096))
        assert os.fstat(region).st_size == region_size(4096)
    finally:
        os.close(region)


@pytest.mark.parametrize(
    "shared_memory",
    [False, pytest.param(True, marks=needs_shared_memory)],
    ids=["pipes", "shared-memory"],
)
def test_a_locked_down_child_talks_over_either_channel(shared_memory: bool) -> None:
    """The real sandbox, with messages from one byte to three mailboxes' worth (3 MiB)."""
    with SandboxProcess("tests.test_channel:echo_main", shared_memory=shared_memory) as proc:
        assert type(proc._channel).__name__ == ("SharedChannel" if shared_memory else "Channel")
        for size in (1, 4009, 3 * 1024 * 1024 + 5):
            message = os.urandom(size)
            proc.send(message)
            assert proc.recv(timeout=30) == message[::-1]
        proc.send(END)
    assert proc.status is not None and proc.status.returncode == 0, proc.status


def test_without_a_memfd_the_sandbox_falls_back_to_the_pipes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime that refuses memfd_create or its seals still runs agents, over the pipes."""
    from farm_dagster.sandbox import process

    def refuse() -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(process, "create_region", refuse)
    with SandboxProcess("tests.test_channel:echo_main", shared_memory=True) as proc:
        assert not proc.shared_memory and type(proc._channel).__name__ == "Channel"
        proc.send(b"abc")
        assert proc.recv(timeout=30) == b"cba"
        proc.send(END)


@needs_shared_memory
def test_a_child_that_never_reads_times_the_parents_send_out() -> None:
    """An agent can leave its bar untaken; the parent's next send then ends at the wall clock."""
    limits = SandboxLimits(wall_seconds=1.0)
    with SandboxProcess("tests.test_channel:deaf_main", limits, shared_memory=True) as proc:
        proc.send(b"one")
        with pytest.raises(SandboxTimeout, match="did not take its next message"):
            proc.send(b"two")


def deaf_main(channel) -> None:
    """Child entry that never reads: it only waits to be killed."""
    time.sleep(60)
