"""The bundled Animals API: a seeded stand-in for the upstream, so tests, demos and benchmarks need no network.

It speaks the real API's shapes and failure habits (slow requests, 5xx, 500 for unknown ids) and also
judges what a client delivers with its own code, never the client's, so a bug cannot hide in both.
Every animal is derived from (seed, id) on demand: a million animals cost a bytearray, not a million dicts.
"""

from __future__ import annotations

import errno
import hashlib
import json
import random
import socket
import socketserver
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from .errors import SimulatorError

__all__ = [
    "ANIMAL_NAMES",
    "Chaos",
    "Fault",
    "Simulator",
    "SimulatorConfig",
    "default_total_animals",
    "expected_home_record",
    "exactly_once",
    "generate_animal",
    "serve",
]

# Roughly the list the real upstream draws from; the detail and list endpoints pick from it by hash.
ANIMAL_NAMES: tuple[str, ...] = (
    "Aardvark", "Albatross", "Alligator", "Alpaca", "Anaconda", "Ant", "Anteater", "Antelope", "Ape",
    "Armadillo", "Baboon", "Badger", "Barracuda", "Bat", "Bear", "Beaver", "Bee", "Beetle", "Bison",
    "Boar", "Bobcat", "Buffalo", "Butterfly", "Buzzard", "Camel", "Canary", "Capybara", "Caribou",
    "Cat", "Caterpillar", "Catfish", "Centipede", "Chameleon", "Cheetah", "Chicken", "Chimpanzee",
    "Chinchilla", "Chipmunk", "Clam", "Cobra", "Cockatoo", "Cockroach", "Cod", "Condor", "Coral",
    "Cougar", "Cow", "Coyote", "Crab", "Crane", "Cricket", "Crocodile", "Crow", "Cuckoo", "Deer",
    "Dingo", "Dog", "Dolphin", "Donkey", "Dormouse", "Dove", "Dragonfly", "Duck", "Eagle", "Eel",
    "Elephant", "Elk", "Emu", "Falcon", "Ferret", "Finch", "Firefly", "Flamingo", "Fox", "Frog",
    "Gazelle", "Gecko", "Gerbil", "Gibbon", "Giraffe", "Gnu", "Goat", "Goldfish", "Goose", "Gopher",
    "Gorilla", "Grasshopper", "Grouse", "Guinea Pig", "Gull", "Hamster", "Hare", "Hawk", "Hedgehog",
    "Heron", "Herring", "Hippopotamus", "Hornet", "Horse", "Hummingbird", "Hyena", "Ibex", "Ibis",
    "Iguana", "Impala", "Jackal", "Jaguar", "Jellyfish", "Kangaroo", "Kingfisher", "Kiwi", "Koala",
    "Kookaburra", "Ladybug", "Lemming", "Lemur", "Leopard", "Lion", "Lizard", "Llama", "Lobster",
    "Locust", "Lynx", "Macaw", "Magpie", "Mallard", "Manatee", "Mandrill", "Marmot", "Meerkat",
    "Mink", "Mole", "Mongoose", "Monkey", "Moose", "Mosquito", "Moth", "Mouse", "Mule", "Narwhal",
    "Newt", "Nightingale", "Ocelot", "Octopus", "Opossum", "Orangutan", "Orca", "Ostrich", "Otter",
    "Owl", "Ox", "Oyster", "Panda", "Panther", "Parrot", "Partridge", "Peacock", "Pelican", "Penguin",
    "Pheasant", "Pig", "Pigeon", "Piranha", "Platypus", "Polar Bear", "Porcupine", "Porpoise",
    "Puffin", "Puma", "Python", "Quail", "Rabbit", "Raccoon", "Rat", "Rattlesnake", "Raven",
    "Reindeer", "Rhinoceros", "Robin", "Salamander", "Salmon", "Scorpion", "Sea Lion", "Seahorse",
    "Seal", "Shark", "Sheep", "Shrimp", "Skunk", "Sloth", "Snail", "Sparrow", "Spider", "Squid",
    "Squirrel", "Starfish", "Stingray", "Stork", "Swan", "Tapir", "Tiger", "Toad", "Tortoise",
    "Toucan", "Trout", "Turkey", "Turtle", "Vulture", "Walrus", "Wasp", "Weasel", "Whale", "Wildcat",
    "Wolf", "Wolverine", "Wombat", "Woodpecker", "Yak", "Zebra",
)

