"""A TCP relay on loopback that can be cut off the way a published container port is.

Docker's userland proxy keeps listening on a published port while the container behind it
restarts: it accepts each connection, fails to reach the container and closes it. A TLS
client sees its handshake end in an EOF. `cut()` does that (and drops live connections, as
the container's exit does), or answers with given bytes first (something that is not TLS);
`mend()` relays again.
"""

import contextlib
import socket
import threading
from types import TracebackType


class Relay:
    """Relays 127.0.0.1:`port` to `target` until `cut()`; closes everything on exit."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0  # connections relayed so far
        self.refused = 0  # connections closed while cut
        self._cut = threading.Event()
        self._answer = b""
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> "Relay":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.listener.close()
        self.cut()

    def cut(self, answer: bytes = b"") -> None:
        """Drop live connections; from now on accept new ones, send `answer` and close them."""
        self._answer = answer
        self._cut.set()
        with self._lock:
            live, self._live = self._live, set()
        for sock in live:
            _close(sock)

    def mend(self) -> None:
        """Relay new connections again."""
        self._cut.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # the listener was closed
                return
            if self._cut.is_set():
                self.refused += 1
                threading.Thread(target=_refuse, args=(client, self._answer), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._live |= {client, upstream}
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until either side closes; then close both."""
    with contextlib.suppress(OSError):
        while data := source.recv(1 << 16):
            sink.sendall(data)
    _close(source)
    _close(sink)


def _refuse(client: socket.socket, answer: bytes) -> None:
    """Read the client's first bytes (a close with them unread would be a reset), answer, close."""
    with contextlib.suppress(OSError):
        client.settimeout(5)
        client.recv(1 << 16)
        client.sendall(answer)
    _close(client)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
