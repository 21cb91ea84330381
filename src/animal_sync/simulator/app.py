"""The simulator's API with no sockets attached: routes, chaos draws and which request bodies get read."""

from __future__ import annotations

import json
import random
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from .data import PAGE_SIZE, Fault, _faulted_name, _list_item, _parse_faults, check_revised, default_total_animals, generate_animal
from .ledger import _item_problem, _Ledger, expected_home_record

__all__ = [
    "FAILURE_STATUSES",
    "HUGE_BODY_BYTES",
    "MAX_BATCH",
    "MAX_BODY_BYTES",
    "WRONG_ID_OFFSET",
    "Chaos",
    "SimulatorConfig",
]

MAX_BATCH = 100
FAILURE_STATUSES = (500, 502, 503, 504)
MAX_BODY_BYTES = 16 * 1024 * 1024
HUGE_BODY_BYTES = 20 * 1024 * 1024
WRONG_ID_OFFSET = 1_000_000

_JSON = "application/json"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_CALM_PATHS = frozenset({"/", "/_verify"})  # never touched by chaos
_LIST_PATH = "/animals/v1/animals"
_DETAIL_PREFIX = "/animals/v1/animals/"
_HOME_PATH = "/animals/v1/home"


class Chaos(Enum):
    """What chaos does to one request; `Simulator.queue_chaos` forces these for deterministic tests."""

    NONE = "none"
    STALL = "stall"
    FAIL = "fail"


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything a simulator run depends on; same config, same animals and same chaos odds."""

    host: str = "127.0.0.1"
    port: int = 3123  # 0 = ephemeral port
    animals: int | None = None  # None: 500..600 pages drawn from the seed, x10 animals
    seed: int = 1
    chaos: float = 2.0  # percent of requests (all paths but "/" and "/_verify"): half stall, half 5xx
    stall_min: float = 5.0  # seconds
    stall_max: float = 15.0
    strict: bool = False
    faults: Mapping[int, str] = field(default_factory=dict)  # id -> Fault value
    idle_timeout: float = 5.0  # seconds a keep-alive connection may wait for its next request
    # Ids whose animal changed upstream since an earlier run (another name, same page count): restart on the same
    # seed with these to model records revised between two syncs (what `run --incremental` must send again).
    revised: frozenset[int] = frozenset()


class _Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str = _JSON
    tail: Iterable[bytes] = ()  # streamed after body (huge_body), never held whole
    tail_length: int = 0


def _json_reply(status: int, payload: Any) -> _Reply:
    return _Reply(status, _ENCODER.encode(payload).encode())


def _detail(status: int, message: str) -> _Reply:
    return _json_reply(status, {"detail": message})


_TEXT = "text/plain; charset=utf-8"
_PLAIN_FAILURES = {status: _Reply(status, HTTPStatus(status).phrase.encode(), _TEXT) for status in FAILURE_STATUSES}


def _plain_failure(status: int = 500) -> _Reply:
    """The real server's bare 5xx: the status phrase as plain text (e.g. "Internal Server Error"), no JSON."""
    return _PLAIN_FAILURES[status]


def _is_json_type(content_type: str) -> bool:
    """application/json or application/*+json, parameters (charset) ignored."""
    media = content_type.partition(";")[0].strip().lower()
    return media == _JSON or (media.startswith("application/") and media.endswith("+json"))


def _body_refusal(transfer_encoding: str, content_length: str) -> _Reply | None:
    """Why a request's body will not be read (411, 413, 400), or None: decided before any `100 Continue` is owed."""
    if "chunked" in transfer_encoding.lower():
        return _detail(411, "send a Content-Length; chunked bodies are not supported")
    if not content_length.isdigit() or int(content_length) > MAX_BODY_BYTES:
        return _detail(413 if content_length.isdigit() else 400, f"unacceptable Content-Length {content_length!r}")
    return None


class _Draw(NamedTuple):
    kind: Chaos
    stall: float = 0.0
    status: int = 0


