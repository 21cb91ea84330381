"""The bundled Animals API: a seeded stand-in for the upstream, so tests, demos and benchmarks need no network.

It speaks the real API's shapes and failure habits and is never kinder than the real server, so a client that
passes here has met what production will do to it:
- Ids start at 0: page p lists ids 10(p-1)..10p-1, in full pages of 10, so N animals are ids 0..N-1; a page past
  the end answers `items: []`; any other detail id answers a plain-text `500 Internal Server Error`, every time.
- Chaos, on every path but / and /_verify: a request stalls 5-15 s before it is handled, or fails at once with
  500/502/503/504 and a short plain-text body, without being handled and without its body being read (so the
  connection is then closed). A POST whose client gave up during a stall is still handled afterwards.
- HTTP/1.1 keep-alive, with idle connections closed after `idle_timeout` (about 5 s); `Expect: 100-continue` is
  honoured late, as the real server does: `100 Continue` is sent only when the handler starts reading the body,
  so after any stall, and never before a chaos failure.
- POST /home: a JSON array (Content-Type application/json) of at most 100 well-formed animals; 400 over 100,
  422 for a body that is not JSON, not an array, not sent as JSON, or holds a malformed item, checked for the
  whole batch before any id is taken. Strict mode then takes the ids one at a time and answers a plain-text 500
  at the first id already delivered (or repeated in the batch): the ids before it stay delivered.
- A restart draws a new data set: restart with another seed for a new page count and new animals under the
  same ids.
It also judges what a client delivers with its own code, never the client's, so a bug cannot hide in both.
Every animal is derived from (seed, id) on demand: a million animals cost a bytearray, not a million dicts.

Its modules: `data` (animals and faults), `ledger` (deliveries and their judge), `app` (routes and chaos),
`server` (HTTP and `Simulator`), `process` (`serve` and `SimulatorProcess`).
"""

from __future__ import annotations

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
