"""A TCP fault proxy for one node's connections to the backend: pass, cut, blackhole or delay.

There is no netem, iptables or toxiproxy on these machines, so each node reaches the backend
through a port of its own on a :class:`ProxyHub`, and the harness changes that port's
:class:`Mode` to cut the node off, swallow its traffic, or slow it down, while every other node
keeps talking to the same server.

- ``pass`` forwards bytes both ways.
- ``cut`` closes every connection at once (RST) and resets each new one as soon as it is
  accepted: the node sees errors immediately, as when its host loses its route.
- ``blackhole`` keeps connections open and accepts new ones, but drops every byte: the node's
  calls hang until their own timeouts, as behind a partition that drops packets. A connection
  whose bytes were dropped has a broken protocol stream, so it is reset when the mode changes
  back (its driver would have timed out and given it up by then anyway). Idle connections that
  lost nothing survive, as they would a short partition.
- ``delay`` forwards each chunk ``delay`` seconds after it was read, in each direction, keeping
  order; a round trip gets ``2 * delay`` longer.

The hub runs one asyncio loop on a daemon thread for all its proxies. It is bounded: at most
``max_connections`` per proxy and ``MAX_QUEUED`` chunks queued per direction. It listens and
connects on loopback only, and it stops by itself after ``lifetime`` seconds so that a harness
that dies without cleaning up cannot leave it forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar

Kind = Literal["pass", "cut", "blackhole", "delay"]

#: Bytes read per chunk; lock traffic is a few hundred bytes per request.
CHUNK = 65536
#: Chunks waiting per direction before the reader waits for the writer (backpressure).
MAX_QUEUED = 256
#: Connections per proxy; more are reset at once.
MAX_CONNECTIONS = 64
#: How long opening the upstream connection may take.
CONNECT_TIMEOUT = 2.0
#: The hub stops itself after this long (seconds), whatever its owner does.
LIFETIME = 3 * 3600.0
#: How long a caller waits for the loop to apply a change.
CALL_TIMEOUT = 10.0

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Mode:
    """What a proxy does with its traffic; ``delay`` is seconds per direction."""

    kind: Kind
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.delay < 0 or (self.delay > 0 and self.kind != "delay"):
            raise ValueError(f"a delay belongs to mode 'delay' and is >= 0, got {self}")

    def __str__(self) -> str:
        return f"delay {self.delay * 1000:.0f} ms" if self.kind == "delay" else self.kind


PASS = Mode("pass")
CUT = Mode("cut")
BLACKHOLE = Mode("blackhole")


def delayed(seconds: float) -> Mode:
    """Every chunk forwarded ``seconds`` late in each direction."""
    return Mode("delay", seconds)


def check_loopback(host: str) -> str:
    """Refuse any address that is not loopback: the proxy must never reach beyond this machine."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the fault proxy only uses loopback addresses, not {host!r}")
    return host


