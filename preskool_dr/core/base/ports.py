"""A free TCP port for a private server (the PITR scratch server, the demo's cluster)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nobody listens on now on 127.0.0.1 (the kernel's pick; free until taken)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
