"""A small HTTP/1.1 server on 127.0.0.1 that serves the listing pages and detail bodies a test scripts, byte for
byte, and takes POSTs to /home as the real API does (100 Continue before the body is read, ids counted).

For hostile bodies the simulator has no fault for: a page or a record nested 100,000 deep, markup in names.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LIST = "/animals/v1/animals"
HOME = "/animals/v1/home"

__all__ = ["ScriptedServer", "listing"]


def listing(page: int, total_pages: int, items: list[Any]) -> bytes:
    return json.dumps({"page": page, "total_pages": total_pages, "items": items}).encode()


class ScriptedServer(ThreadingHTTPServer):
    """`pages[n]` is page n's body (a page not scripted lists nothing); `details[id]` is that id's detail body."""

    daemon_threads = True

    def __init__(self, pages: Mapping[int, bytes], details: Mapping[int, bytes], total_pages: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pages, self.details, self.total_pages = dict(pages), dict(details), total_pages
        self.delivered: Counter[int] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a stopping run cuts its GETs) is no error; anything else is printed as before.

        socketserver printed the reset's traceback to stderr, which the tests read as the CLI's own output."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer
    protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` answered before the body is read
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK wait between them

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        server = self.server
        if path == LIST:
            page = int(query.removeprefix("page="))
            self._answer(200, server.pages.get(page) or listing(page, server.total_pages, []))
        elif path.startswith(LIST + "/") and int(path.rsplit("/", 1)[1]) in server.details:
            self._answer(200, server.details[int(path.rsplit("/", 1)[1])])
        else:
            self._answer(500, b"Internal Server Error", "text/plain")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ids = [item["id"] for item in json.loads(body)]
        with self.server.lock:
            self.server.delivered.update(ids)
        self._answer(200, json.dumps({"message": f"Helped {len(ids)} find home"}).encode())

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
