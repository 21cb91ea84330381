"""`serve`: a live page over one or more journals, `/metrics` for Prometheus, and a web trigger that is off by default.

Owns: the Starlette app (app.py), what the overview shows (overview.py), the animals search (animals.py), the HTML
(pages.py, static/), the Prometheus collector with its push and textfile (metrics.py), and the child runs the
trigger starts (trigger.py). It reads journals only through the journal package's typed reads and queries, read-only
and one short look at a time, so it never blocks the writer; it writes nothing to a journal, ever.
Must never import: the CLI (`cli/`), the API client or the engine (a run is started as a child process, the way a
person starts one), nor `sqlite3` (no SQL outside the journal package).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable

import uvicorn

from .app import LOOPBACK_HOSTS, ServeConfig, create_app
from .metrics import JournalCollector, push, registry_for, write_textfile

__all__ = ["LOOPBACK_HOSTS", "JournalCollector", "ServeConfig", "create_app", "listen", "push", "registry_for", "run_server", "server", "write_textfile"]


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: a free port), IPv4 or IPv6 as the host is; OSError when it is taken."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=128)


def server(config: ServeConfig) -> uvicorn.Server:
    """A uvicorn server for the app that ends its open event streams as it stops, so a browser left open never
    holds the stop up (nor ends it in a cancelled task's traceback)."""
    app = create_app(config)

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            app.state.stopping.set()
            await super().shutdown(sockets)

    return _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5))


def run_server(config: ServeConfig, sock: socket.socket, announce: Callable[[str], None] = print) -> None:
    """Serve the app with uvicorn on a bound socket in the foreground until Ctrl-C or SIGTERM.

    The socket is bound by the caller, so `--port 0` works and its URL is known. A stop asked for is the
    server's normal end: uvicorn raises the signal again once it has shut down, and it lands here, not as a kill.
    """
    host, port = sock.getsockname()[:2]
    announce(f"http://{f'[{host}]' if ':' in host else host}:{port}/")
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda *_: None) for signum in stops}
    try:
        server(config).run(sockets=[sock])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
