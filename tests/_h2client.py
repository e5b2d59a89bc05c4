"""
A small blocking HTTP/2 client for the tests (the ``h2`` library over an ``ssl`` socket with ALPN ``h2``): send
requests on streams, then read frames until the streams wanted are done, optionally without acknowledging the data
(a slow reader whose flow-control windows stay shut); upload a body in parts, or until the server stops opening the
stream's window.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events


@dataclass
class Stream:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int:
        return int(self.headers[b":status"])

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    def __init__(self, port: int, ca_file: str, host: str = "localhost", validate: bool = True) -> None:
        context = ssl.create_default_context(cafile=ca_file)
        context.set_alpn_protocols(["h2"])
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname=host)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.authority = f"{host}:{port}".encode()
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.streams: dict[int, Stream] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.remote_settings: dict[int, int] = {}
        self.acknowledge = True
        self._ponged = False
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        authority: bool = True,
        end: bool = True,
    ) -> int:
        """
        Open a stream and send ``body`` on it (none: END_STREAM with the headers); ``end=False`` leaves the stream
        open for more of the body.
        """
        stream_id = self.conn.get_next_available_stream_id()
        pseudo = [(b":method", method.encode()), (b":scheme", b"https"), (b":path", path.encode())]
        if authority:
            pseudo.insert(1, (b":authority", self.authority))
        self.conn.send_headers(stream_id, pseudo + (headers or []), end_stream=body is None and end)
        self.streams[stream_id] = Stream()
        self._flush()
        if body is not None:
            self.send_body(stream_id, body, end)
        return stream_id

    def send_body(self, stream_id: int, body: bytes, end: bool = True) -> None:
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                self._read_once()
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self._flush()
        if end:
            self.conn.end_stream(stream_id)
            self._flush()

    def wait(self, *stream_ids: int) -> list[Stream]:
        while not all(self.streams[i].done for i in stream_ids) and self.terminated is None:
            self._read_once()
        return [self.streams[i] for i in stream_ids]

    def read_for(self, stream_id: int, size: int) -> None:
        """
        Read frames until ``size`` body bytes of ``stream_id`` have arrived or it is done.
        """
        while len(self.streams[stream_id].data) < size and not self.streams[stream_id].done:
            self._read_once()

    def read_until_line(self, stream_id: int, line: bytes) -> None:
        """
        Read frames until ``line`` is a whole line of the body of ``stream_id``, or it is done.
        """
        while line not in bytes(self.streams[stream_id].data).split(b"\n") and not self.streams[stream_id].done:
            self._read_once()

    def ping(self) -> None:
        """
        Send a PING and read frames until it is acknowledged (so the frames the server sent before are read).
        """
        self._ponged = False
        self.conn.ping(b"txrevpxy")
        self._flush()
        while not self._ponged:
            self._read_once()

    def upload_until_stalled(self, stream_id: int, most: int, rounds: int = 3) -> int:
        """
        Send DATA on ``stream_id`` whenever its window allows, up to ``most`` bytes, until the window has stayed
        shut through ``rounds`` PING round trips in a row; return the bytes sent.
        """
        sent = shut = 0
        while sent < most and shut < rounds:
            room = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size, most - sent)
            if room > 0:
                self.conn.send_data(stream_id, b"u" * room)
                self._flush()
                sent += room
                shut = 0
            else:
                self.ping()
                shut += self.conn.local_flow_control_window(stream_id) <= 0
        return sent

    def _read_once(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.streams[event.stream_id].headers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.streams[event.stream_id].data += event.data
                if self.acknowledge:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.streams[event.stream_id].ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.streams[event.stream_id].reset = event.error_code
            elif isinstance(event, h2.events.PingAckReceived):
                self._ponged = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = event
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self.remote_settings.update({code: change.new_value for code, change in event.changed_settings.items()})
        self._flush()

    def close(self) -> None:
        self.sock.close()
