"""The simulator's ASGI app on Starlette, shaped like the real FastAPI server: chaos middleware, routes, state.

Chaos is a middleware in front of the routes, as on the real server: it stalls (an asyncio sleep) and then lets
the request through, or answers a plain-text 5xx at once without reading the body, so uvicorn sends no
`100 Continue` for it. A strict refusal and an unknown detail id are exceptions raised in the handler, answered by
Starlette's ServerErrorMiddleware and uvicorn (500, text/plain, then the connection dropped), the real server's way.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from http import HTTPStatus
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import models
from .data import PAGE_SIZE, Fault, _faulted_name, _list_item, _parse_faults, check_revised, default_total_animals, generate_animal
from .ledger import _Ledger, expected_home_record

__all__ = [
    "FAILURE_STATUSES",
    "HUGE_BODY_BYTES",
    "MAX_BATCH",
    "WRONG_ID_OFFSET",
    "Chaos",
    "SimulatorConfig",
    "ORPHAN_BODY",
    "SimulatorException",
    "StrictRefusal",
    "UnknownAnimal",
    "build_app",
]

MAX_BATCH = 100
FAILURE_STATUSES = (500, 502, 503, 504)
HUGE_BODY_BYTES = 20 * 1024 * 1024
WRONG_ID_OFFSET = 1_000_000

_JSON = "application/json"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_CALM_PATHS = frozenset({"/", "/_verify"})  # never touched by chaos


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
    idle_timeout: float = 5.0  # seconds a keep-alive connection may wait for its next request (uvicorn's own)
    # Ids whose animal changed upstream since an earlier run (another name, same page count): restart on the same
    # seed with these to model records revised between two syncs (what `run --incremental` must send again).
    revised: frozenset[int] = frozenset()


class _Draw(NamedTuple):
    kind: Chaos
    stall: float = 0.0
    status: int = 0


class _AnimalsApi:
    """The upstream's state behind the routes: its animals, faults, chaos draws and the ledger."""

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

    # the path operations, plain functions run in the threadpool as FastAPI runs a `def` one ---------------

    def page(self, page: int) -> models.Animals:
        """One listing page (ids 10(p-1)..10p-1), with any fault's repeated id or grown page count."""
        first = (page - 1) * PAGE_SIZE
        ids = list(self._extra_listing.get(page, ())) + list(range(first, min(first + PAGE_SIZE, self.total)))
        total_pages = self.total_pages + (1 if page in self._grown_pages else 0)
        items = [models.AnimalSummary(**_list_item(self.seed, i, i in self.revised)) for i in ids]
        return models.Animals(page=page, total_pages=total_pages, items=items)

    def animal(self, raw_id: str) -> models.Animal:
        """One animal; an id that is none here raises, as the real server's lookup does (a bare 500)."""
        if not (raw_id.isascii() and raw_id.isdigit()) or not int(raw_id) < self.total:
            raise UnknownAnimal(raw_id)
        animal_id = int(raw_id)
        return models.Animal(**generate_animal(self.seed, animal_id, animal_id in self.revised))

    def take(self, batch: list[dict[str, Any]]) -> dict[str, str]:
        """Deliver a validated batch; strict mode raises at the first id already delivered (the ids before it stay)."""
        refused_at = self.ledger.accept(batch, self.expected)
        if refused_at is not None:
            raise StrictRefusal(f"id {refused_at} was delivered before")
        return {"message": f"Helped {len(batch)} find home"}

    def expected(self, animal_id: int) -> dict[str, Any]:
        """This run's expectation for one id, faults included."""
        return expected_home_record(self.seed, animal_id, self.faults, self.revised)




class SimulatorException(Exception):
    """An exception the simulator raises in a handler on purpose, as the real server does: answered as a bare 500."""


class StrictRefusal(SimulatorException):
    """Strict mode met an id already delivered: the real server raises, and uvicorn answers 500 and hangs up."""


class UnknownAnimal(SimulatorException):
    """A detail id that is no animal here: the real server's lookup raises, every time."""


class ChaosMiddleware:
    """Chaos before the handler: a stall (then the request is handled), or a plain 5xx with the body unread."""

    def __init__(self, app: ASGIApp, api: _AnimalsApi) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _CALM_PATHS:
            await self.app(scope, receive, send)
            return
        draw = self.api.draw_chaos(scope["method"])
        if draw.kind is Chaos.FAIL:  # answered at once, unhandled, its body never read
            await _PLAIN_FAILURES[draw.status](scope, receive, send)
            return
        if draw.kind is Chaos.STALL:
            # Counted until answered, not only while asleep: a test that waits for no stalled request left then
            # knows the stalled one was handled (the handler's thread hop comes after the sleep).
            self.api.note_stall(+1)
            try:
                await asyncio.sleep(draw.stall)  # cancelled by Simulator.stop(): then nothing is handled
                await self.app(scope, _left_behind(scope, receive), send)
            finally:
                self.api.note_stall(-1)
            return
        await self.app(scope, receive, send)


