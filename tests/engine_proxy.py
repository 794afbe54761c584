"""A stand-in for the Docker engine's socket, for tests: a Unix socket forwarding to the engine's,
that records what its clients sent and can be cut (the engine gone) and restored."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path


class EngineProxy:
    """A Unix socket at ``path`` forwarding to the engine's at ``engine``; ``sent`` holds every byte
    its clients sent (their HTTP requests)."""

    def __init__(self, path: Path, engine: str = "/var/run/docker.sock") -> None:
        self.path, self.engine = path, engine
        self.sent = bytearray()
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        """Listen (again) at ``path``."""
        self.listener = socket.socket(socket.AF_UNIX)
        self.path.unlink(missing_ok=True)
        self.listener.bind(str(self.path))
        self.listener.listen(16)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        """The engine gone: connections refused, open ones dropped."""
        assert self.listener is not None
        self.listener.close()
        self.path.unlink(missing_ok=True)
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
                c.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.engine)
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                if record:
                    self.sent += data
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)
