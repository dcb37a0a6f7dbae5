"""The job channel (ringtrain.launch.channel): authenticated frames only, no replay, and an
unauthenticated client can neither be heard nor hold the server."""
import socket
import struct
import time

import pytest

from ringtrain.launch import channel
from ringtrain.launch.channel import Client, Server


def wait_for(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.fixture
def server():
    got = []

    def handle(message, data, reply):
        got.append((message, data))
        if message.get("type") == "echo":
            reply({"type": "echoed"}, data[::-1])

    made = Server(b"k" * 32, handle)
    made.got = got
    yield made
    made.close()


def test_requests_and_bytes_round_trip(server):
    client = Client(server.address, b"k" * 32)
    big = bytes(range(256)) * 40000  # 10 MB after authentication is fine
    assert client.request({"type": "echo"}, big) == ({"type": "echoed"}, big[::-1])
    client.send({"type": "note", "n": 1})
    assert wait_for(lambda: len(server.got) == 2)
    client.close()
    assert server.rejected == 0


def test_a_client_with_the_wrong_secret_is_dropped_unheard(server):
    bad = Client(server.address, b"x" * 32)
    with pytest.raises((EOFError, OSError)):
        bad.request({"type": "echo"}, b"abc")
    assert wait_for(lambda: server.rejected == 1)
    assert server.got == []


class RecordingSocket:
    """A socket that keeps a copy of what is sent through it."""

    def __init__(self, sock):
        self.sock, self.sent = sock, []

    def sendall(self, data):
        self.sent.append(bytes(data))
        self.sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_a_replayed_frame_does_not_verify(server):
    """Frames are bound to the server's per-connection nonce and their sequence number."""
    sock = RecordingSocket(socket.create_connection(server.address))
    nonce = sock.recv(channel.NONCE_BYTES)
    framing = channel._Framing(sock, b"k" * 32, nonce, b"C", b"S")
    framing.send({"type": "hello"})
    sock.sent.clear()
    framing.send({"type": "pay", "amount": 1})
    assert wait_for(lambda: len(server.got) == 1)
    # the same bytes again on the same connection (the sequence moved on) and on a new one (new nonce)
    sock.sock.sendall(b"".join(sock.sent))
    assert wait_for(lambda: server.rejected == 1)
    other = socket.create_connection(server.address)
    other.recv(channel.NONCE_BYTES)
    other.sendall(b"".join(sock.sent))
    assert wait_for(lambda: server.rejected == 2)
    other.close()
    sock.close()
    assert len(server.got) == 1


def test_an_unauthenticated_client_cannot_send_a_large_frame_or_stay_silent(server, monkeypatch):
    sock = socket.create_connection(server.address)
    sock.recv(channel.NONCE_BYTES)
    sock.sendall(struct.pack("!IQ", 10, 1 << 40) + b"\0" * 32)  # announces a terabyte
    assert wait_for(lambda: server.rejected == 1)
    assert sock.recv(1) == b""  # the server closed it without reading on
    sock.close()
    monkeypatch.setattr(channel, "HELLO_TIMEOUT", 0.5)
    slow = Server(b"k" * 32, lambda *a: None)
    try:
        silent = socket.create_connection(slow.address)
        started = time.monotonic()
        assert wait_for(lambda: slow.rejected == 1, seconds=10)
        assert time.monotonic() - started < 5
        silent.close()
    finally:
        slow.close()


def test_the_client_reads_the_job_from_its_environment(server):
    env = channel.job_environment(server.address, b"k" * 32)
    client = Client.from_environment(env)
    assert client.request({"type": "echo"}, b"xy")[1] == b"yx"
    client.close()
    assert Client.from_environment({}) is None
    assert channel.interface_address("lo") == "127.0.0.1"
    with pytest.raises(channel.ChannelError, match="network interface 'nope0' has no IPv4 address"):
        channel.interface_address("nope0")
