"""The grader's end of the harness's pipes (runner.py): JSON lines out and in, within the run's deadline.

    channel = Channel(requests_fd, replies_fd, deadline=time.monotonic() + 5, limit=16 << 20)
    channel.ask({"op": "call", "name": "f", "args": [1], "kwargs": {"$": "dict", "v": []}})  # {"ok": 2}

The program may stall, flood, close its end or write garbage; each ends the conversation with ChannelClosed
(never a hang past the deadline, never more than `limit` bytes held), or a reply `{}` nobody can use.
"""

from __future__ import annotations

import json
import os
import select
import time
from typing import Any


class ChannelClosed(BaseException):  # not an Exception: tests under `except Exception` cannot swallow it
    """The program stopped answering: it ended, hit the wall-clock limit, or sent garbage too long to read."""


class ChannelTimeout(ChannelClosed):
    """The wall-clock limit passed while the grader waited for the program."""


class Channel:
    """The grader's end of the harness's pipes: JSON lines out and in, within the run's wall-clock deadline."""

    def __init__(self, requests: int, replies: int, deadline: float, limit: int) -> None:
        self._out, self._in, self._deadline, self._limit = requests, replies, deadline, limit
        self._buffer = b""
        self.closed = False

    def _fail(self, why: str, kind: type[ChannelClosed] = ChannelClosed) -> ChannelClosed:
        self.closed = True
        return kind(why)

    def _wait(self, readable: bool) -> None:
        if self.closed:
            raise ChannelClosed("the conversation already ended")
        remaining = self._deadline - time.monotonic()
        fds = ([self._in], [], []) if readable else ([], [self._out], [])
        if remaining <= 0 or not any(select.select(*fds, remaining)):
            raise self._fail("no answer in time", ChannelTimeout)

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        while data:
            self._wait(readable=False)
            try:
                data = data[os.write(self._out, data) :]
            except (BrokenPipeError, BlockingIOError) as e:
                if isinstance(e, BrokenPipeError):
                    raise self._fail("the program ended") from None

    def receive(self) -> Any:
        while b"\n" not in self._buffer:
            self._wait(readable=True)
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise self._fail("the program ended")
            self._buffer += chunk
            if len(self._buffer) > self._limit:
                raise self._fail(f"a reply longer than {self._limit} bytes")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line)
        except (ValueError, RecursionError):
            return {}  # not a reply: whatever asked gets nothing it can use

    def ask(self, message: dict[str, Any]) -> Any:
        self.send(message)
        return self.receive()
