"""A loopback TCP relay that counts round trips, whatever the driver or protocol.

A round trip starts each time the client speaks after the server has (or for the first time):
a request written in several pieces, or several pipelined commands sent before any answer,
count once, and every answer the client must wait for before it speaks again counts as the end
of one. Counts are kept per connection so a driver's monitoring or listening connections can
be told apart from the one that did the work.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType

_CHUNK = 65536
_BACKLOG = 64


@dataclass(slots=True)
class Link:
    """One client connection through the relay, and the round trips seen on it."""

    client: socket.socket
    server: socket.socket
    turns: int = 0
    _last: str = field(default="", repr=False)

    def pump(self) -> None:
        """Relay until either side closes; runs on its own thread."""
        selector = selectors.DefaultSelector()
        selector.register(self.client, selectors.EVENT_READ, "client")
        selector.register(self.server, selectors.EVENT_READ, "server")
        try:
            while True:
                for key, _ in selector.select():
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(_CHUNK)
                    if not data:
                        return
                    if key.data == "client":
                        if self._last != "client":
                            self.turns += 1
                        self._last = "client"
                        self.server.sendall(data)
                    else:
                        self._last = "server"
                        self.client.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            self.close()

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.close()


class CountingProxy:
    """Listens on 127.0.0.1 on a free port and relays every connection to ``upstream``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(_BACKLOG)
        self.port: int = self._listener.getsockname()[1]
        self.links: list[Link] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="bench-proxy", daemon=True).start()

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = Link(client, server)
            with self._lock:
                self.links.append(link)
            threading.Thread(target=link.pump, name="bench-proxy-link", daemon=True).start()

    def turns(self) -> list[int]:
        """Round trips so far, per connection, in the order the connections were made."""
        with self._lock:
            return [link.turns for link in self.links]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for link in self.links:
                link.close()
