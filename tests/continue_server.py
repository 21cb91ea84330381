"""A small raw HTTP/1.1 server on 127.0.0.1 that models how the real API's server (uvicorn) treats 100-continue.

Chaos comes *before* the handler: a stall sleeps first, a chaos 5xx answers at once with the body unread (and
closes the connection). `100 Continue` is sent only when the handler starts reading the body, so after any
stall. A handler that finds the client gone when it goes to read the body handles nothing. With
`speaks_continue=False` it ignores `Expect` like an HTTP/1.0 proxy, and simply reads the body.

It also serves a tiny listing (one page) and details, so a whole pipeline can run against it.
"""

from __future__ import annotations

import json
import socketserver
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

HOME = "/animals/v1/home"
LIST = "/animals/v1/animals"


@dataclass(frozen=True)
class Fate:
    """What happens to one POST (GETs are always served)."""

    stall: float = 0.0  # seconds before the handler runs
    fail_before: int | None = None  # a chaos status answered at once, body unread
    retry_after: str | None = None  # with fail_before: its Retry-After header (urllib3 re-sends a 429 or 413 with one)
    fail_after: bool = False  # the handler reads the body, then answers 500 (a strict API's repeat)
    hang_up: bool = False  # the connection is closed before the handler runs (an idle keep-alive timeout)
    lose_answer: bool = False  # the handler reads the body, takes nothing, and the connection closes unanswered
    refuse: int | None = None  # the handler reads the body and refuses it with this status (a 422 judges content)


@dataclass
class Ledger:
    delivered: Counter[int] = field(default_factory=Counter)
    posts: int = 0  # POST requests whose headers arrived
    bodies_read: int = 0
    abandoned: int = 0  # handlers that went to read a body and found the client gone
    continues_sent: int = 0
    connections: int = 0


class ContinueServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ids: list[int] | None = None, *, speaks_continue: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Connection)
        self.ids = ids or []
        self.speaks_continue = speaks_continue
        self.fates: deque[Fate] = deque()
        self.ledger = Ledger()
        self.lock = threading.Lock()
        self.released = threading.Event()  # ends every stall at teardown
        self.handlers_done = threading.Semaphore(0)  # one release per finished POST handler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def script(self, *fates: Fate) -> None:
        self.fates.extend(fates)

    def start(self) -> ContinueServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()


class _Connection(socketserver.StreamRequestHandler):
    server: ContinueServer

    def handle(self) -> None:
        with self.server.lock:
            self.server.ledger.connections += 1
        while self._one_request():
            pass

    def _one_request(self) -> bool:
        """Serve one request; False when the connection is to be closed."""
        request_line = self.rfile.readline()
        if not request_line.strip():
            return False
        method, target, _ = request_line.decode().split(" ", 2)
        headers: dict[str, str] = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if method == "GET":
            return self._get(target)
        return self._post(headers)

    def _post(self, headers: dict[str, str]) -> bool:
        server = self.server
        with server.lock:
            server.ledger.posts += 1
            fate = server.fates.popleft() if server.fates else Fate()
        try:
            if fate.stall:
                server.released.wait(fate.stall)
            if fate.hang_up:
                return False
            if fate.fail_before is not None:
                extra = {"Retry-After": fate.retry_after} if fate.retry_after is not None else {}
                self._answer(fate.fail_before, b"Service Unavailable", "text/plain", close=True, headers=extra)
                return False
            # The handler starts reading the body: only now is 100 Continue sent.
            if headers.get("expect", "").lower() == "100-continue" and server.speaks_continue:
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                with server.lock:
                    server.ledger.continues_sent += 1
            length = int(headers.get("content-length", "0"))
            body = self.rfile.read(length)
            if len(body) < length:
                with server.lock:
                    server.ledger.abandoned += 1
                return False
            with server.lock:
                server.ledger.bodies_read += 1
            if fate.fail_after:
                self._answer(500, b"Internal Server Error", "text/plain")
                return True
            if fate.lose_answer:
                return False
            if fate.refuse is not None:
                self._answer(fate.refuse, json.dumps({"detail": [{"type": "scripted", "loc": ["body", 0]}]}).encode())
                return True
            ids = [item["id"] for item in json.loads(body)]
            with server.lock:
                server.ledger.delivered.update(ids)
            self._answer(200, json.dumps({"message": f"Helped {len(ids)} find home"}).encode())
            return True
        except (BrokenPipeError, ConnectionResetError):
            with server.lock:
                server.ledger.abandoned += 1
            return False
        finally:
            server.handlers_done.release()

    def _get(self, target: str) -> bool:
        path, _, query = target.partition("?")
        if path == LIST:
            items = [{"id": i, "name": f"a{i}", "born_at": None} for i in self.server.ids] if query == "page=1" else []
            self._answer(200, json.dumps({"page": 1, "total_pages": 1, "items": items}).encode())
        else:
            animal_id = int(path.rsplit("/", 1)[1])
            detail: dict[str, Any] = {"id": animal_id, "name": f"a{animal_id}", "born_at": None, "friends": ""}
            self._answer(200, json.dumps(detail).encode())
        return True

    def _answer(
        self, status: int, body: bytes, content_type: str = "application/json", *, close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        if close:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode() + b"\r\n" + body)