class _AnimalsApi:
    """Request in, reply out: the upstream's behaviour with no sockets attached."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.seed = config.seed
        self.total = default_total_animals(config.seed) if config.animals is None else config.animals
        self.total_pages = -(-self.total // PAGE_SIZE)
        self.faults = _parse_faults(config.faults, self.total)
        check_revised(config.revised, self.total)
        self.revised = config.revised
        self.ledger = _Ledger(
            self.total, config.strict, frozenset(i for i, f in self.faults.items() if not f.deliverable)
        )
        self._extra_listing: dict[int, list[int]] = {}  # page -> ids repeated on it
        self._grown_pages: set[int] = set()  # pages that report one page more
        for animal_id, fault in self.faults.items():
            page = animal_id // PAGE_SIZE + 1
            if fault is Fault.DUPLICATE_LISTING:
                self._extra_listing.setdefault(page + 1, []).append(animal_id)
            elif fault is Fault.TOTAL_PAGES_CHANGE:
                self._grown_pages.add(page)
        self._chaos_lock = threading.Lock()
        self._chaos_rng = random.Random(f"{config.seed}:chaos")
        self._forced: dict[str | None, deque[Chaos]] = {None: deque(), "GET": deque(), "POST": deque()}
        self.stalled = 0

    # chaos ------------------------------------------------------------------

    def draw_chaos(self, method: str = "GET") -> _Draw:
        """Decide one request's fate; all draws under one lock so a seed fixes the sequence of fates."""
        chaos = self.config.chaos
        forced = self._forced.get(method) or self._forced[None]
        if chaos <= 0 and not forced:
            return _Draw(Chaos.NONE)
        with self._chaos_lock:
            rng = self._chaos_rng
            if forced:
                kind = forced.popleft()
            else:
                roll = rng.random() * 100
                kind = Chaos.STALL if roll < chaos / 2 else Chaos.FAIL if roll < chaos else Chaos.NONE
            if kind is Chaos.STALL:
                return _Draw(kind, stall=rng.uniform(self.config.stall_min, self.config.stall_max))
            if kind is Chaos.FAIL:
                return _Draw(kind, status=rng.choice(FAILURE_STATUSES))
            return _Draw(kind)

    def force(self, outcomes: Iterable[Chaos], method: str | None = None) -> None:
        """Queue fates for the next chaos-eligible requests (of one method, if given), ahead of the random ones."""
        with self._chaos_lock:
            self._forced[method].extend(Chaos(o) for o in outcomes)

    def unforce(self) -> int:
        """Drop every queued fate not drawn yet, so a test's forced chaos cannot outlive the moment it was for."""
        with self._chaos_lock:
            dropped = sum(len(queue) for queue in self._forced.values())
            for queue in self._forced.values():
                queue.clear()
            return dropped

    def note_stall(self, delta: int) -> None:
        """Track how many requests are stalled right now (tests wait on it)."""
        with self._chaos_lock:
            self.stalled += delta

    # routes -----------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, body: bytes, content_type: str = _JSON) -> _Reply:
        """Route one request that chaos let through."""
        if path == _LIST_PATH or path.startswith(_DETAIL_PREFIX) or path in _CALM_PATHS:
            if method != "GET":
                return _detail(405, "Method Not Allowed")
            if path == _LIST_PATH:
                return self._list(query)
            if path == "/":
                return _json_reply(200, "Hello!")
            if path == "/_verify":
                return _json_reply(200, self.ledger.report())
            return self._animal(path[len(_DETAIL_PREFIX):])
        if path == _HOME_PATH:
            if method != "POST":
                return _detail(405, "Method Not Allowed")
            return self._home(body, content_type)
        return _detail(404, "Not Found")

    def _list(self, query: str) -> _Reply:
        raw = dict(parse_qsl(query)).get("page", "1")
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            return _detail(400, f"page must be an integer >= 1, got {raw!r}")
        page = int(raw)
        first = (page - 1) * PAGE_SIZE
        ids = list(self._extra_listing.get(page, ())) + list(range(first, min(first + PAGE_SIZE, self.total)))
        total_pages = self.total_pages + (1 if page in self._grown_pages else 0)
        items = [_list_item(self.seed, i, i in self.revised) for i in ids]
        return _json_reply(200, {"page": page, "total_pages": total_pages, "items": items})

    def _animal(self, raw_id: str) -> _Reply:
        if not (raw_id.isascii() and raw_id.isdigit()) or not int(raw_id) < self.total:
            return _plain_failure(500)  # upstream fails this way, every time
        animal_id = int(raw_id)
        record = generate_animal(self.seed, animal_id, animal_id in self.revised)
        fault = self.faults.get(animal_id)
        return _json_reply(200, record) if fault is None else _faulty_detail(record, fault)

    def _home(self, body: bytes, content_type: str) -> _Reply:
        # The whole batch is validated before any id is taken, as a pydantic-validated endpoint does.
        problem = None
        if not _is_json_type(content_type):
            problem = f"expected a JSON body (Content-Type application/json), got {content_type or 'none'!r}"
        else:
            try:
                batch = json.loads(body)
            except ValueError:
                problem = "body is not valid JSON"
            else:
                if not isinstance(batch, list):
                    problem = f"expected a JSON array of animals, got {type(batch).__name__}"
        if problem:
            self.ledger.reject()
            return _detail(422, problem)
        if len(batch) > MAX_BATCH:
            self.ledger.reject()
            return _detail(400, f"Sorry, only {MAX_BATCH} animals at a time (got {len(batch)})")
        for index, item in enumerate(batch):
            problem = _item_problem(item, self.total)
            if problem:
                self.ledger.reject()
                label = f"id {item['id']!r}" if isinstance(item, dict) and "id" in item else "no id"
                return _detail(422, f"item {index} ({label}): {problem}")
        if self.ledger.accept(batch, self.expected) is not None:
            return _plain_failure(500)  # strict: refused at a repeated id, the ids before it taken
        return _json_reply(200, {"message": f"Helped {len(batch)} find home"})

    def expected(self, animal_id: int) -> dict[str, Any]:
        """This run's expectation for one id, faults included."""
        return expected_home_record(self.seed, animal_id, self.faults, self.revised)