# Where the server's protocol leaves the body of a request whose client hung up once the whole body was in.
ORPHAN_BODY = "animal_sync.orphan_body"


def _left_behind(scope: Scope, receive: Receive) -> Receive:
    """A receive that still hands out the body a client sent before it gave up during the stall.

    The real server may still handle a POST whose client gave up during a stall. Plain uvicorn handles it only if
    the client is still connected when the handler reads; the simulator takes the harsh side of that "may" and
    handles every request whose whole body arrived, so a client can never take a POST it gave up on as unsent.
    A body held back for `100 Continue` and never sent is not there to handle, as on the real server.
    """
    handed_out = False

    async def receive_left_behind() -> Any:
        nonlocal handed_out
        message = await receive()
        body = scope.get(ORPHAN_BODY)
        if message["type"] == "http.disconnect" and body is not None and not handed_out:
            handed_out = True
            return {"type": "http.request", "body": body, "more_body": False}
        return message

    return receive_left_behind


_PLAIN_FAILURES = {status: PlainTextResponse(HTTPStatus(status).phrase, status) for status in FAILURE_STATUSES}


def _json(content: bytes, status: int = 200) -> Response:
    return Response(content, status, media_type=_JSON)


def _detail(status: int, detail: Any) -> Response:
    """FastAPI's error answer: {"detail": ...} as JSON."""
    return JSONResponse({"detail": detail}, status)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in FastAPI's JSON shape, as the real server answers them."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)


def build_app(api: _AnimalsApi) -> Starlette:
    """The ASGI app over one `_AnimalsApi`: the real server's routes, models and error answers."""

    async def root(request: Request) -> Response:
        return _json(b'"Hello!"')

    async def verify(request: Request) -> Response:
        return JSONResponse(api.ledger.report())

    async def listing(request: Request) -> Response:
        page, errors = models.query_errors("page", request.query_params.get("page", "1"))
        if errors:
            return _detail(422, errors)
        if page is None or page < 1:
            return _detail(400, f"page must be an integer >= 1, got {page!r}")
        return _json(await models.answer(models.ANIMALS, api.page, page))

    async def detail(request: Request) -> Response:
        raw_id: str = request.path_params["animal_id"]
        fault = api.faults.get(int(raw_id)) if raw_id.isascii() and raw_id.isdigit() else None
        if fault is None:
            return _json(await models.answer(models.ANIMAL, api.animal, raw_id))
        return _faulty_detail(generate_animal(api.seed, int(raw_id), int(raw_id) in api.revised), fault)

    async def home(request: Request) -> Response:
        try:
            body = await request.body()  # the first read: uvicorn sends `100 Continue` now, if it was asked for
        except ClientDisconnect:  # gone before its whole body came: nothing to handle (FastAPI: a 400 nobody reads)
            return _detail(400, "There was an error parsing the body")
        batch, errors = models.body_errors(body, request.headers.get("content-type"), api.total)
        if errors:
            api.ledger.reject()
            return _detail(422, errors)
        assert batch is not None
        if len(batch) > MAX_BATCH:
            api.ledger.reject()
            return _detail(400, f"Sorry, only {MAX_BATCH} animals at a time")
        return _json(models.dumps(await run_in_threadpool(api.take, batch)))

    routes = [
        Route("/", root),
        Route("/_verify", verify),
        Route("/animals/v1/animals", listing),
        Route("/animals/v1/animals/{animal_id}", detail),
        Route("/animals/v1/home", home, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(ChaosMiddleware, api=api)],
        exception_handlers={HTTPException: _http_exception},
    )


def _faulty_detail(record: dict[str, Any], fault: Fault) -> Response:
    """The detail answer of an animal with a hostile-data fault: outside the real server's model, so unvalidated."""
    if fault is Fault.HTML:
        return Response(b"<html>oops</html>", media_type="text/html")
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
    return _json(body)


_PADDING_CHUNK = b"x" * 65536


def _huge_detail(record: dict[str, Any]) -> Response:
    """A valid animal padded to exactly HUGE_BODY_BYTES, streamed chunk by chunk with its Content-Length."""
    head = _ENCODER.encode(record).encode()[:-1] + b',"padding":"'
    tail_end = b'"}'
    padding = HUGE_BODY_BYTES - len(head) - len(tail_end)

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        left = padding
        while left > 0:
            piece = _PADDING_CHUNK[: min(left, len(_PADDING_CHUNK))]
            left -= len(piece)
            yield piece
        yield tail_end

    return StreamingResponse(chunks(), media_type=_JSON, headers={"content-length": str(HUGE_BODY_BYTES)})
