"""One REQ connection to a cq server that notices when nobody answers.

ZeroMQ reconnects silently and never tells a REQ socket that its peer is gone, so a socket
monitor tells us whether the handshake happened, and heartbeats notice a dead peer. A failed
exchange throws the socket away (the "lazy pirate" pattern): the next one starts clean.
"""

from __future__ import annotations

import struct
import time

import zmq

# zmq.utils.monitor would parse the event for us, but it imports zmq.asyncio (asyncio, ssl:
# a third of cq-client's start-up); the first frame is just a native u16 event and i32 value.
_EVENT = struct.Struct("=Hi")

HEARTBEAT_MS = 5000


class TransportError(Exception):
    """The exchange failed; the request may or may not have reached the server."""


class NotConnected(TransportError):
    pass


class NoAnswer(TransportError):
    pass


class Connection:
    def __init__(self, endpoint: str, context: zmq.Context | None = None):
        self.endpoint = endpoint
        self.context = context or zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None
        self.connected = False

    def _open(self) -> None:
        sock = self.context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * HEARTBEAT_MS)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self.monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        sock.connect(self.endpoint)
        self.sock, self.connected = sock, False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.disable_monitor()
            self.monitor.close(0)
            self.sock.close(0)
        self.sock = self.monitor = None
        self.connected = False

    def exchange(self, frame: bytes, connect_timeout: float, answer_timeout: float | None
                 ) -> bytes:
        """Send one frame, return the answer. answer_timeout None: wait while connected."""
        if self.sock is None:
            self._open()
        try:
            return self._exchange(frame, connect_timeout, answer_timeout)
        except BaseException:
            self.close()
            raise

    def _exchange(self, frame: bytes, connect_timeout: float, answer_timeout: float | None
                  ) -> bytes:
        self.sock.send(frame)
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            limit = answer_timeout if self.connected else connect_timeout
            if limit is not None and elapsed >= limit:
                if not self.connected:
                    raise NotConnected(f"no connection within {connect_timeout:g}s")
                raise NoAnswer(f"connected, but no answer within {answer_timeout:g}s")
            wait = 1.0 if limit is None else min(1.0, limit - elapsed)
            events = dict(poller.poll(max(1, int(wait * 1000))))
            if self.monitor in events:
                event = _EVENT.unpack(self.monitor.recv_multipart()[0][:6])[0]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self.connected = True
                elif event == zmq.EVENT_DISCONNECTED and self.connected:
                    raise TransportError("the connection to the server was lost")
            if self.sock in events:
                return self.sock.recv()