PAGE_SIZE = 10
MAX_BATCH = 100
# Fixed bounds (not "now") so the same seed gives the same animals on any day.
BORN_MIN_MS = 536_457_600_000  # 1987-01-01T00:00:00Z
BORN_MAX_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, exclusive
FAILURE_STATUSES = (500, 502, 503, 504)
DUPLICATE_IDS_CAP = 10_000
MISMATCH_EXAMPLES_CAP = 20
MISSING_IDS_CAP = 1_000
MAX_BODY_BYTES = 16 * 1024 * 1024
HUGE_BODY_BYTES = 20 * 1024 * 1024
WRONG_ID_OFFSET = 1_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
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


class Fault(str, Enum):
    """Hostile data an animal's detail response can show (the reliability suite's upstream).

    The list item stays clean except for the two listing kinds. duplicate_listing: the id is also
    the first item of the next page (even when that page is past the end). total_pages_change: the
    page holding the id reports total_pages + 1; that extra page answers `items: []` as usual.
    Undeliverable kinds (a correct client quarantines them) are the invalid ones plus huge_body,
    which a client should refuse by size; `/_verify` lists them as faulted_ids, not missing.
    """

    BAD_BORN_AT = "bad_born_at"
    FRIENDS_TYPE = "friends_type"
    MISSING_NAME = "missing_name"
    WRONG_ID = "wrong_id"
    HTML = "html"
    TRUNCATED = "truncated"
    EXTRA_FIELDS = "extra_fields"
    UNICODE_NAME = "unicode_name"
    LONG_NAME = "long_name"
    HUGE_BODY = "huge_body"
    DUPLICATE_LISTING = "duplicate_listing"
    TOTAL_PAGES_CHANGE = "total_pages_change"

    @property
    def deliverable(self) -> bool:
        """Whether a correct client can still deliver this animal (otherwise it must quarantine it)."""
        return self in _DELIVERABLE_FAULTS


_DELIVERABLE_FAULTS = frozenset({
    Fault.EXTRA_FIELDS, Fault.UNICODE_NAME, Fault.LONG_NAME, Fault.DUPLICATE_LISTING, Fault.TOTAL_PAGES_CHANGE,
})
UNICODE_NAME = "Ñandú 🐦 Straße"
LONG_NAME_CHARS = 5_000


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


# --------------------------------------------------------------------------- the data


def default_total_animals(seed: int) -> int:
    """The animal count a seed implies when none is given: like upstream, 500-600 full pages."""
    return random.Random(f"{seed}:total-pages").randint(500, 600) * PAGE_SIZE


def _digest(seed: int, animal_id: int) -> bytes:
    # A keyed hash, not random.Random: cheaper per request and identical on every Python version.
    return hashlib.blake2b(b"%d:%d" % (seed, animal_id), digest_size=24, person=b"animal-sync").digest()


def _pick_friends(digest: bytes) -> list[str]:
    count = digest[9] % 6
    chosen: list[int] = []
    for k in range(count):
        index = int.from_bytes(digest[10 + 2 * k:12 + 2 * k], "big") % len(ANIMAL_NAMES)
        while index in chosen:  # upstream samples without replacement
            index = (index + 1) % len(ANIMAL_NAMES)
        chosen.append(index)
    return [ANIMAL_NAMES[i] for i in chosen]


def _base_animal(seed: int, animal_id: int) -> tuple[str, int | None, list[str]]:
    digest = _digest(seed, animal_id)
    name = ANIMAL_NAMES[int.from_bytes(digest[0:2], "big") % len(ANIMAL_NAMES)]
    born_at = None
    if digest[2] % 6 == 0:  # like upstream: a birth date for about 1 animal in 6
        born_at = BORN_MIN_MS + int.from_bytes(digest[3:9], "big") % (BORN_MAX_MS - BORN_MIN_MS)
    return name, born_at, _pick_friends(digest)


def generate_animal(seed: int, animal_id: int) -> dict[str, Any]:
    """The detail record upstream would serve for this id (deterministic in seed and id)."""
    name, born_at, friends = _base_animal(seed, animal_id)
    return {"id": animal_id, "name": name, "born_at": born_at, "friends": ",".join(friends)}


def _list_item(seed: int, animal_id: int) -> dict[str, Any]:
    name, born_at, _ = _base_animal(seed, animal_id)
    return {"id": animal_id, "name": name, "born_at": born_at}


