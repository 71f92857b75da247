"""A TCP relay in front of the test PostgreSQL server, to take it down or make it hang.

Tests point a store URL at :attr:`Gate.url` instead of the server's: the server the other tests
share is never touched.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class Gate:
    """A TCP relay in front of the test server: ``open`` relays, ``down`` closes every new
    connection at once (a server that is gone), ``silent`` accepts and never answers (a hung one).

    ``hang_on`` (bytes) makes an open connection hang mid-session: once the client sends a
    message containing them, nothing more goes either way, and the connection stays open (a
    server that accepted the connection, answered the login and the first queries, then hung).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.sock = socket.create_server(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))
        self.mode = "open"
        self.hang_on: bytes | None = None
        self.hung = threading.Event()
        self.accepted = 0
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.mode == "down":
                conn.close()
            elif self.mode == "silent":
                self._held.append(conn)
            else:
                upstream = socket.create_connection(self.target)
                self._held += [conn, upstream]
                for a, b, client in ((conn, upstream, True), (upstream, conn, False)):
                    threading.Thread(target=self._pump, args=(a, b, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, client: bool) -> None:
        try:
            while data := src.recv(65536):
                if client and self.hang_on is not None and self.hang_on in data:
                    self.hung.set()
                if client and self.hung.is_set():
                    continue  # from here on, what clients say goes nowhere
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()
