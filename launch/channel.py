"""The one network channel ringtrain opens itself, between a job's launcher and its ranks (and,
on Spark, between the barrier tasks and the driver): start-up, the pickled function, exit
records, results, live logs and failure reports.

Every frame is authenticated with HMAC-SHA256 under a per-job secret, over a nonce the server
chose for this connection and the frame's sequence number, so a frame can be neither forged nor
replayed. The secret reaches the ranks in their environment (through mpiexec, never on a command
line) or the Spark tasks in their closure; it is never logged. A connection must authenticate
with a small first frame within HELLO_TIMEOUT seconds, so an unauthenticated client can make the
server neither read a large frame nor hold a thread for long; a frame whose MAC does not verify
closes the connection unread. Frames carry a JSON header and optional bytes: the bytes of a
pickle are only unpickled after their frame verified."""
import hashlib
import hmac
import json
import os
import socket
import socketserver
import struct
import threading

_LENGTHS = struct.Struct("!IQ")      # JSON header length, data length
_SEQUENCE = struct.Struct("!Q")
_MAC_BYTES = 32
NONCE_BYTES = 16
MAX_HEADER = 1 << 20
MAX_HELLO = 4096
HELLO_TIMEOUT = 10.0
SECRET_VARIABLE = "RINGTRAIN_JOB_SECRET"
ADDRESS_VARIABLE = "RINGTRAIN_JOB_ADDRESS"


class ChannelError(RuntimeError):
    pass


def new_secret():
    return os.urandom(32)


def _mac(secret, nonce, direction, sequence, lengths, header, data):
    mac = hmac.new(secret, nonce + direction + _SEQUENCE.pack(sequence) + lengths, hashlib.sha256)
    mac.update(header)
    mac.update(data)
    return mac.digest()


def _read_exactly(stream, n):
    data = stream.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


class _Framing:
    """One side of a connection: sends and receives authenticated frames in order."""

    def __init__(self, sock, secret, nonce, sending, receiving):
        self._sock, self._secret, self._nonce = sock, secret, nonce
        self._stream = sock.makefile("rb")
        self._sending, self._receiving = sending, receiving
        self._sent = self._received = 0
        self._lock = threading.Lock()

    def send(self, message, data=b""):
        header = json.dumps(message).encode()
        lengths = _LENGTHS.pack(len(header), len(data))
        with self._lock:
            mac = _mac(self._secret, self._nonce, self._sending, self._sent, lengths, header, data)
            self._sent += 1
            self._sock.sendall(lengths + mac + header)
            if data:
                self._sock.sendall(data)

    def receive(self, max_data=None):
        """-> (message, data); EOFError at the end; ChannelError if a frame does not verify."""
        prefix = _read_exactly(self._stream, _LENGTHS.size + _MAC_BYTES)
        lengths, mac = prefix[:_LENGTHS.size], prefix[_LENGTHS.size:]
        header_length, data_length = _LENGTHS.unpack(lengths)
        if header_length > MAX_HEADER or (max_data is not None and data_length > max_data):
            raise ChannelError(f"frame too large before authentication ({header_length}+{data_length} bytes)")
        header = _read_exactly(self._stream, header_length)
        data = _read_exactly(self._stream, data_length) if data_length else b""
        expected = _mac(self._secret, self._nonce, self._receiving, self._received, lengths, header, data)
        if not hmac.compare_digest(mac, expected):
            raise ChannelError("a frame failed authentication")
        self._received += 1
        return json.loads(header), data

    def close(self):
        for closing in (self._stream.close, lambda: self._sock.shutdown(socket.SHUT_RDWR), self._sock.close):
            try:
                closing()
            except OSError:
                pass


class Server:
    """Accepts authenticated clients; calls handle(message, data, reply) for every frame, where
    reply(message, data=b"") answers on the same connection. Handlers run on one thread per
    connection."""

    def __init__(self, secret, handle, host="127.0.0.1"):
        server = self
        self.rejected = 0

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                nonce = os.urandom(NONCE_BYTES)
                self.request.settimeout(HELLO_TIMEOUT)
                try:
                    self.request.sendall(nonce)
                    framing = _Framing(self.request, secret, nonce, b"S", b"C")
                    hello, _ = framing.receive(max_data=0)
                    if hello.get("type") != "hello" or len(json.dumps(hello)) > MAX_HELLO:
                        raise ChannelError("the first frame was not a hello")
                except (ChannelError, EOFError, OSError, ValueError):
                    server.rejected += 1
                    return
                self.request.settimeout(None)  # authenticated: a job's ranks may be quiet for long
                while True:
                    try:
                        message, data = framing.receive()
                    except (EOFError, OSError):
                        return
                    except ChannelError:
                        server.rejected += 1
                        return
                    handle(message, data, framing.send)

        class TCPServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = TCPServer((host, 0), Handler)
        self.address = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ringtrain-channel", daemon=True)
        self._thread.start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()


class Client:
    """The connecting end: send() one-way frames, request() a reply."""

    def __init__(self, address, secret, timeout=30):
        host, port = address
        self._sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._sock.settimeout(None)
        nonce = _read_exactly(self._sock.makefile("rb"), NONCE_BYTES)
        self._framing = _Framing(self._sock, secret, nonce, b"C", b"S")
        self._framing.send({"type": "hello"})
        self._request_lock = threading.Lock()

    @classmethod
    def from_environment(cls, environ=None):
        """The client of the job this process belongs to (its launcher put the address and the
        secret in the environment); None when it was not started by a ringtrain launcher."""
        environ = os.environ if environ is None else environ
        if ADDRESS_VARIABLE not in environ or SECRET_VARIABLE not in environ:
            return None
        host, _, port = environ[ADDRESS_VARIABLE].rpartition(":")
        return cls((host, port), bytes.fromhex(environ[SECRET_VARIABLE]))

    def send(self, message, data=b""):
        self._framing.send(message, data)

    def request(self, message, data=b""):
        with self._request_lock:
            self._framing.send(message, data)
            return self._framing.receive()

    def close(self):
        self._framing.close()


def job_environment(address, secret):
    """What a launcher adds to its ranks' environment so that they reach its Server."""
    return {ADDRESS_VARIABLE: f"{address[0]}:{address[1]}", SECRET_VARIABLE: secret.hex()}


def interface_address(name):
    """The IPv4 address of network interface `name` (SIOCGIFADDR), or a clear error."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
        except OSError as exc:
            known = ", ".join(n for _, n in socket.if_nameindex())
            raise ChannelError(f"network interface {name!r} has no IPv4 address here ({exc.strerror}); "
                               f"this host has: {known}") from None
    return socket.inet_ntoa(packed[20:24])