def _iso_from_ms(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def _faulted_name(name: str, fault: Fault | None) -> str:
    if fault is Fault.UNICODE_NAME:
        return UNICODE_NAME
    if fault is Fault.LONG_NAME:
        return (name * (LONG_NAME_CHARS // len(name) + 1))[:LONG_NAME_CHARS]
    return name


def exactly_once(verdict: Mapping[str, Any]) -> bool:
    """Whether a /_verify verdict shows every animal delivered once with the right content: nothing missing,
    no repeat refused, no wrong record. An empty or partial verdict (the simulator did not answer) is not."""
    return all(verdict.get(key) == 0 for key in ("missing", "duplicates_rejected", "content_mismatches"))


def expected_home_record(seed: int, animal_id: int, faults: Mapping[int, str] | None = None) -> dict[str, Any]:
    """What a correct client POSTs for this id, by the simulator's own reckoning (not transform.py's).

    `faults` matters only for kinds that change valid data (unicode_name, long_name); for kinds
    that make an animal undeliverable this is still the clean record, which nobody should post.
    """
    name, born_at, friends = _base_animal(seed, animal_id)
    fault = Fault(faults[animal_id]) if faults and animal_id in faults else None
    return {
        "id": animal_id,
        "name": _faulted_name(name, fault),
        "born_at": None if born_at is None else _iso_from_ms(born_at),
        "friends": friends,
    }


# --------------------------------------------------------------------------- judging deliveries


def _epoch_ms(text: str) -> int:
    """Epoch milliseconds of an ISO-8601 string; a naive time is read as UTC, as upstream does."""
    moment = datetime.fromisoformat(text)  # 3.11 reads a trailing "Z" as UTC
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _item_problem(item: Any, total: int) -> str | None:
    """Why one POSTed item is malformed (the 422 detail), or None if it is well-formed."""
    if not isinstance(item, dict):
        return f"expected an object, got {type(item).__name__}"
    for key in ("id", "name", "born_at", "friends"):
        if key not in item:
            return f"missing key {key!r}"
    animal_id, name, born_at, friends = item["id"], item["name"], item["born_at"], item["friends"]
    if type(animal_id) is not int:
        return f"id must be an integer, got {animal_id!r}"
    if not 1 <= animal_id <= total:
        return f"id {animal_id} is not an animal here (1..{total})"
    if not isinstance(name, str):
        return f"name must be a string, got {name!r}"
    if born_at is not None:
        if not isinstance(born_at, str):
            return f"born_at must be an ISO-8601 string or null, got {born_at!r}"
        try:
            _epoch_ms(born_at)
        except ValueError:
            return f"born_at {born_at!r} is not an ISO-8601 datetime"
    if not isinstance(friends, list) or not all(isinstance(f, str) for f in friends):
        return f"friends must be a list of strings, got {friends!r}"
    return None


def _mismatches(expected: dict[str, Any], got: dict[str, Any]) -> list[dict[str, Any]]:
    """Field-by-field differences between the simulator's expectation and a (well-formed) delivery."""
    found = []
    if got["name"] != expected["name"]:
        found.append(("name", expected["name"], got["name"]))
    want, have = expected["born_at"], got["born_at"]
    if (want is None) != (have is None) or (want is not None and _epoch_ms(want) != _epoch_ms(have)):
        found.append(("born_at", want, have))
    if got["friends"] != expected["friends"]:
        found.append(("friends", expected["friends"], got["friends"]))
    return [{"id": expected["id"], "field": f, "expected": e, "got": g} for f, e, g in found]


class _Ledger:
    """Which ids arrived, how often and how well: the proof behind GET /_verify."""

    def __init__(self, total: int, strict: bool, faulted: frozenset[int]) -> None:
        self.total, self.strict, self.faulted = total, strict, faulted
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every delivery (tests reuse one simulator)."""
        with self._lock:
            self._delivered = bytearray(self.total + 1)  # index = id; 1 once delivered
            self._count = 0
            self._duplicate_ids: set[int] = set()
            self._duplicates_rejected = 0
            self._duplicates_delivered = 0
            self._posts = 0
            self._posts_rejected = 0
            self._mismatches = 0
            self._examples: list[dict[str, Any]] = []

    def reject(self) -> None:
        """Count a POST turned away for its shape (4xx) once handling began."""
        with self._lock:
            self._posts_rejected += 1

    def accept(self, records: list[dict[str, Any]], expected: Callable[[int], dict[str, Any]]) -> list[int]:
        """Record a well-formed batch; returns the duplicate ids if strict mode refused it whole."""
        judged = []  # one list of field differences per wrong record; judged outside the lock
        for record in records:
            if record["id"] not in self.faulted:
                differences = _mismatches(expected(record["id"]), record)
                if differences:
                    judged.append(differences)
        with self._lock:
            seen: set[int] = set()
            repeated = []
            for record in records:
                animal_id = record["id"]
                if self._delivered[animal_id] or animal_id in seen:
                    repeated.append(animal_id)
                seen.add(animal_id)
            self._note_duplicates(repeated)
            if repeated and self.strict:
                self._duplicates_rejected += len(repeated)
                self._posts_rejected += 1
                return sorted(set(repeated))
            self._duplicates_delivered += len(repeated)
            for animal_id in seen:
                if not self._delivered[animal_id]:
                    self._delivered[animal_id] = 1
                    self._count += 1
            self._mismatches += len(judged)
            for fields in judged:
                self._examples.extend(fields[: MISMATCH_EXAMPLES_CAP - len(self._examples)])
            self._posts += 1
            return []

    def _note_duplicates(self, ids: list[int]) -> None:
        for animal_id in ids:
            if len(self._duplicate_ids) >= DUPLICATE_IDS_CAP:
                break
            self._duplicate_ids.add(animal_id)

    def _missing_ids(self) -> list[int]:
        found: list[int] = []
        position = self._delivered.find(0, 1)
        while position != -1 and len(found) < MISSING_IDS_CAP:
            if position not in self.faulted:
                found.append(position)
            position = self._delivered.find(0, position + 1)
        return found

    def report(self) -> dict[str, Any]:
        """The /_verify document."""
        with self._lock:
            faulted_delivered = sorted(i for i in self.faulted if self._delivered[i])
            return {
                "animals": self.total,
                "delivered": self._count,
                "missing": self.total - self._count - (len(self.faulted) - len(faulted_delivered)),
                "missing_ids": self._missing_ids(),
                "faulted_ids": sorted(self.faulted),
                "faulted_delivered": faulted_delivered,
                "duplicates_rejected": self._duplicates_rejected,
                "duplicate_ids": sorted(self._duplicate_ids),
                "duplicates_delivered": self._duplicates_delivered,
                "posts": self._posts,
                "posts_rejected": self._posts_rejected,
                "content_mismatches": self._mismatches,
                "mismatch_examples": list(self._examples),
                "strict": self.strict,
            }


# --------------------------------------------------------------------------- the API, minus HTTP


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
        self.ledger = _Ledger(
            self.total, config.strict, frozenset(i for i, f in self.faults.items() if not f.deliverable)
        )
        self._extra_listing: dict[int, list[int]] = {}  # page -> ids repeated on it
        self._grown_pages: set[int] = set()  # pages that report one page more
        for animal_id, fault in self.faults.items():
            page = (animal_id - 1) // PAGE_SIZE + 1
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

    def note_stall(self, delta: int) -> None:
        """Track how many requests are stalled right now (tests wait on it)."""
        with self._chaos_lock:
            self.stalled += delta

    # routes -----------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, body: bytes) -> _Reply:
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
            return self._home(body)
        return _detail(404, "Not Found")

    def _list(self, query: str) -> _Reply:
        raw = dict(parse_qsl(query)).get("page", "1")
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            return _detail(400, f"page must be an integer >= 1, got {raw!r}")
        page = int(raw)
        first = (page - 1) * PAGE_SIZE + 1
        ids = list(self._extra_listing.get(page, ())) + list(range(first, min(first + PAGE_SIZE, self.total + 1)))
        total_pages = self.total_pages + (1 if page in self._grown_pages else 0)
        items = [_list_item(self.seed, i) for i in ids]
        return _json_reply(200, {"page": page, "total_pages": total_pages, "items": items})

    def _animal(self, raw_id: str) -> _Reply:
        if not (raw_id.isascii() and raw_id.isdigit()) or not 1 <= int(raw_id) <= self.total:
            return _detail(500, "Internal Server Error")  # upstream fails this way, every time
        animal_id = int(raw_id)
        record = generate_animal(self.seed, animal_id)
        fault = self.faults.get(animal_id)
        return _json_reply(200, record) if fault is None else _faulty_detail(record, fault)

    def _home(self, body: bytes) -> _Reply:
        try:
            batch = json.loads(body)
        except ValueError:
            self.ledger.reject()
            return _detail(400, "body is not valid JSON")
        if not isinstance(batch, list):
            self.ledger.reject()
            return _detail(400, f"expected a JSON array of animals, got {type(batch).__name__}")
        if len(batch) > MAX_BATCH:
            self.ledger.reject()
            return _detail(400, f"Sorry, only {MAX_BATCH} animals at a time (got {len(batch)})")
        for index, item in enumerate(batch):
            problem = _item_problem(item, self.total)
            if problem:
                self.ledger.reject()
                label = f"id {item['id']!r}" if isinstance(item, dict) and "id" in item else "no id"
                return _detail(422, f"item {index} ({label}): {problem}")
        repeated = self.ledger.accept(batch, self.expected)
        if repeated:
            return _detail(500, f"duplicate ids: {repeated}")
        return _json_reply(200, {"message": f"Helped {len(batch)} find home"})

    def expected(self, animal_id: int) -> dict[str, Any]:
        """This run's expectation for one id, faults included."""
        return expected_home_record(self.seed, animal_id, self.faults)


def _parse_faults(faults: Mapping[int, str], total: int) -> dict[int, Fault]:
    parsed = {}
    for animal_id, kind in faults.items():
        try:
            parsed[animal_id] = Fault(kind)
        except ValueError:
            known = ", ".join(f.value for f in Fault)
            raise SimulatorError(f"unknown fault {kind!r} for id {animal_id} (known: {known})") from None
        if not 1 <= animal_id <= total:
            raise SimulatorError(f"fault {kind} names id {animal_id}, but ids run 1..{total}")
    return parsed


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


# --------------------------------------------------------------------------- HTTP plumbing


_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


class _Handler(BaseHTTPRequestHandler):
    """One keep-alive connection; writes each reply in a single send so Nagle never delays it."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    error_content_type = _JSON
    error_message_format = '{"detail":"%(code)d %(message)s"}'
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the per-request access log."""

    def handle_expect_100(self) -> bool:
        """Never send `100 Continue`: stdlib would send it before chaos, a promise the real server never makes."""
        return True

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        api = self.server.api
        path, _, query = self.path.partition("?")
        if path not in _CALM_PATHS:
            draw = api.draw_chaos(self.command)
            if draw.kind is Chaos.FAIL:
                self._send(_detail(draw.status, "chaos"))
                return
            if draw.kind is Chaos.STALL and not self._stall(draw.stall):
                self.close_connection = True
                return
        self._send(api.handle(self.command, path, query, body))

    def _stall(self, seconds: float) -> bool:
        """Sleep before handling; False if the simulator stopped meanwhile (then nothing is handled)."""
        api = self.server.api
        api.note_stall(+1)
        try:
            return not self.server.stopping.wait(seconds)
        finally:
            api.note_stall(-1)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send(_detail(411, "send a Content-Length; chunked bodies are not supported"))
            return None
        raw = self.headers.get("Content-Length", "0")
        if not raw.isdigit() or int(raw) > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(_detail(413 if raw.isdigit() else 400, f"unacceptable Content-Length {raw!r}"))
            return None
        return self.rfile.read(int(raw)) if raw != "0" else b""

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


# --------------------------------------------------------------------------- the public object


class Simulator:
    """Runs the API in background threads; a context manager (start on enter, stop on exit)."""

    def __init__(self, config: SimulatorConfig) -> None:
        if not 0 <= config.chaos <= 100:
            raise SimulatorError(f"chaos must be a percentage 0..100, got {config.chaos}")
        if not 0 <= config.stall_min <= config.stall_max:
            raise SimulatorError(f"stalls need 0 <= stall_min <= stall_max, got {config.stall_min}..{config.stall_max}")
        if config.animals is not None and config.animals < 0:
            raise SimulatorError(f"animals must not be negative, got {config.animals}")
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
                raise SimulatorError(f"port {port} on {host} is already in use") from None
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

    def expected_record(self, animal_id: int) -> dict[str, Any]:
        """What a correct client posts for this id in this run (faults included)."""
        return self._api.expected(animal_id)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(config: SimulatorConfig) -> None:
    """Serve in the foreground until Ctrl-C, for the CLI; a busy port raises SimulatorError."""
    with Simulator(config) as simulator:
        print(
            f"Animals API simulator on {simulator.url}: {simulator.total_animals} animals, "
            f"chaos {config.chaos:g}%, strict {'on' if config.strict else 'off'}",
            flush=True,
        )
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
