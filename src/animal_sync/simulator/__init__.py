"""The bundled Animals API: a seeded stand-in for the upstream, so tests, demos and benchmarks need no network.

It runs on the real server's own stack, so its HTTP behaviour is the real one, not an imitation: an ASGI app on
Starlette (the framework under FastAPI) with pydantic models, served by uvicorn with the h11 implementation. It
speaks the real API's shapes and failure habits and is never kinder than the real server, so a client that passes
here has met what production will do to it:
- Ids start at 0: page p lists ids 10(p-1)..10p-1, in full pages of 10, so N animals are ids 0..N-1; a page past
  the end answers `items: []`; a page that is no integer is FastAPI's 422, one below 1 a 400.
- Chaos, on every path but / and /_verify, is a middleware in front of the routes: a request stalls 5-15 s (an
  asyncio sleep) and is then handled, or is answered at once with a plain-text 500/502/503/504 without being
  handled and without its body being read (uvicorn then drains the body if it comes; no `Connection: close`).
- The real server may still handle a POST whose client gave up during a stall: here a request whose whole body
  arrived is always handled after its stall, even if its client has hung up since (the one place where the
  simulator departs from plain uvicorn, on the harsh side; `server._H11Protocol`).
- An exception in a handler is answered as uvicorn answers it: Starlette's ServerErrorMiddleware sends
  `500 Internal Server Error`, text/plain, with no `Connection: close`, and uvicorn then drops the connection, so
  the next request sent on it gets no answer (a reset or EOF). Two handlers raise: the detail of an id that is no
  animal here (every time), and strict mode's refusal.
- HTTP/1.1 is uvicorn's own: keep-alive, with idle connections closed after `idle_timeout` (5 s, uvicorn's
  `timeout_keep_alive`; configurable for tests); `Expect: 100-continue` answered only when the handler first
  reads the body, so after any stall and never before a chaos 5xx.
- Every answer costs what the real server's does: each route is a plain function run in the threadpool, and its
  answer is dumped, validated against the response model in the threadpool and serialized, as FastAPI does for a
  `def` path operation with a `response_model` (about 0.6 CPU-seconds per 1,000 animals serving a naive 32-thread
  client, as the real server: `scripts/sim_throughput.py --cpu`).
- POST /home: a JSON array of animals (no Content-Type is taken as JSON, as FastAPI does), validated item by item
  with pydantic, whole batch before any id is taken: FastAPI's 422 `{"detail": [{"type", "loc", "msg",
  "input"}]}` for a body that is not JSON, not a list, not sent as JSON, or holds a malformed item; then 400
  `{"detail": "Sorry, only 100 animals at a time"}` over 100. Strict mode then takes the ids one at a time and
  raises at the first id already delivered (or repeated in the batch): the ids before it stay delivered.
- GET / answers `"Hello!"`; 404 and 405 are FastAPI's `{"detail": ...}`.
- A restart draws a new data set: restart with another seed for a new page count and new animals under the
  same ids.
The wire-level items above are checked on raw sockets in tests/test_fidelity.py. The hostile-data faults
(`Fault`) are all answers an ASGI app can give (a truncated or huge body, HTML, garbage fields) and are served
here; faults that need a raw socket instead (an answer that trickles, an endless body, a server that hangs up
after the headers) live in the tests' own small servers (tests/conftest.py's `trickler`, tests/test_api.py,
tests/continue_server.py).
It also judges what a client delivers with its own code, never the client's, so a bug cannot hide in both.
Every animal is derived from (seed, id) on demand: a million animals cost a bytearray, not a million dicts.

Its modules: `data` (animals and faults), `ledger` (deliveries and their judge), `models` (the real server's
pydantic models and FastAPI's answer path), `app` (the Starlette app: chaos middleware, routes, state), `server`
(uvicorn in a thread: `Simulator`) and `process` (`serve` and `SimulatorProcess`).
It must never import the client, the engine, the journal, the reports, the CLI, the web page, nor `transform` or
`examine`: it judges deliveries with its own code (tests/test_layout.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each public name and the module that holds it, loaded on first use: `import animal_sync.simulator.data` (the
# CLI's --fault kinds) must not pull in uvicorn, Starlette and pydantic, which only a served simulator needs.
_WHERE = {
    "FAILURE_STATUSES": "app",
    "HUGE_BODY_BYTES": "app",
    "MAX_BATCH": "app",
    "WRONG_ID_OFFSET": "app",
    "Chaos": "app",
    "SimulatorConfig": "app",
    "ANIMAL_NAMES": "data",
    "BORN_MAX_MS": "data",
    "BORN_MIN_MS": "data",
    "LONG_NAME_CHARS": "data",
    "PAGE_SIZE": "data",
    "UNICODE_NAME": "data",
    "Fault": "data",
    "check_animal_count": "data",
    "default_total_animals": "data",
    "generate_animal": "data",
    "DUPLICATE_IDS_CAP": "ledger",
    "MISMATCH_EXAMPLES_CAP": "ledger",
    "MISSING_IDS_CAP": "ledger",
    "exactly_once": "ledger",
    "expected_home_record": "ledger",
    "START_SECONDS": "process",
    "SimulatorProcess": "process",
    "serve": "process",
    "Simulator": "server",
}

if TYPE_CHECKING:
    from .app import (
        FAILURE_STATUSES,
        HUGE_BODY_BYTES,
        MAX_BATCH,
        WRONG_ID_OFFSET,
        Chaos,
        SimulatorConfig,
    )
    from .data import (
        ANIMAL_NAMES,
        BORN_MAX_MS,
        BORN_MIN_MS,
        LONG_NAME_CHARS,
        PAGE_SIZE,
        UNICODE_NAME,
        Fault,
        check_animal_count,
        default_total_animals,
        generate_animal,
    )
    from .ledger import (
        DUPLICATE_IDS_CAP,
        MISMATCH_EXAMPLES_CAP,
        MISSING_IDS_CAP,
        exactly_once,
        expected_home_record,
    )
    from .process import START_SECONDS, SimulatorProcess, serve
    from .server import Simulator


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ANIMAL_NAMES",
    "BORN_MAX_MS",
    "BORN_MIN_MS",
    "DUPLICATE_IDS_CAP",
    "FAILURE_STATUSES",
    "HUGE_BODY_BYTES",
    "LONG_NAME_CHARS",
    "MAX_BATCH",
    "MISMATCH_EXAMPLES_CAP",
    "MISSING_IDS_CAP",
    "PAGE_SIZE",
    "START_SECONDS",
    "UNICODE_NAME",
    "WRONG_ID_OFFSET",
    "Chaos",
    "Fault",
    "Simulator",
    "SimulatorConfig",
    "SimulatorProcess",
    "check_animal_count",
    "default_total_animals",
    "exactly_once",
    "expected_home_record",
    "generate_animal",
    "serve",
]
