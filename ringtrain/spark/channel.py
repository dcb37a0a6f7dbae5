"""The one network channel ringtrain opens itself: tasks -> driver, for live logs, task start-up
and failure reports. Every frame is authenticated with HMAC-SHA256 under a per-job secret that
reaches the tasks inside the Spark task closure (Spark's own channel); it is never on a command
line, in the environment of the ranks, or in a log. Frames carry JSON, never pickles: a frame
whose MAC does not verify closes the connection unread."""
import hashlib
import hmac
import json
import socket
import socketserver
import struct
import threading

_HEADER = struct.Struct("!I")
_MAC_BYTES = 32
MAX_FRAME = 1 << 20


def _mac(secret, payload):
    return hmac.new(secret, payload, hashlib.sha256).digest()


class Sender:
    """A task's end: send(dict) frames to the driver."""

    def __init__(self, address, secret, timeout=30):
        host, port = address
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._secret = secret
        self._lock = threading.Lock()

    def send(self, message):
        payload = json.dumps(message).encode()
        frame = _HEADER.pack(len(payload)) + _mac(self._secret, payload) + payload
        with self._lock:
            self._sock.sendall(frame)

    def close(self):
        try:
            self._sock.close()
        except OSError:
            pass


class Receiver:
    """The driver's end: a TCP server that hands every authenticated message to on_message."""

    def __init__(self, secret, on_message, host="0.0.0.0"):
        receiver = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                stream = self.request.makefile("rb")
                while True:
                    header = stream.read(_HEADER.size + _MAC_BYTES)
                    if len(header) < _HEADER.size + _MAC_BYTES:
                        return
                    (length,) = _HEADER.unpack(header[: _HEADER.size])
                    if length > MAX_FRAME:
                        receiver.rejected += 1
                        return
                    payload = stream.read(length)
                    if len(payload) < length or not hmac.compare_digest(header[_HEADER.size:], _mac(secret, payload)):
                        receiver.rejected += 1
                        return  # unauthenticated: drop the connection, parse nothing
                    on_message(json.loads(payload))

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.rejected = 0
        self._server = Server((host, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ringtrain-spark-channel", daemon=True)
        self._thread.start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()
