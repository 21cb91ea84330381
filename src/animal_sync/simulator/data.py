"""The simulator's animals: names, the seeded record for each id, and the hostile-data faults an id can carry."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from enum import Enum
from typing import Any

from ..errors import SimulatorError

__all__ = [
    "ANIMAL_NAMES",
    "BORN_MAX_MS",
    "BORN_MIN_MS",
    "LONG_NAME_CHARS",
    "PAGE_SIZE",
    "UNICODE_NAME",
    "Fault",
    "check_animal_count",
    "check_revised",
    "default_total_animals",
    "generate_animal",
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
# Fixed bounds (not "now") so the same seed gives the same animals on any day.
BORN_MIN_MS = 536_457_600_000  # 1987-01-01T00:00:00Z
BORN_MAX_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, exclusive


class Fault(str, Enum):
    """Hostile data an animal's detail response can show (the reliability suite's upstream).

    The list item stays clean except for the two listing kinds. duplicate_listing: the id is also
    the first item of the next page (even when that page is past the end). total_pages_change: the
    page holding the id reports total_pages + 1 (that extra page answers `items: []` as usual), as a
    restarted upstream would: a correct client stops the run there rather than mix two data sets, so
    the animal itself is sound (deliverable) but the run that meets it does not finish.
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


def check_animal_count(animals: int) -> None:
    """Refuse (SimulatorError) a count upstream never has: its pages are always full, so N is a multiple of 10."""
    if animals < 0 or animals % PAGE_SIZE:
        raise SimulatorError(
            f"animals must fill whole pages of {PAGE_SIZE}, as upstream's do (0, 10, 20, ...), got {animals}"
        )


def default_total_animals(seed: int) -> int:
    """The animal count a seed implies when none is given: like upstream, 500-600 full pages."""
    return random.Random(f"{seed}:total-pages").randint(500, 600) * PAGE_SIZE


def check_revised(revised: frozenset[int], total: int) -> None:
    """Refuse (SimulatorError) a revised id outside the run: it could not change anything."""
    outside = sorted(i for i in revised if not 0 <= i < total)
    if outside:
        raise SimulatorError(f"revise names id {outside[0]}, but ids run 0..{total - 1}")


def _digest(seed: int, animal_id: int, salt: bytes = b"") -> bytes:
    # A keyed hash, not random.Random: cheaper per request and identical on every Python version.
    return hashlib.blake2b(b"%d:%d%s" % (seed, animal_id, salt), digest_size=24, person=b"animal-sync").digest()


def _pick_friends(digest: bytes) -> list[str]:
    count = digest[9] % 6
    chosen: list[int] = []
    for k in range(count):
        index = int.from_bytes(digest[10 + 2 * k:12 + 2 * k], "big") % len(ANIMAL_NAMES)
        while index in chosen:  # upstream samples without replacement
            index = (index + 1) % len(ANIMAL_NAMES)
        chosen.append(index)
    return [ANIMAL_NAMES[i] for i in chosen]


def _base_animal(seed: int, animal_id: int, revised: bool = False) -> tuple[str, int | None, list[str]]:
    """The animal's name, birth and friends; a revised animal (changed upstream since) has another name."""
    digest = _digest(seed, animal_id)
    index = int.from_bytes(digest[0:2], "big") % len(ANIMAL_NAMES)
    if revised:  # drawn with a revision salt, and never the name it had
        shift = 1 + int.from_bytes(_digest(seed, animal_id, b":revised")[0:2], "big") % (len(ANIMAL_NAMES) - 1)
        index = (index + shift) % len(ANIMAL_NAMES)
    name = ANIMAL_NAMES[index]
    born_at = None
    if digest[2] % 6 == 0:  # like upstream: a birth date for about 1 animal in 6
        born_at = BORN_MIN_MS + int.from_bytes(digest[3:9], "big") % (BORN_MAX_MS - BORN_MIN_MS)
    return name, born_at, _pick_friends(digest)


def generate_animal(seed: int, animal_id: int, revised: bool = False) -> dict[str, Any]:
    """The detail record upstream would serve for this id (deterministic in seed, id and whether it was revised)."""
    name, born_at, friends = _base_animal(seed, animal_id, revised)
    return {"id": animal_id, "name": name, "born_at": born_at, "friends": ",".join(friends)}


def _list_item(seed: int, animal_id: int, revised: bool = False) -> dict[str, Any]:
    name, born_at, _ = _base_animal(seed, animal_id, revised)
    return {"id": animal_id, "name": name, "born_at": born_at}


def _faulted_name(name: str, fault: Fault | None) -> str:
    if fault is Fault.UNICODE_NAME:
        return UNICODE_NAME
    if fault is Fault.LONG_NAME:
        return (name * (LONG_NAME_CHARS // len(name) + 1))[:LONG_NAME_CHARS]
    return name


def _parse_faults(faults: Mapping[int, str], total: int) -> dict[int, Fault]:
    """The run's faults by id, checked: an unknown kind or an id outside the run is a SimulatorError."""
    parsed = {}
    for animal_id, kind in faults.items():
        try:
            parsed[animal_id] = Fault(kind)
        except ValueError:
            known = ", ".join(f.value for f in Fault)
            raise SimulatorError(f"unknown fault {kind!r} for id {animal_id} (known: {known})") from None
        if not 0 <= animal_id < total:
            raise SimulatorError(f"fault {kind} names id {animal_id}, but ids run 0..{total - 1}")
    return parsed
