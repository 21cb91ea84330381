"""The simulator behaves like the real server on the wire: each test reads raw bytes off a socket on 127.0.0.1.

Every case here is a difference between the real server (FastAPI on uvicorn) and an earlier simulator that a
client could trip on; the simulator's package docstring lists them.
"""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any

from animal_sync.simulator import Chaos, Simulator, SimulatorConfig

HOME = "/animals/v1/home"
LIST = "/animals/v1/animals"


def connect(sim: Simulator) -> socket.socket:
    port = int(sim.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A request's head (the body's headers if it has one); the caller sends the body when it chooses."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole answer (status, lower-cased headers, body) read by Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def next_bytes(sock: socket.socket) -> bytes | None:
    """What the server sends next: b"" for EOF or a reset, None if the socket's timeout passed with nothing."""
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""
    except TimeoutError:
        return None


def post_json(sock: socket.socket, payload: Any) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    sock.sendall(request("POST", HOME, body) + body)
    return read_answer(sock)


def wait_for(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never came"
        time.sleep(0.01)


def test_after_a_strict_500_the_next_request_on_that_connection_gets_no_answer(simulator):
    sim = simulator(animals=20, strict=True)
    batch = [sim.expected_record(i) for i in (1, 2)]
    with connect(sim) as sock:
        assert post_json(sock, batch)[0] == 200
        status, headers, body = post_json(sock, batch)  # a repeat: strict raises in the handler
        assert (status, body) == (500, b"Internal Server Error")
        assert headers["content-type"].startswith("text/plain") and "connection" not in headers
        try:
            sock.sendall(request("GET", "/"))
        except (BrokenPipeError, ConnectionResetError):
            return  # refused before it was even sent
        assert next_bytes(sock) == b"", "the connection should be dropped after an exception's answer"
    assert sim.verify()["duplicates_rejected"] == 1


def test_an_unknown_id_gets_a_plain_text_500_and_its_connection_is_dropped(simulator):
    sim = simulator(animals=20)
    with connect(sim) as sock:
        sock.sendall(request("GET", f"{LIST}/20"))
        status, headers, body = read_answer(sock)
        assert (status, body) == (500, b"Internal Server Error")
        assert headers["content-type"] == "text/plain; charset=utf-8" and "connection" not in headers
        try:
            sock.sendall(request("GET", "/"))
        except (BrokenPipeError, ConnectionResetError):
            return
        assert next_bytes(sock) == b"", "the connection should be dropped after an exception's answer"


def test_100_continue_comes_only_once_the_handler_reads_never_during_a_stall(simulator):
    sim = simulator(animals=20, stall_min=1.0, stall_max=1.0)
    sim.queue_chaos(Chaos.STALL, method="POST")
    body = json.dumps([sim.expected_record(0)]).encode()
    with connect(sim) as sock:
        sock.sendall(request("POST", HOME, body, {"Expect": "100-continue"}))  # the headers only
        wait_for(lambda: sim.stalled_requests == 1)
        sock.settimeout(0.3)
        assert next_bytes(sock) is None, "no 100 Continue while the request is stalled"
        sock.settimeout(10)
        assert next_bytes(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert read_answer(sock)[0] == 200
    assert sim.verify()["delivered"] == 1


def test_no_100_continue_before_a_chaos_5xx(simulator):
    sim = simulator(animals=20)
    sim.queue_chaos(Chaos.FAIL, method="POST")
    body = json.dumps([sim.expected_record(0)]).encode()
    with connect(sim) as sock:
        sock.sendall(request("POST", HOME, body, {"Expect": "100-continue"}))
        status, headers, answer = read_answer(sock)
    assert status in (500, 502, 503, 504) and headers["content-type"].startswith("text/plain")
    assert sim.verify()["delivered"] == 0


def test_without_a_stall_100_continue_comes_at_once(simulator):
    sim = simulator(animals=20)
    with connect(sim) as sock:
        sock.sendall(request("POST", HOME, b"[]", {"Expect": "100-continue"}))
        assert next_bytes(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"[]")
        assert read_answer(sock)[0] == 200


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(simulator):
    assert SimulatorConfig().idle_timeout == 5.0, "the real server's keep-alive: about 5 s"
    sim = simulator(animals=20, idle_timeout=0.5)
    with connect(sim) as sock:
        sock.sendall(request("GET", "/"))
        assert read_answer(sock)[0] == 200
        sock.sendall(request("GET", "/"))  # the same connection goes on while it is used
        assert read_answer(sock)[0] == 200
        answered = time.monotonic()
        assert next_bytes(sock) == b"", "an idle connection should be closed (EOF)"
        assert time.monotonic() - answered >= 0.4, "closed before the idle timeout"


def test_a_post_of_more_than_100_gets_400_with_the_real_servers_words(simulator):
    sim = simulator(animals=200)
    with connect(sim) as sock:
        status, headers, body = post_json(sock, [sim.expected_record(i) for i in range(101)])
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"detail": "Sorry, only 100 animals at a time"}
    assert sim.verify()["delivered"] == 0


def test_a_malformed_item_gets_422_in_fastapis_shape(simulator):
    sim = simulator(animals=20)
    batch = [sim.expected_record(i) for i in range(3)]
    del batch[1]["name"]
    batch[2]["friends"] = "Dog,Cat"
    with connect(sim) as sock:
        status, headers, body = post_json(sock, batch)
    assert status == 422 and headers["content-type"] == "application/json"
    detail = json.loads(body)["detail"]
    assert [(e["type"], e["loc"]) for e in detail] == [("missing", ["body", 1, "name"]),
                                                      ("list_type", ["body", 2, "friends"])]
    assert all(isinstance(e["msg"], str) and "input" in e for e in detail)
    assert sim.verify()["delivered"] == 0


def test_the_root_answers_hello(simulator):
    sim = simulator(animals=20, chaos=100)  # chaos spares the root
    with connect(sim) as sock:
        sock.sendall(request("GET", "/"))
        status, headers, body = read_answer(sock)
    assert (status, headers["content-type"], json.loads(body)) == (200, "application/json", "Hello!")


def test_the_server_is_uvicorn(simulator):
    sim = simulator(animals=20)
    with connect(sim) as sock:
        sock.sendall(request("GET", "/"))
        status, headers, _ = read_answer(sock)
    assert headers["server"] == "uvicorn" and re.match(r"\w{3}, \d\d \w{3} \d{4} ", headers["date"])
