"""The supervisor's end of a worker's protocol socket, as an asyncio protocol.

A worker answers a batch with one small frame per item. Reading those
through a stream API costs a task switch, a checkpoint and a cancel scope
per frame, which was most of the supervisor's time per invocation. This
protocol stays registered with the event loop for the worker's whole life,
splits each chunk the socket delivers into all the whole messages it holds,
and wakes the one waiting reader only when a message, the end, or its
deadline is there. Deadlines share one lazily re-armed timer, so moving the
deadline forward after every item costs nothing.

Only the pool uses it, on anyio's asyncio backend (the supervisor runs on
asyncio, with uvloop when installed).
"""

from __future__ import annotations

import asyncio
import copy
import socket
from collections import deque
from typing import Any, cast

from runtime.worker import protocol


class Channel(asyncio.Protocol):
    """Framed messages to and from one worker.

    `receive` raises EOFError once the worker closed its end (it exited),
    `protocol.ProtocolError` on a malformed frame, and OSError on a socket
    error; whatever is already buffered is still handed out first.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._messages: deque[dict[str, Any]] = deque()
        self._ended: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        """Register `sock` (one end of a socketpair) with the running loop."""
        _, channel = await asyncio.get_running_loop().create_unix_connection(cls, sock=sock)
        return channel

    def send(self, message: dict[str, Any]) -> None:
        """Queue one message for the worker (the transport writes it without blocking).

        Raises:
            protocol.ProtocolError: the message is over `MAX_FRAME` or not marshallable.
            EOFError: the channel has ended.
        """
        frame = protocol.pack(message)
        if self._transport is None or self._transport.is_closing():
            raise EOFError("the worker's channel is closed")
        self._transport.write(frame)

    @property
    def usable(self) -> bool:
        """Whether the channel has not ended and holds no message unread.

        An idle worker sends nothing: a message or the end while it is idle
        means it died (its guard's `crashed` report, then EOF).
        """
        return self._ended is None and not self._messages and not (
            self._transport is None or self._transport.is_closing())

    def poll(self) -> dict[str, Any] | None:
        """The next message if one is already buffered, else None, without waiting.

        A batch's replies usually arrive in one chunk: taking them this way
        saves a coroutine per item.
        """
        return self._messages.popleft() if self._messages else None

    async def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next message, or None once the loop's clock passes `deadline`."""
        while not self._messages:
            if self._ended is not None:
                # A copy: raised itself, the stored error would keep, through its
                # traceback, each caller's frame and its worker (pidfd, pipes) alive
                # until the cycle collector runs, which an idle supervisor may never do.
                raise copy.copy(self._ended)
            if self._loop.time() >= deadline:
                return None
            self._deadline = deadline
            self._arm()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._messages.popleft()

    def close(self) -> None:
        """Stop reading and close our end of the socket."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()

    # -- timer ---------------------------------------------------------------

    def _arm(self) -> None:
        timer = self._timer
        if timer is not None and timer.when() <= self._deadline:
            return  # it fires no later than needed and re-arms itself then
        if timer is not None:
            timer.cancel()
        self._timer = self._loop.call_at(self._deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._waiter is None:
            return  # nobody waits: the next receive arms it again
        if self._loop.time() >= self._deadline:
            self._wake()
        else:
            self._arm()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start, size = 0, len(buffer)
        try:
            while size - start >= protocol.HEADER:
                end = start + protocol.HEADER + protocol.frame_size(
                    buffer[start : start + protocol.HEADER]
                )
                if end > size:
                    break
                self._messages.append(protocol.unpack(buffer[start + protocol.HEADER : end]))
                start = end
        except protocol.ProtocolError as exc:
            self._end(exc)
            self.close()
        del buffer[:start]
        self._wake()

    def eof_received(self) -> bool:
        self._end(EOFError("the worker closed its end"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc if exc is not None else EOFError("the worker closed its end"))

    def _end(self, error: BaseException) -> None:
        if self._ended is None:
            self._ended = error
        self._wake()
