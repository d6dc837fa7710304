"""The fault proxy on its own, against a loopback echo server: each mode does what it claims."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.chaos.proxy import BLACKHOLE, CUT, PASS, Mode, ProxyHub, delayed

QUIET = 0.3
DELAY = 0.25


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub() -> Iterator[ProxyHub]:
    with ProxyHub() as made:
        yield made


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=2.0)
    sock.settimeout(2.0)
    return sock


def _round_trip(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


def _is_reset(sock: socket.socket) -> bool:
    """True when the connection is gone: a read gives EOF or a reset instead of waiting."""
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_pass_forwards_both_ways(hub: ProxyHub, echo_port: int) -> None:
    proxy = hub.add(echo_port)
    with _connect(proxy.port) as sock:
        assert _round_trip(sock, b"hello" * 1000) == b"hello" * 1000
    assert proxy.stats.forwarded >= 5000


def test_cut_resets_open_connections_and_every_new_one_until_passed_again(
    hub: ProxyHub, echo_port: int
) -> None:
    proxy = hub.add(echo_port)
    with _connect(proxy.port) as before:
        assert _round_trip(before) == b"ping"
        proxy.set(CUT)
        assert proxy.open_links == 0
        assert _is_reset(before)
    with _connect(proxy.port) as during:
        assert _is_reset(during)
    proxy.set(PASS)
    with _connect(proxy.port) as after:
        assert _round_trip(after) == b"ping"


def test_blackhole_keeps_connections_open_but_swallows_every_byte(hub: ProxyHub, echo_port: int) -> None:
    proxy = hub.add(echo_port)
    with _connect(proxy.port) as idle, _connect(proxy.port) as busy:
        assert _round_trip(busy) == b"ping"
        proxy.set(BLACKHOLE)
        busy.settimeout(QUIET)
        busy.sendall(b"lost")
        with pytest.raises(TimeoutError):
            busy.recv(16)
        with _connect(proxy.port) as new:
            new.settimeout(QUIET)
            new.sendall(b"lost too")
            with pytest.raises(TimeoutError):
                new.recv(16)
            assert proxy.stats.dropped >= len(b"lost")
            proxy.set(PASS)
            assert _is_reset(new), "a connection accepted during the blackhole has no upstream"
        busy.settimeout(2.0)
        assert _is_reset(busy), "a connection that lost bytes must not carry a broken stream on"
        assert _round_trip(idle) == b"ping", "an idle connection lost nothing and survives"


def test_delay_adds_twice_the_delay_to_a_round_trip_and_keeps_order(hub: ProxyHub, echo_port: int) -> None:
    proxy = hub.add(echo_port)
    proxy.set(delayed(DELAY))
    with _connect(proxy.port) as sock:
        started = time.monotonic()
        for part in (b"a", b"b", b"c"):
            sock.sendall(part)
        received = b""
        while len(received) < 3:
            received += sock.recv(16)
        took = time.monotonic() - started
    assert received == b"abc"
    assert 2 * DELAY <= took < 4 * DELAY, f"round trip took {took:.3f} s with {DELAY} s each way"
    proxy.set(PASS)
    with _connect(proxy.port) as sock:
        started = time.monotonic()
        assert _round_trip(sock) == b"ping"
        assert time.monotonic() - started < DELAY


def test_the_hub_stops_by_itself_after_its_lifetime(echo_port: int) -> None:
    with ProxyHub(lifetime=0.3) as hub:
        proxy = hub.add(echo_port)
        with _connect(proxy.port) as sock:
            assert _round_trip(sock) == b"ping"
            time.sleep(0.6)
            assert not hub.running
            assert _is_reset(sock)
        with pytest.raises(RuntimeError):
            hub.add(echo_port)


def test_connections_beyond_the_bound_are_reset(echo_port: int) -> None:
    with ProxyHub(max_connections=2) as hub:
        proxy = hub.add(echo_port)
        with _connect(proxy.port) as one, _connect(proxy.port) as two:
            assert _round_trip(one) == b"ping" and _round_trip(two) == b"ping"
            with _connect(proxy.port) as three:
                assert _is_reset(three)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.com"])
def test_only_loopback_addresses_are_accepted(hub: ProxyHub, host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        hub.add(1, target_host=host)
    with pytest.raises(ValueError, match="loopback"):
        ProxyHub(host=host)


def test_a_delay_outside_mode_delay_is_refused() -> None:
    with pytest.raises(ValueError):
        Mode("pass", 0.1)
    assert str(delayed(0.05)) == "delay 50 ms"
