"""Small raw-socket HTTP/1.1 servers on 127.0.0.1 that fail the way real servers do, one connection at a time.

Each accepted connection is served by the next `Conduct` in the server's script (then by `Conduct()`): it may
reset or close after a request's headers, close after reading its body without answering, answer before
reading the body, refuse a repeated id with uvicorn's 500 (no `Connection: close`) and then drop the connection
so that the next request on it meets a reset, or answer any status with any headers. `100 Continue` is sent only
when the handler goes to read the body, as uvicorn does.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections import Counter, deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Conduct:
    """How one connection is served, request after request."""

    after_headers: str | None = None  # "reset" or "close": on the first request, before any answer or body read
    close_after_body: bool = False  # read the first body, then close without a word
    strict: bool = True  # a repeated id is refused with a 500 after reading, and the connection then dropped
    reset_next: bool = False  # after the first answer, reset the connection at the next request's headers
    status: int | None = None  # answer this status to the first request (with `headers`), reading its body first
    early: bool = False  # with `status`: answer it before reading the body (no 100 Continue)
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Seen:
    delivered: Counter[int] = field(default_factory=Counter)
    refused: int = 0  # strict refusals of a repeated id
    requests: list[tuple[str, str]] = field(default_factory=list)
    bodies_read: int = 0
    connections: int = 0


class RawServer:
    def __init__(self, *script: Conduct) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.script: deque[Conduct] = deque(script)
        self.seen = Seen()
        self.lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def stop(self) -> None:
        self.sock.close()
        for conn in self._open:
            _close(conn)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.seen.connections += 1
                conduct = self.script.popleft() if self.script else Conduct()
                self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn, conduct), daemon=True).start()

    def _serve(self, conn: socket.socket, conduct: Conduct) -> None:
        reader = conn.makefile("rb")
        first, drop_next = True, False
        try:
            while True:
                head = _read_head(reader)
                if head is None:
                    return
                method, target, headers = head
                with self.lock:
                    self.seen.requests.append((method, target))
                if drop_next or (first and conduct.after_headers == "reset"):
                    return _reset(conn)
                if first and conduct.after_headers == "close":
                    return _close(conn)
                if first and conduct.status is not None and conduct.early:
                    _answer(conn, conduct.status, b"early", conduct.headers)
                    return _close(conn)  # the body was promised and never read: the connection cannot go on
                body = b""
                length = int(headers.get("content-length", "0"))
                if length:
                    if headers.get("expect", "").lower() == "100-continue":
                        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    body = reader.read(length)
                    if len(body) < length:
                        return _close(conn)  # the client hung up without its body (withheld): nothing was read
                    with self.lock:
                        self.seen.bodies_read += 1
                if first and conduct.close_after_body:
                    return _close(conn)
                if first and conduct.status is not None:
                    _answer(conn, conduct.status, b"scripted", conduct.headers)
                elif method == "POST":
                    ids = [item["id"] for item in json.loads(body)]
                    with self.lock:
                        repeated = conduct.strict and any(self.seen.delivered[i] for i in ids)
                        if repeated:
                            self.seen.refused += 1
                        else:
                            self.seen.delivered.update(ids)
                    if repeated:  # uvicorn after a handler's exception: 500, no Connection: close, then dropped
                        _answer(conn, 500, b"Internal Server Error", (("Content-Type", "text/plain; charset=utf-8"),))
                        drop_next = True
                    else:
                        _answer(conn, 200, json.dumps({"message": f"Helped {len(ids)} find home"}).encode())
                else:
                    _answer(conn, 200, b'{"id": 7}')
                drop_next = drop_next or (first and conduct.reset_next)
                first = False
        except OSError:
            return


def _read_head(reader) -> tuple[str, str, dict[str, str]] | None:
    line = reader.readline()
    if not line.strip():
        return None
    method, target, _ = line.decode().split(" ", 2)
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _answer(conn: socket.socket, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
    names = {name.lower() for name, _ in headers}
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *(f"{n}: {v}" for n, v in headers)]
    if "content-type" not in names:
        lines.append("Content-Type: application/json")
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a TCP RST
    conn.close()


def _close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()