@dataclass(eq=False)
class _Link:
    """One accepted connection and, unless blackholed from the start, its upstream twin."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    poisoned: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        """Reset both sides at once (no FIN handshake, nothing left to flush)."""
        for writer in (self.client, self.server):
            if writer is not None:
                writer.transport.abort()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()


@dataclass
class ProxyStats:
    """Counters for tests and reports."""

    accepted: int = 0
    reset: int = 0
    forwarded: int = 0
    dropped: int = 0


class FaultProxy:
    """Listens on ``port`` (loopback) and forwards to ``target``, as its :class:`Mode` says.

    Created by :meth:`ProxyHub.add`; every method may be called from any thread.
    """

    def __init__(self, hub: ProxyHub, target: tuple[str, int], max_connections: int) -> None:
        self._hub = hub
        self.target = target
        self.port = 0
        self.stats = ProxyStats()
        self._mode = PASS
        self._max = max_connections
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    @property
    def mode(self) -> Mode:
        """The mode now in force."""
        return self._mode

    @property
    def open_links(self) -> int:
        """Connections currently open through this proxy."""
        return len(self._links)

    def set(self, mode: Mode) -> None:
        """Switch mode; returns once it is in force (after ``cut``, every connection is gone)."""
        self._hub.call(self._apply(mode))

    def close(self) -> None:
        """Stop listening and reset every connection."""
        self._hub.call(self._close())

    # -- on the hub's loop -------------------------------------------------------------

    async def _listen(self, host: str) -> None:
        self._server = await asyncio.start_server(self._accept, host, 0, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _apply(self, mode: Mode) -> None:
        previous, self._mode = self._mode, mode
        if mode.kind == "cut":
            for link in list(self._links):
                self._drop(link)
        elif previous.kind == "blackhole" and mode.kind != "blackhole":
            for link in [link for link in self._links if link.poisoned]:
                self._drop(link)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._drop(link)

    def _drop(self, link: _Link) -> None:
        if link in self._links:
            self._links.discard(link)
            self.stats.reset += 1
        link.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        link = _Link(client=writer)
        if self._mode.kind == "cut" or len(self._links) >= self._max:
            self.stats.reset += 1
            link.abort()
            return
        self._links.add(link)
        if self._mode.kind == "blackhole":
            link.poisoned = True
            await self._swallow(reader, link)
            return
        try:
            upstream, server = await asyncio.wait_for(asyncio.open_connection(*self.target), CONNECT_TIMEOUT)
        except (OSError, TimeoutError):
            self._drop(link)
            return
        link.server = server
        if link not in self._links:  # cut while connecting
            link.abort()
            return
        loop = asyncio.get_running_loop()
        for source, sink in ((reader, server), (upstream, link.client)):
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(MAX_QUEUED)
            link.tasks.append(loop.create_task(self._read(source, queue, link)))
            link.tasks.append(loop.create_task(self._write(queue, sink, link)))

    async def _swallow(self, reader: asyncio.StreamReader, link: _Link) -> None:
        """A connection accepted during a blackhole: read and drop until it ends or is reset."""
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK):
                self.stats.dropped += len(data)
        self._drop(link)

    async def _read(
        self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]], link: _Link
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(CHUNK):
                mode = self._mode
                if mode.kind == "blackhole":
                    link.poisoned = True
                    self.stats.dropped += len(data)
                    continue
                await queue.put((loop.time() + mode.delay, data))
        except OSError:
            pass
        await queue.put((loop.time(), b""))

    async def _write(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self._mode.kind == "blackhole":
                    link.poisoned = True
                    self.stats.dropped += len(data)
                    continue
                writer.write(data)
                await writer.drain()
                self.stats.forwarded += len(data)
        except OSError:
            pass
        # Either side ending ends the link: lock clients never half-close on purpose.
        self._drop(link)


class ProxyHub:
    """An asyncio loop on a daemon thread serving many :class:`FaultProxy` ports.

    Use it as a context manager; it also stops itself after ``lifetime`` seconds.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", lifetime: float = LIFETIME, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        self.host = check_loopback(host)
        self.lifetime = lifetime
        self.max_connections = max_connections
        self.proxies: list[FaultProxy] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)
        self._stopped = threading.Event()

    def __enter__(self) -> ProxyHub:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """False once closed or past its lifetime."""
        return self._thread.is_alive() and not self._stopped.is_set()

    def start(self) -> None:
        """Start the loop thread."""
        self._thread.start()

    def add(self, target_port: int, target_host: str = "127.0.0.1") -> FaultProxy:
        """A new proxy to ``target_host:target_port``, listening on a free loopback port."""
        proxy = FaultProxy(self, (check_loopback(target_host), target_port), self.max_connections)
        self.call(proxy._listen(self.host))
        self.proxies.append(proxy)
        return proxy

    def call(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run ``work`` on the hub's loop and wait for its result."""
        if not self.running:
            work.close()
            raise RuntimeError("the proxy hub is not running")
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(CALL_TIMEOUT)

    def close(self) -> None:
        """Reset every connection, stop listening, and end the thread."""
        if self.running:
            with contextlib.suppress(RuntimeError, TimeoutError):
                self.call(self._close_all())
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread.is_alive():
            self._thread.join(CALL_TIMEOUT)

    async def _close_all(self) -> None:
        for proxy in self.proxies:
            await proxy._close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_later(self.lifetime, self._expire)
        try:
            self._loop.run_forever()
        finally:
            self._stopped.set()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(RuntimeError):
                self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    def _expire(self) -> None:
        """Past the lifetime: close everything and stop, whatever the owner does."""
        self._stopped.set()
        for proxy in self.proxies:
            if proxy._server is not None:
                proxy._server.close()
            for link in list(proxy._links):
                proxy._drop(link)
        self._loop.stop()


def local_port_open(port: int, timeout: float = 0.5) -> bool:
    """True when something accepts connections on loopback ``port`` (used by tests)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=timeout):
        return True
    return False