def _faulty_detail(record: dict[str, Any], fault: Fault) -> _Reply:
    """The detail response of an animal with a hostile-data fault."""
    if fault is Fault.HTML:
        return _Reply(200, b"<html>oops</html>", "text/html")
    if fault is Fault.HUGE_BODY:
        return _huge_detail(record)
    if fault is Fault.BAD_BORN_AT:
        record["born_at"] = "yesterday"
    elif fault is Fault.FRIENDS_TYPE:
        record["friends"] = 42
    elif fault is Fault.MISSING_NAME:
        del record["name"]
    elif fault is Fault.WRONG_ID:
        record["id"] += WRONG_ID_OFFSET
    elif fault is Fault.EXTRA_FIELDS:
        record.update(colour="red", legs=4)
    elif fault in (Fault.UNICODE_NAME, Fault.LONG_NAME):
        record["name"] = _faulted_name(record["name"], fault)
    body = _ENCODER.encode(record).encode()
    if fault is Fault.TRUNCATED:
        body = body[: len(body) // 2]
    return _Reply(200, body)


_PADDING_CHUNK = b"x" * 65536


def _huge_detail(record: dict[str, Any]) -> _Reply:
    """A valid animal padded to exactly HUGE_BODY_BYTES, produced chunk by chunk."""
    head = _ENCODER.encode(record).encode()[:-1] + b',"padding":"'
    tail_end = b'"}'
    padding = HUGE_BODY_BYTES - len(head) - len(tail_end)

    def chunks() -> Iterator[bytes]:
        left = padding
        while left > 0:
            piece = _PADDING_CHUNK[: min(left, len(_PADDING_CHUNK))]
            left -= len(piece)
            yield piece
        yield tail_end

    return _Reply(200, head, tail=chunks(), tail_length=padding + len(tail_end))
