"""The SQLite journal: what was listed, fetched, batched and posted, and the only legal ways a row changes state.

states.py holds the states and their transition tables; store.py opens a journal file (lock.py, schema.py);
reads.py and journal.py are its reads and writes, rows.py the values they return; queries.py the reports' reads,
browse.py those of the live page (`serve`).
settlements.py holds the rule that says whether a person's settlement still accounts for a batch.
It must never import the HTTP client, the engine, the reports, the CLI, the web page or the simulator: storage
knows no HTTP and no words for people (tests/test_layout.py).
No SQL is written outside this package.
"""

from typing import TYPE_CHECKING, Any

from .journal import ANSWER_ROOM_BASE, ANSWER_ROOM_PER_ANIMAL, Journal, NoRoomForAnswer
from .lock import SideFile, read_side_file, writer_pid_path
from .rows import BatchRow, Delivery, RunRow, SettlementRow, now
from .schema import MIGRATION_SET, migrations
from .settlements import covers, standing, unsettled_resends
from .store import JournalRolledBack
from .states import ANIMAL_TRANSITIONS, BATCH_TRANSITIONS, AnimalState, BatchState, Decision, RunState
from .states import IllegalTransition, JournalChanged, check_animal_transition, check_batch_transition

# The reports' reads (queries.py) and the live page's (browse.py) load when first asked for: a run never reads
# through them, and its start-up should not pay for them (issue 19). Same names, same objects, only later.
_LAZY = (".queries", ".browse")

if TYPE_CHECKING:
    from .browse import BatchSummary, Event, count_matching_animals, find_animals, find_batches, recent_events, runs
    from .queries import (
        AnimalRecord,
        ListedAnimal,
        Orphan,
        UnchangedClaim,
        delivered_records,
        duplicate_deliverable_ids,
        iter_animals,
        last_batch_built_at,
        last_posted_at,
        listed_animals,
        orphans,
        posted_batch_sizes,
        select_run,
        undelivered_animals,
        unchanged_claims,
    )


def __getattr__(name: str) -> Any:
    """PEP 562: a name of queries.py or browse.py imports its module on first use, then stays here like any other."""
    from importlib import import_module

    for module in _LAZY:
        names = import_module(module, __name__)
        if name in names.__all__:
            value = globals()[name] = getattr(names, name)
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ANIMAL_TRANSITIONS",
    "ANSWER_ROOM_BASE",
    "ANSWER_ROOM_PER_ANIMAL",
    "BATCH_TRANSITIONS",
    "MIGRATION_SET",
    "AnimalRecord",
    "AnimalState",
    "BatchRow",
    "BatchSummary",
    "BatchState",
    "Decision",
    "Delivery",
    "Event",
    "IllegalTransition",
    "Journal",
    "JournalChanged",
    "JournalRolledBack",
    "ListedAnimal",
    "NoRoomForAnswer",
    "Orphan",
    "RunRow",
    "RunState",
    "SettlementRow",
    "SideFile",
    "UnchangedClaim",
    "check_animal_transition",
    "check_batch_transition",
    "count_matching_animals",
    "covers",
    "delivered_records",
    "duplicate_deliverable_ids",
    "find_animals",
    "find_batches",
    "iter_animals",
    "last_batch_built_at",
    "last_posted_at",
    "listed_animals",
    "migrations",
    "now",
    "orphans",
    "posted_batch_sizes",
    "read_side_file",
    "recent_events",
    "runs",
    "select_run",
    "standing",
    "undelivered_animals",
    "unchanged_claims",
    "unsettled_resends",
    "writer_pid_path",
]
