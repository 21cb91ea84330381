"""The simulator's HTTP server: keep-alive, idle hang-ups, late `100 Continue`, and `Simulator` running it in threads."""

from __future__ import annotations

import errno
import socket
import socketserver
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import PortTaken, SimulatorError
from .app import (
    _CALM_PATHS,
    _JSON,
    MAX_BODY_BYTES,
    Chaos,
    SimulatorConfig,
    _AnimalsApi,
    _body_refusal,
    _plain_failure,
    _Reply,
)
from .data import check_animal_count

__all__ = ["LINGER_SECONDS", "Simulator"]

LINGER_SECONDS = 1.0  # how long a connection closed on an unread body keeps dropping what the client sends

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


class _Handler(BaseHTTPRequestHandler):
    """One keep-alive connection; writes each reply in a single send so Nagle never delays it."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    error_content_type = _JSON
    error_message_format = '{"detail":"%(code)d %(message)s"}'
    server: _Server
    _continue_due = False  # the client sent `Expect: 100-continue` and has not been told to go on yet

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the per-request access log."""

    def handle(self) -> None:
        """Serve requests until the client or a reply ends the connection, or it idles past idle_timeout."""
        idle = self.server.api.config.idle_timeout
        self.close_connection = False
        while not self.close_connection:
            # Only the wait for a request's first byte is timed: a stall or a slow body is never cut.
            self.connection.settimeout(idle)
            try:
                if not self.rfile.peek(1):
                    return  # the client closed
            except (TimeoutError, OSError):
                return  # idle too long: hang up, as the real server does
            self.connection.settimeout(None)
            self.handle_one_request()

    def parse_request(self) -> bool:
        self._continue_due = False
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        """Defer `100 Continue` until the body is read (stdlib sends it as soon as the headers are parsed)."""
        self._continue_due = True
        return True

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _serve(self) -> None:
        api = self.server.api
        path, _, query = self.path.partition("?")
        if path not in _CALM_PATHS:
            draw = api.draw_chaos(self.command)
            if draw.kind is Chaos.FAIL:  # answered at once, unhandled, its body never read
                self._send_unread(_plain_failure(draw.status))
                return
            if draw.kind is Chaos.STALL and not self._stall(draw.stall):
                self.close_connection = True
                return
        body = self._read_body()
        if body is None:
            return
        content_type = self.headers.get("Content-Type", "")
        self._send(api.handle(self.command, path, query, body, content_type))

    def _stall(self, seconds: float) -> bool:
        """Sleep before handling; False if the simulator stopped meanwhile (then nothing is handled)."""
        api = self.server.api
        api.note_stall(+1)
        try:
            return not self.server.stopping.wait(seconds)
        finally:
            api.note_stall(-1)

    def _read_body(self) -> bytes | None:
        """The request body, after any deferred `100 Continue`; None if it was refused or never fully came."""
        raw = self.headers.get("Content-Length", "0")
        refusal = _body_refusal(self.headers.get("Transfer-Encoding", ""), raw)
        if refusal is not None:
            self._send_unread(refusal)
            return None
        length = int(raw)
        if length == 0:
            return b""
        if self._continue_due:
            self._continue_due = False
            try:
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                self.close_connection = True
                return None
        body = self.rfile.read(length)
        if len(body) < length:  # the client left before sending it all: nothing to handle
            self.close_connection = True
            return None
        return body

    def _send_unread(self, reply: _Reply) -> None:
        """Answer without reading the request's body; if there is one, the connection cannot go on, so close it."""
        unread = self.headers.get("Content-Length", "0") not in ("", "0") or "Transfer-Encoding" in self.headers
        if unread:
            self.close_connection = True
        self._send(reply)
        if unread:
            self._linger()

    def _linger(self) -> None:
        """Close after a reply that left the body unread: stop sending, then drop what still arrives, briefly.

        Closing with unread bytes would send a TCP reset, which can destroy the reply before the client reads it.
        """
        connection = self.connection
        try:
            connection.shutdown(socket.SHUT_WR)
            connection.settimeout(LINGER_SECONDS)
            dropped = 0
            while dropped <= MAX_BODY_BYTES:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                dropped += len(chunk)
        except OSError:
            pass

    def _send(self, reply: _Reply) -> None:
        head = b"%sContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            _STATUS_LINES[reply.status],
            reply.content_type.encode(),
            len(reply.body) + reply.tail_length,
            b"Connection: close\r\n" if self.close_connection else b"",
        )
        try:
            self.wfile.write(head + (b"" if self.command == "HEAD" else reply.body))
            for chunk in reply.tail:
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left; what it asked for was still handled


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], api: _AnimalsApi) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve our own name (getfqdn), a slow DNS round trip we do not need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        """Hang up on every open connection, so stop() leaves no thread waiting on a client."""
        with self._connections_lock:
            for connection in list(self._connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-request is normal here; anything else is a bug worth one line."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            print(f"simulator: {type(error).__name__}: {error}", file=sys.stderr)


class Simulator:
    """Runs the API in background threads; a context manager (start on enter, stop on exit)."""

    def __init__(self, config: SimulatorConfig) -> None:
        if not 0 <= config.chaos <= 100:
            raise SimulatorError(f"chaos must be a percentage 0..100, got {config.chaos}")
        if not 0 <= config.stall_min <= config.stall_max:
            raise SimulatorError(f"stalls need 0 <= stall_min <= stall_max, got {config.stall_min}..{config.stall_max}")
        if config.animals is not None:
            check_animal_count(config.animals)
        if config.idle_timeout <= 0:
            raise SimulatorError(f"idle_timeout must be positive, got {config.idle_timeout}")
        self.config = config
        self._api = _AnimalsApi(config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def total_animals(self) -> int:
        return self._api.total

    @property
    def total_pages(self) -> int:
        return self._api.total_pages

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:3123 (the real port once started with port 0)."""
        host, port = self.config.host, self.config.port
        if self._server is not None:
            port = self._server.server_port
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def stalled_requests(self) -> int:
        """How many requests are sleeping in a chaos stall right now."""
        return self._api.stalled

    def start(self) -> Simulator:
        """Bind and serve in a daemon thread; SimulatorError (one line) if the address is unusable."""
        if self._server is not None:
            return self
        host, port = self.config.host, self.config.port
        try:
            self._server = _Server((host, port), self._api)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortTaken(host, port) from None
            raise SimulatorError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="animals-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake any stalled request, close the socket and open connections; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def verify(self) -> dict[str, Any]:
        """The same document as GET /_verify."""
        return self._api.ledger.report()

    def reset_verification(self) -> None:
        """Forget all deliveries, so one simulator can serve several test cases."""
        self._api.ledger.reset()

    def queue_chaos(self, *outcomes: Chaos, method: str | None = None) -> None:
        """Force the fates of the next chaos-eligible requests (in arrival order), whatever the chaos rate.

        With `method="POST"` only POSTs draw from this queue: a test can stall exactly the next batch.
        """
        self._api.force(outcomes, method)

    def drop_queued_chaos(self) -> int:
        """Forget the forced fates no request has drawn yet (of every method); how many were dropped.

        A harness that queues stalls to pause a client it then kills drops the rest, so they do not fall on the
        next client instead: a real server's chaos is 1 in 100, never a queue of stalls waiting for a resume.
        """
        return self._api.unforce()

    def expected_record(self, animal_id: int) -> dict[str, Any]:
        """What a correct client posts for this id in this run (faults included)."""
        return self._api.expected(animal_id)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
