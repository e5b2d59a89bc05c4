"""
Request body sources for the relay: where the bytes sent upstream come from.

A source has a :class:`~txrevproxy._http.framing.Framing`, pushes its bytes into a sink with ``bodyData``/``bodyEnd``
once started, and obeys ``pause``/``resume``/``stop`` from the upstream side. :class:`StreamingBody` is fed by the
proxy's own channel while the client is still sending and pauses the client when the upstream is slow;
:class:`BufferedBody` reads a body Twisted's ``Site`` has already stored.
"""

from __future__ import annotations

from typing import IO
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IPushProducer

from txrevproxy._http.framing import NO_BODY, Framing, Kind

#: Bytes a streaming body holds while the upstream is not ready before the client is paused.
STREAM_BUFFER = 65536
#: Size of the pieces a buffered body is written in.
READ_SIZE = 65536


class BodySink(TypingProtocol):
    def bodyData(self, data: bytes) -> None: ...

    def bodyEnd(self) -> None: ...

    def bodyFailed(self, reason: str) -> None: ...


class BodySource(TypingProtocol):
    framing: Framing

    def start(self, sink: BodySink) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def stop(self) -> None: ...


class BufferedBody:
    """
    A body already stored in a file-like object (``Request.content`` in a plain ``Site``).
    """

    def __init__(self, content: IO[bytes] | None) -> None:
        self._content = content
        length = 0
        if content is not None:
            content.seek(0, 2)
            length = content.tell()
            content.seek(0, 0)
        self.framing = Framing(Kind.LENGTH, length) if length else NO_BODY
        self._sink: BodySink | None = None
        self._paused = False
        self._done = False

    def start(self, sink: BodySink) -> None:
        self._sink = sink
        self._produce()

    def _produce(self) -> None:
        while not self._paused and not self._done and self._sink is not None:
            data = self._content.read(READ_SIZE) if self._content is not None else b""
            if not data:
                self._done = True
                self._sink.bodyEnd()
                return
            self._sink.bodyData(data)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._produce()

    def stop(self) -> None:
        self._done = True


class StreamingBody:
    """
    A body still arriving from the client: fed by :meth:`feed` and :meth:`end`, relayed as it comes.

    Until the sink is started (the upstream connection is being made) up to :data:`STREAM_BUFFER` bytes are held,
    then the client is paused. While the sink is paused the client is paused too.
    """

    def __init__(self, framing: Framing, client: IPushProducer) -> None:
        self.framing = framing
        self._client = client
        self._sink: BodySink | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._paused = False  # the sink asked us to pause
        self._client_paused = False
        self._ended = False  # the client sent the whole body
        self._end_sent = False
        self._stopped = False
        self.failed: str | None = None  # why the client's body broke off, if it did
        self.received = 0

    @property
    def complete(self) -> bool:
        return self._ended

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self._stopped:
            return
        if self._sink is None or self._paused or self._pending:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > STREAM_BUFFER or self._paused:
                self._pauseClient()
            return
        self._sink.bodyData(data)

    def end(self) -> None:
        self._ended = True
        self._flush()

    def start(self, sink: BodySink) -> None:
        self._sink = sink
        if self.failed is not None:
            sink.bodyFailed(self.failed)
            return
        self._flush()

    def fail(self, reason: str) -> None:
        """
        The client's body broke its framing or a limit: nothing more is sent, and the sink is told.
        """
        if self.failed is not None or self._ended:
            return
        self.failed = reason
        sink = self._sink
        self.stop()
        if sink is not None:
            sink.bodyFailed(reason)

    def _flush(self) -> None:
        sink = self._sink
        if sink is None or self._stopped:
            return
        while self._pending and not self._paused:
            data = self._pending.pop(0)
            self._pending_size -= len(data)
            sink.bodyData(data)
        if self._pending or self._paused:
            return
        if self._ended and not self._end_sent:
            self._end_sent = True
            sink.bodyEnd()
        self._resumeClient()

    def _pauseClient(self) -> None:
        if not self._client_paused:
            self._client_paused = True
            self._client.pauseProducing()

    def _resumeClient(self) -> None:
        if self._client_paused:
            self._client_paused = False
            self._client.resumeProducing()

    def pause(self) -> None:
        self._paused = True
        self._pauseClient()

    def resume(self) -> None:
        self._paused = False
        self._flush()

    def stop(self) -> None:
        """
        The upstream wants no more: drop what is held and let the client send the rest, to be discarded. The sink
        is forgotten (it holds this body: a reference cycle otherwise).
        """
        self._stopped = True
        self._sink = None
        self._pending = []
        self._pending_size = 0
        self._resumeClient()
