"""The listening socket, bound before anything else starts.

uvicorn binds only once the application is built, and answers a busy port with a logged
error, `sys.exit(1)` and, through the task groups around it, a long traceback. Bound here
first, a busy port is one line saying what to do, before the database is even started.
"""

from __future__ import annotations

import errno
import socket

from mindscape.errors import StartupError


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening), inheritable by worker processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn decides it
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use (another server is listening there): "
                "stop that server or choose another port with --port"
            ) from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port") from None
    sock.set_inheritable(True)
    return sock
