"""The SQLite journal: what was listed, fetched, batched and posted, and the only legal ways a row changes state.

One process writes a journal at a time (an exclusive flock on the journal file itself, held while it is
open); readers such as `status` open it read-only and may do so while a run writes, thanks to WAL. All writes
of one pipeline step share one transaction (`Journal.transaction()`), so the journal costs a commit per step,
not one per animal.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import inspect
import json
import os
import resource
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlite_utils import Database, Migrations

from .errors import JournalError

__all__ = [
    "ANIMAL_TRANSITIONS",
    "BATCH_TRANSITIONS",
    "AnimalState",
    "BatchRow",
    "BatchState",
    "Decision",
    "IllegalTransition",
    "Journal",
    "JournalChanged",
    "NoRoomForAnswer",
    "RunRow",
    "RunState",
    "SettlementRow",
    "writer_pid_path",
]

MIGRATION_SET = "animal_sync"
# Room a batch's answer takes in the WAL: its animals' rows and index entries are rewritten (measured: about
# 600 bytes an animal, 58 KB for 100), with a margin for what other steps commit while the POST is out.
ANSWER_ROOM_BASE = 32 * 1024
ANSWER_ROOM_PER_ANIMAL = 1024
P = ParamSpec("P")
T = TypeVar("T")


class AnimalState(StrEnum):
    DISCOVERED = "discovered"  # listed on a page; detail not fetched yet
    FETCHED = "fetched"  # detail fetched and transformed; waiting for a batch
    QUARANTINED = "quarantined"  # detail fetched but malformed; kept with its reason
    FAILED = "failed"  # detail unobtainable, or its batch was refused with 4xx
    BATCHED = "batched"  # carried by a batch not (yet) answered 2xx
    POSTED = "posted"  # carried by a batch answered 2xx
    SETTLED = "settled"  # carried by an in-doubt batch a person judged delivered (`animal-sync settle --delivered`)


class BatchState(StrEnum):
    PENDING = "pending"  # built, never sent
    WITHHELD = "withheld"  # its POST is out with the body held back (awaiting 100 Continue): provably not sent yet
    SENDING = "sending"  # journaled (fsynced) as its body is released; found at start-up it means "outcome unknown"
    POSTED = "posted"  # answered 2xx
    FAILED = "failed"  # answered 4xx (or 5xx past the retry budget): nothing delivered
    IN_DOUBT = "in_doubt"  # sent, outcome unknown (read timeout, dropped connection, killed mid-POST)
    SETTLED = "settled"  # was in doubt; a person judged it delivered, with a reason (see the settlements table)


class Decision(StrEnum):
    """What a person decided about a batch the journal cannot prove delivered."""

    DELIVERED = "delivered"  # it arrived (checked downstream, or a strict API refused its re-send)
    RESEND = "resend"  # it did not arrive: queue it for the next resume, even one that holds in-doubt batches


class RunState(StrEnum):
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"
    ABANDONED = "abandoned"


A, B = AnimalState, BatchState

# The only legal transitions. Quarantined and failed animals go back to discovered when a resume retries them.
ANIMAL_TRANSITIONS: Mapping[AnimalState, frozenset[AnimalState]] = {
    A.DISCOVERED: frozenset({A.FETCHED, A.QUARANTINED, A.FAILED}),
    A.FETCHED: frozenset({A.BATCHED}),
    A.QUARANTINED: frozenset({A.DISCOVERED}),
    A.FAILED: frozenset({A.DISCOVERED}),
    A.BATCHED: frozenset({A.POSTED, A.FAILED, A.FETCHED, A.SETTLED}),  # fetched: re-batched after a refused batch is split
    A.POSTED: frozenset(),
    A.SETTLED: frozenset(),
}
BATCH_TRANSITIONS: Mapping[BatchState, frozenset[BatchState]] = {
    B.PENDING: frozenset({B.WITHHELD}),
    # sending: the body is released. The others are answers (or a resume) while no try's body ever left: pending
    # (never reached), failed (refused before reading), in_doubt (a re-send that never left stays as doubtful as it
    # was), posted (a 2xx before the body: the API's word is taken).
    B.WITHHELD: frozenset({B.SENDING, B.PENDING, B.FAILED, B.IN_DOUBT, B.POSTED}),
    B.SENDING: frozenset({B.POSTED, B.FAILED, B.IN_DOUBT, B.PENDING}),  # pending: the API was never reached
    # withheld: a re-send (at-least-once), only when the operator allows it; settled or pending: a person's decision
    B.IN_DOUBT: frozenset({B.WITHHELD, B.SETTLED, B.PENDING}),
    B.POSTED: frozenset(),
    B.FAILED: frozenset(),
    B.SETTLED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the state machine forbids: a bug in the caller, never a data problem."""


class JournalChanged(IllegalTransition, JournalError):
    """A row was not in the state this process last wrote: something else changed the journal under it.

    With the writer's lock that means a second process writing without it; it is reported as one line (a
    JournalError), since no retry in this process can make its view of the journal true again.
    """


@dataclass(frozen=True)
class RunRow:
    id: int
    state: RunState
    settings: dict[str, Any]
    base_url: str
    total_pages: int | None
    started_at: str
    resumed_at: str | None
    attempts: int
    finished_at: str | None
    outcome: dict[str, Any] | None


@dataclass(frozen=True)
class BatchRow:
    id: int
    run_id: int
    state: BatchState
    ids: list[int]
    attempts: int
    response_status: int | None
    response_body: str | None
    last_error: str | None
    in_doubt_at: str | None


@dataclass(frozen=True)
class SettlementRow:
    id: int
    run_id: int
    batch_id: int
    decision: Decision
    reason: str
    user: str
    settled_at: str
    attempts: int  # the batch's POSTs when it was settled


class NoRoomForAnswer(JournalError):
    """The journal's disk has too little room left to record the answer to a batch, so it must not be sent."""

    def __init__(self, path: Path, batch_id: int, animals: int, room: int, needed: int) -> None:
        self.path, self.batch_id, self.animals, self.room, self.needed = path, batch_id, animals, room, needed
        super().__init__(
            f"journal {path}: only {room // 1024} KiB of room left to journal into; the answer to batch {batch_id}"
            f" ({animals} animals) needs about {needed // 1024} KiB, so it was not sent: make room, then resume"
        )


def now() -> str:
    """UTC timestamp with milliseconds, the one form every journal column uses."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _migrations_dir() -> Path:
    """Inside an installed wheel the schema history ships in the package; in a checkout it is ../../migrations."""
    packaged = resources.files("animal_sync") / "migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "migrations"


def _migration_files() -> list[Path]:
    """The schema history, one file a step, in the order the steps apply."""
    return sorted(_migrations_dir().glob("[0-9]*.py"))


def migrations() -> Migrations:
    """Register each migrations/NNNN_name.py file's `migrate(db)` on one sqlite-utils migration set, in order."""
    registry = Migrations(MIGRATION_SET)
    for path in _migration_files():
        spec = importlib.util.spec_from_file_location(f"animal_sync_migration_{path.stem}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        registry(name=path.stem)(module.migrate)
    return registry


def _run_row(row: Mapping[str, Any]) -> RunRow:
    return RunRow(
        id=row["id"],
        state=RunState(row["state"]),
        settings=json.loads(row["settings"] or "{}"),
        base_url=row["base_url"],
        total_pages=row["total_pages"],
        started_at=row["started_at"],
        resumed_at=row["resumed_at"],
        attempts=row["attempts"],
        finished_at=row["finished_at"],
        outcome=json.loads(row["outcome"]) if row["outcome"] else None,
    )


def _batch_row(row: Mapping[str, Any]) -> BatchRow:
    return BatchRow(
        id=row["id"],
        run_id=row["run_id"],
        state=BatchState(row["state"]),
        ids=json.loads(row["ids"]),
        attempts=row["attempts"],
        response_status=row["response_status"],
        response_body=row["response_body"],
        last_error=row["last_error"],
        in_doubt_at=row["in_doubt_at"],
    )


def _settlement_row(row: Mapping[str, Any]) -> SettlementRow:
    return SettlementRow(
        id=row["id"],
        run_id=row["run_id"],
        batch_id=row["batch_id"],
        decision=Decision(row["decision"]),
        reason=row["reason"],
        user=row["user"],
        settled_at=row["settled_at"],
        attempts=row["attempts"],
    )


def _atomic(method: Callable[P, T]) -> Callable[P, T]:
    """A write method is all or nothing on its own; inside a caller's transaction it simply joins it, and the
    caller's rollback undoes it (no savepoint per write: the pipeline makes thousands of them a second)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        journal = args[0]
        assert isinstance(journal, Journal)
        if journal.db.conn.in_transaction:
            return method(*args, **kwargs)
        with journal.transaction():
            return method(*args, **kwargs)

    return wrapper


def _read(method: Callable[P, T]) -> Callable[P, T]:
    """A read method: an SQLite error (a damaged file, a failing disk) is a one-line JournalError, as for writes.

    Reads happen outside `Journal.transaction()` (reports, a resume's set-up, a batch's records before its POST),
    so without this a damaged journal would end the CLI with a traceback instead of one line.
    """

    def journal_error(journal: Any, exc: sqlite3.Error) -> JournalError:
        return JournalError(f"journal {journal.path}: {exc}")

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                yield from method(*args, **kwargs)  # type: ignore[misc]
            except sqlite3.Error as exc:
                raise journal_error(args[0], exc) from None

        return generator  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise journal_error(args[0], exc) from None

    return wrapper


def _read_only_uri(path: Path) -> str:
    """`mode=ro`, plus `immutable=1` when SQLite could not create the WAL index (-shm) it needs beside the file.

    That is the usual read-only journal: another user's file in a directory we cannot write. With no -shm and
    no -wal content, every commit is in the main file and no writer has it open (a writer keeps a -shm), so
    reading it as immutable is exact; without it SQLite refuses even to read ("attempt to write a readonly
    database").
    """
    uri = f"{path.resolve().as_uri()}?mode=ro"
    wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
    if not os.access(path.parent, os.W_OK) and not shm.exists() and not (wal.exists() and wal.stat().st_size):
        uri += "&immutable=1"
    return uri


def writer_pid_path(journal_path: Path) -> Path:
    """The side file where the writer leaves its pid for `status` to show: information only, never the lock."""
    return journal_path.with_name(journal_path.name + ".lock")


def _recorded_writer(journal_path: Path) -> str:
    try:
        return writer_pid_path(journal_path).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _lock_journal(path: Path) -> int:
    """Flock the journal file itself and return the descriptor that holds the lock, for the writer's lifetime.

    The lock lives on the journal's own inode, so no file a person can delete lets a second writer in, and
    the kernel drops it when the process dies (no stale lock). It is taken before SQLite opens the file: SQLite
    keeps POSIX (fcntl) locks on it, and closing *any* descriptor of the file drops those, so this descriptor
    is opened before the connection and closed only after it (`Journal.close`). flock and POSIX locks are
    separate on Linux, so SQLite and this lock never meet. A refused attempt closes its descriptor at once,
    which is harmless as long as a process holds at most one writer's connection to a journal, as the CLI does.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise JournalError(f"cannot lock journal {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(
            f"journal {path} is in use by another animal-sync process (pid {_recorded_writer(path)})"
        ) from None
    except OSError as exc:  # no locks on this file system
        os.close(fd)
        raise JournalError(f"cannot lock journal {path}: {exc.strerror}") from None
    pid_path = writer_pid_path(path)
    try:
        pid_path.write_text(str(os.getpid()))
    except OSError as exc:  # e.g. a pid file another user left, in a directory shared by group
        os.close(fd)
        raise JournalError(f"cannot lock journal {path}: {pid_path}: {exc.strerror}") from None
    return fd


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _placeholders(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _chunks(values: Sequence[int], size: int = 500) -> Iterator[Sequence[int]]:
    """SQLite caps bound parameters per statement; long id lists go in slices."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Journal:
    """One journal file. Open with `Journal.open(path)` for writing or `Journal.open(path, readonly=True)`."""

    def __init__(self, db: Database, path: Path, readonly: bool, lock_fd: int | None = None) -> None:
        self.db = db
        self.path = path
        self.readonly = readonly
        self._lock_fd = lock_fd  # the writer's flock on the journal file; closed after the connection

    # -- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False, exclusive: bool = False) -> Journal:
        """Open (and for writers create and migrate) a journal; every failure is a one-line JournalError.

        `exclusive` takes the writer's lock first, so no process migrates a journal another one is using.
        """
        path = Path(path)
        lock_fd = None
        if readonly:
            if not path.is_file():
                raise JournalError(f"no journal at {path}")
            if not os.access(path, os.R_OK):
                raise JournalError(f"journal {path} is not readable")
            conn = sqlite3.connect(_read_only_uri(path), uri=True)
        else:
            if path.is_dir():
                raise JournalError(f"journal path {path} is a directory")
            if not path.parent.is_dir():
                raise JournalError(f"journal directory {path.parent} does not exist")
            if path.exists() and not os.access(path, os.W_OK):
                raise JournalError(f"journal {path} is read-only")
            if not path.exists() and not os.access(path.parent, os.W_OK):
                raise JournalError(f"cannot create journal in {path.parent}: directory is not writable")
            if exclusive:
                lock_fd = _lock_journal(path)  # before SQLite opens the file: see _lock_journal
            try:
                conn = sqlite3.connect(path)
            except sqlite3.Error as exc:
                if lock_fd is not None:
                    os.close(lock_fd)
                raise JournalError(f"journal {path}: {exc}") from None
        journal = cls(Database(conn), path, readonly, lock_fd)
        try:
            journal._check_and_migrate()
        except sqlite3.OperationalError as exc:  # a journal that cannot be used now (disk full, I/O error, locked)
            journal.close()
            raise JournalError(f"journal {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            journal.close()
            raise JournalError(f"{path} is not a usable animal-sync journal: {exc}") from None
        except JournalError:
            journal.close()
            raise
        return journal

    def _check_and_migrate(self) -> None:
        registry = migrations()
        known = {path.stem for path in _migration_files()}
        tables = set(self.db.table_names())  # raises DatabaseError for a file that is not SQLite
        applied = {m.name for m in registry.applied(self.db)} if "_sqlite_migrations" in tables else set()
        if tables - {"_sqlite_migrations"} and not applied:
            raise JournalError(f"{self.path} is an SQLite database but not an animal-sync journal")
        newer = applied - known
        if newer:
            raise JournalError(
                f"{self.path} was written by a newer animal-sync (schema step {max(newer)}); upgrade animal-sync to use it"
            )
        if self.readonly:
            if not tables:  # a 0-byte file, or an SQLite file nothing was ever written to
                raise JournalError(f"{self.path} is empty: it holds no run yet; `animal-sync run` starts one")
            if known - applied:
                raise JournalError(f"{self.path} needs a schema upgrade; run `animal-sync resume` once to apply it")
            return
        self.db.enable_wal()
        # NORMAL: commits reach the OS at once, and transaction(durable=True) fsyncs where a power cut matters.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        registry.apply(self.db)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.conn.close()
        if self._lock_fd is not None:  # only now: closing it earlier would drop SQLite's own locks on the file
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        """Group every write of one pipeline step into one commit; SQLite errors become a one-line JournalError.

        Commits reach the OS at once (a killed process loses none) but are fsynced only when `durable`: in WAL
        that one fsync also makes every earlier commit durable. The pipeline asks for it where a power cut must
        not roll back: the commit that marks batches `sending` before their bodies are released, and a run's end.
        """
        outermost = durable and not self.db.conn.in_transaction
        try:
            if outermost:
                self.db.execute("PRAGMA synchronous=FULL")  # only takes effect outside a transaction
            try:
                with self.db.atomic():
                    yield
            finally:
                if outermost:
                    self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {exc}") from None

    # -- runs ------------------------------------------------------------------------------------------------

    def start_run(self, settings: Mapping[str, Any], base_url: str) -> RunRow:
        stamp = now()
        with self.transaction():
            cursor = self.db.execute(
                "INSERT INTO runs (state, settings, base_url, started_at, attempts) VALUES (?, ?, ?, ?, 1)",
                [RunState.RUNNING, json.dumps(dict(settings), sort_keys=True), base_url, stamp],
            )
        return self.run(cursor.lastrowid)

    @_read
    def run(self, run_id: int | None) -> RunRow:
        row = next(self.db.query("SELECT * FROM runs WHERE id = ?", [run_id]), None)
        if row is None:
            raise JournalError(f"journal {self.path} has no run {run_id}")
        return _run_row(row)

    @_read
    def last_run(self) -> RunRow | None:
        row = next(self.db.query("SELECT * FROM runs ORDER BY id DESC LIMIT 1"), None)
        return _run_row(row) if row else None

    def resume_run(self, run_id: int) -> RunRow:
        with self.transaction():
            self.db.execute(
                "UPDATE runs SET state = ?, resumed_at = ?, attempts = attempts + 1, finished_at = NULL WHERE id = ?",
                [RunState.RUNNING, now(), run_id],
            )
        return self.run(run_id)

    @_atomic
    def record_attempt_url(self, run_id: int, url: str) -> None:
        """The (redacted) API URL this attempt uses; a resume may point the run at a new one."""
        self.db.execute("UPDATE runs SET attempt_url = ? WHERE id = ?", [url, run_id])

    @_read
    def attempt_url(self, run_id: int) -> str:
        """The API URL the run's latest attempt used (its first URL if no attempt recorded one)."""
        row = self.db.execute("SELECT coalesce(attempt_url, base_url) FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise JournalError(f"journal {self.path} has no run {run_id}")
        return row[0]

    def end_run(self, run_id: int, state: RunState, outcome: Mapping[str, Any]) -> None:
        with self.transaction(durable=True):  # the run's last word, and every answer before it, survive a power cut
            self.db.execute(
                "UPDATE runs SET state = ?, finished_at = ?, outcome = ? WHERE id = ?",
                [state, now(), json.dumps(dict(outcome), sort_keys=True), run_id],
            )

    @_atomic
    def set_total_pages(self, run_id: int, total_pages: int) -> None:
        """Keep the largest total the API has reported (the pipeline stops a run whose total changes)."""
        self.db.execute(
            "UPDATE runs SET total_pages = max(coalesce(total_pages, 0), ?) WHERE id = ?", [total_pages, run_id]
        )

    # -- pages and discovery ---------------------------------------------------------------------------------

    @_atomic
    def record_page(
        self,
        run_id: int,
        page: int,
        ids: Sequence[int],
        total_pages: int,
        max_new: int | None = None,
        *,
        digest: str | None = None,
        bad_items: Sequence[Mapping[str, Any]] = (),
    ) -> list[int]:
        """Journal a listed page and its ids; return the ids seen for the first time (an id on two pages counts once).

        `max_new` caps how many new ids are taken (test mode's --limit): the rest are not journaled at all.
        `digest` fingerprints what the page listed; `bad_items` are the items set aside, kept with their reason.
        """
        stamp = now()
        new_ids: list[int] = []
        for animal_id in ids:
            if max_new is not None and len(new_ids) >= max_new:
                break
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO animals (run_id, id, page, state, attempts, discovered_at, updated_at)"
                " VALUES (?, ?, ?, ?, 0, ?, ?)",
                [run_id, animal_id, page, AnimalState.DISCOVERED, stamp, stamp],
            )
            if cursor.rowcount:
                new_ids.append(animal_id)
        self.db.execute(
            "INSERT OR REPLACE INTO pages (run_id, page, items, total_pages, listed_at, digest, bad_items)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [run_id, page, len(ids), total_pages, stamp, digest, json.dumps(list(map(dict, bad_items))) if bad_items else None],
        )
        self.set_total_pages(run_id, total_pages)
        return new_ids

    @_read
    def listed_pages(self, run_id: int) -> set[int]:
        return {row[0] for row in self.db.execute("SELECT page FROM pages WHERE run_id = ?", [run_id])}

    @_read
    def first_listed_page(self, run_id: int) -> tuple[int, str | None] | None:
        """The lowest page listed and its digest: what a resume lists again to check the data set is the same."""
        row = self.db.execute(
            "SELECT page, digest FROM pages WHERE run_id = ? ORDER BY page LIMIT 1", [run_id]
        ).fetchone()
        return (row[0], row[1]) if row else None

    @_read
    def bad_listing_items(self, run_id: int) -> list[dict[str, Any]]:
        """Listing items set aside (an id the journal cannot hold), each with its page and reason."""
        rows = self.db.execute(
            "SELECT page, bad_items FROM pages WHERE run_id = ? AND bad_items IS NOT NULL ORDER BY page", [run_id]
        )
        return [{"page": page, **item} for page, items in rows for item in json.loads(items)]

    # -- animals ---------------------------------------------------------------------------------------------

    def _move_animals(
        self, run_id: int, ids: Sequence[int], source: AnimalState, target: AnimalState, **columns: Any
    ) -> None:
        """The one place an animal changes state: checks the transition is legal and that every row was in `source`."""
        if target not in ANIMAL_TRANSITIONS[source]:
            raise IllegalTransition(f"animal {source} -> {target}")
        assignments = "".join(f", {name} = ?" for name in columns)
        moved = 0
        for chunk in _chunks(ids):
            cursor = self.db.execute(
                f"UPDATE animals SET state = ?, updated_at = ?{assignments}"
                f" WHERE run_id = ? AND state = ? AND id IN ({_placeholders(chunk)})",
                [target, now(), *columns.values(), run_id, source, *chunk],
            )
            moved += cursor.rowcount
        if moved != len(ids):
            raise JournalChanged(
                f"journal {self.path}: {len(ids) - moved} of {len(ids)} animals were not {source} (-> {target});"
                " the journal changed under this process (a second writer?)"
            )

    @_atomic
    def record_fetched(self, run_id: int, animal_id: int, raw: str | bytes, transformed: str, attempts: int) -> None:
        self._move_animals(
            run_id, [animal_id], A.DISCOVERED, A.FETCHED,
            raw=raw, transformed=transformed, last_error=None, attempts=attempts,
        )

    @_atomic
    def record_quarantined(self, run_id: int, animal_id: int, raw: str | bytes | None, reason: str, attempts: int) -> None:
        self._move_animals(
            run_id, [animal_id], A.DISCOVERED, A.QUARANTINED, raw=raw, last_error=reason, attempts=attempts
        )

    @_atomic
    def record_fetch_failed(self, run_id: int, animal_id: int, reason: str, attempts: int) -> None:
        self._move_animals(run_id, [animal_id], A.DISCOVERED, A.FAILED, last_error=reason, attempts=attempts)

    @_atomic
    def retry_exceptions(self, run_id: int) -> int:
        """Send quarantined and failed animals back to discovered so this attempt tries them again."""
        count = 0
        for state in (A.QUARANTINED, A.FAILED):
            ids = self.animal_ids(run_id, state)
            self._move_animals(run_id, ids, state, A.DISCOVERED, batch_id=None)
            count += len(ids)
        return count

    @_read
    def animal_ids(self, run_id: int, state: AnimalState) -> list[int]:
        return [
            row[0]
            for row in self.db.execute(
                "SELECT id FROM animals WHERE run_id = ? AND state = ? ORDER BY id", [run_id, state]
            )
        ]

    # -- batches ---------------------------------------------------------------------------------------------

    @_atomic
    def create_batch(self, run_id: int, ids: Sequence[int]) -> int:
        """Build a pending batch from fetched animals and bind them to it, in the caller's transaction."""
        cursor = self.db.execute(
            "INSERT INTO batches (run_id, state, ids, size, attempts, created_at) VALUES (?, ?, ?, ?, 0, ?)",
            [run_id, B.PENDING, json.dumps(list(ids)), len(ids), now()],
        )
        batch_id = cursor.lastrowid
        self._move_animals(run_id, ids, A.FETCHED, A.BATCHED, batch_id=batch_id)
        return batch_id

    @_read
    def batch(self, batch_id: int) -> BatchRow:
        row = next(self.db.query("SELECT * FROM batches WHERE id = ?", [batch_id]), None)
        if row is None:
            raise JournalError(f"journal {self.path} has no batch {batch_id}")
        return _batch_row(row)

    @_read
    def batches(self, run_id: int, state: BatchState) -> list[BatchRow]:
        return [
            _batch_row(row)
            for row in self.db.query(
                "SELECT * FROM batches WHERE run_id = ? AND state = ? ORDER BY id", [run_id, state]
            )
        ]

    @_read
    def batch_records(self, batch: BatchRow) -> list[dict[str, Any]]:
        """The outgoing records of a batch, in the batch's order, from the journal alone."""
        by_id: dict[int, str] = {}
        for chunk in _chunks(batch.ids):
            by_id.update(
                self.db.execute(
                    f"SELECT id, transformed FROM animals WHERE run_id = ? AND id IN ({_placeholders(chunk)})",
                    [batch.run_id, *chunk],
                ).fetchall()
            )
        return [json.loads(by_id[animal_id]) for animal_id in batch.ids]

    def _move_batch(self, batch_id: int, source: BatchState, target: BatchState, **columns: Any) -> None:
        """The one place a batch changes state."""
        if target not in BATCH_TRANSITIONS[source]:
            raise IllegalTransition(f"batch {source} -> {target}")
        assignments = "".join(f", {name} = ?" for name in columns)
        cursor = self.db.execute(
            f"UPDATE batches SET state = ?{assignments} WHERE id = ? AND state = ?",
            [target, *columns.values(), batch_id, source],
        )
        if cursor.rowcount != 1:
            raise JournalChanged(
                f"journal {self.path}: batch {batch_id} was not {source} (-> {target});"
                " the journal changed under this process (a second writer?)"
            )

    def room(self) -> int:
        """Bytes the journal can still grow by: free space on its file system, or less under a file size limit."""
        try:
            disk = os.statvfs(self.path.parent)
            grown = max(self.path.stat().st_size, _size(self.path.with_name(self.path.name + "-wal")))
        except OSError as exc:
            raise JournalError(f"journal {self.path}: {exc.strerror}") from None
        room = disk.f_bavail * disk.f_frsize
        limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if limit != resource.RLIM_INFINITY:
            room = min(room, max(0, limit - grown))
        return room

    def check_room_for_answer(self, batch: BatchRow) -> None:
        """Refuse to send a batch whose answer the journal may have no room to record: it would come back in doubt.

        A successful commit proves nothing here: on a full disk a small commit (the `sending` mark, a resume's
        first writes) still fits in the WAL space a failed larger commit left allocated, while the answer, which
        rewrites every animal of the batch, does not. So the room is measured. It is a check, not a reservation:
        a disk someone else fills while the POST is out still fails the answer's commit, which then names it.
        """
        others = self.db.execute(
            "SELECT count(*) FROM batches WHERE run_id = ? AND state IN (?, ?) AND id != ?",
            [batch.run_id, B.WITHHELD, B.SENDING, batch.id],
        ).fetchone()[0]
        in_flight = others + 1
        animals = in_flight * len(batch.ids)  # batches in flight are about this size; all their answers need room
        needed = in_flight * ANSWER_ROOM_BASE + animals * ANSWER_ROOM_PER_ANIMAL
        room = self.room()
        if room < needed:
            raise NoRoomForAnswer(self.path, batch.id, len(batch.ids), room, needed)

    @_atomic
    def mark_withheld(self, batch: BatchRow) -> None:
        """Journaled (committed, not fsynced) as the POST leaves with its body held back: a kill now leaves it unsent.

        Only when the journal has room to record the answer: a POST whose answer cannot be journaled is a
        delivery the next resume cannot know of.
        """
        self.check_room_for_answer(batch)
        self._move_batch(batch.id, batch.state, B.WITHHELD)

    @_atomic
    def mark_sending(self, batch: BatchRow) -> None:
        """The write-ahead mark of a send, committed durably by the caller *before* the body is released.

        From here a kill leaves the batch in doubt; before it (`withheld`) the body provably never left. The room
        for the answer is measured again: the disk may have filled while the POST waited for `100 Continue`, and
        a body withheld now is still provably unsent.
        """
        self.check_room_for_answer(batch)
        self._move_batch(batch.id, batch.state, B.SENDING, sent_at=now())
        self.db.execute("UPDATE batches SET attempts = attempts + 1 WHERE id = ?", [batch.id])

    @_atomic
    def mark_posted(self, batch: BatchRow, status: int, body: str) -> None:
        self._move_batch(batch.id, batch.state, B.POSTED, response_status=status, response_body=body, finished_at=now())
        self._move_animals(batch.run_id, batch.ids, A.BATCHED, A.POSTED)

    @_atomic
    def mark_failed(self, batch: BatchRow, status: int | None, body: str | None, error: str) -> None:
        """The server refused the batch: nothing was delivered, so its animals are failed with the answer kept."""
        self._move_batch(
            batch.id, batch.state, B.FAILED,
            response_status=status, response_body=body, last_error=error, finished_at=now(),
        )
        self._move_animals(batch.run_id, batch.ids, A.BATCHED, A.FAILED, last_error=error)

    @_atomic
    def mark_refused_for_split(self, batch: BatchRow, status: int | None, body: str | None, error: str) -> None:
        """The API refused the whole batch for a record it holds: nothing was delivered, so the animals go back
        to fetched (the refusal is kept on this batch) to be re-sent in smaller batches that isolate the bad record."""
        self._move_batch(
            batch.id, batch.state, B.FAILED,
            response_status=status, response_body=body, last_error=f"{error} (split to isolate it)", finished_at=now(),
        )
        self._move_animals(batch.run_id, batch.ids, A.BATCHED, A.FETCHED, batch_id=None)

    @_atomic
    def mark_in_doubt(self, batch: BatchRow, error: str, status: int | None = None, body: str | None = None) -> None:
        """Outcome unknown: keep its animals bound to it, and remember for good that it was once in doubt."""
        self._move_batch(
            batch.id, batch.state, B.IN_DOUBT,
            last_error=error, response_status=status, response_body=body, finished_at=now(),
        )
        self.db.execute("UPDATE batches SET in_doubt_at = coalesce(in_doubt_at, ?) WHERE id = ?", [now(), batch.id])

    @_atomic
    def unsend(self, batch: BatchRow, error: str) -> None:
        """The POST never reached the API (no connection): the batch is as good as never sent."""
        self._move_batch(batch.id, batch.state, B.PENDING, last_error=error)

    @_atomic
    def sending_to_in_doubt(self, run_id: int) -> list[int]:
        """At start-up a batch still `sending` was in flight when the last process died: it is in doubt."""
        stale = self.batches(run_id, B.SENDING)
        for batch in stale:
            self.mark_in_doubt(batch, "the process stopped while this batch's POST was in flight")
        return [batch.id for batch in stale]

    @_atomic
    def withheld_to_unsent(self, run_id: int) -> list[int]:
        """At start-up a batch still `withheld` lost its process before its body left: provably not sent.

        A first send goes back to pending (sent again as a first send); a re-send of an in-doubt batch goes back
        to in_doubt, exactly as doubtful as its earlier send left it.
        """
        stale = self.batches(run_id, B.WITHHELD)
        for batch in stale:
            if batch.in_doubt_at is None:
                self._move_batch(
                    batch.id, B.WITHHELD, B.PENDING,
                    last_error="the process stopped before this batch's body was released: never sent",
                )
            else:
                self._move_batch(batch.id, B.WITHHELD, B.IN_DOUBT)
        return [batch.id for batch in stale]

    # -- settlements -----------------------------------------------------------------------------------------

    @_atomic
    def record_settlement(self, batch: BatchRow, decision: Decision, reason: str, user: str) -> SettlementRow:
        """Journal a person's decision about a batch and apply it, in one transaction.

        delivered: an in-doubt batch and its animals become settled; a batch already posted after a doubt keeps
        its state (the row is the person's acceptance of it). resend: an in-doubt batch goes back to pending.
        """
        if decision is Decision.RESEND:
            self._move_batch(batch.id, B.IN_DOUBT, B.PENDING)
        elif batch.state is B.POSTED:
            if batch.in_doubt_at is None:
                raise IllegalTransition(f"batch {batch.id} was posted without doubt: there is nothing to settle")
        else:
            self._move_batch(batch.id, B.IN_DOUBT, B.SETTLED, finished_at=now())
            self._move_animals(batch.run_id, batch.ids, A.BATCHED, A.SETTLED)
        cursor = self.db.execute(
            "INSERT INTO settlements (run_id, batch_id, decision, reason, user, settled_at, attempts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [batch.run_id, batch.id, decision, reason, user, now(), batch.attempts],
        )
        row = next(self.db.query("SELECT * FROM settlements WHERE id = ?", [cursor.lastrowid]))
        return _settlement_row(row)

    @_read
    def settlements(self, run_id: int) -> dict[int, SettlementRow]:
        """Each settled batch of the run and its latest settlement (a batch re-sent, then in doubt again, may have two)."""
        rows = self.db.query("SELECT * FROM settlements WHERE run_id = ? ORDER BY id", [run_id])
        return {row["batch_id"]: _settlement_row(row) for row in rows}

    @_read
    def posted_after_doubt(self, run_id: int) -> list[BatchRow]:
        """Batches answered 2xx after having been in doubt: delivered at least once, perhaps twice."""
        return [
            _batch_row(row)
            for row in self.db.query(
                "SELECT * FROM batches WHERE run_id = ? AND state = ? AND in_doubt_at IS NOT NULL ORDER BY id",
                [run_id, B.POSTED],
            )
        ]

    # -- counters --------------------------------------------------------------------------------------------

    @_atomic
    def add_counters(self, run_id: int, counts: Mapping[str, int]) -> None:
        self.db.conn.executemany(
            "INSERT INTO counters (run_id, name, value) VALUES (?, ?, ?)"
            " ON CONFLICT (run_id, name) DO UPDATE SET value = value + excluded.value",
            [(run_id, name, value) for name, value in counts.items() if value],
        )

    @_read
    def counters(self, run_id: int) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, value FROM counters WHERE run_id = ? ORDER BY name", [run_id]))

    @_read
    def count_animals(self, run_id: int) -> dict[str, int]:
        return dict(
            self.db.execute("SELECT state, count(*) FROM animals WHERE run_id = ? GROUP BY state", [run_id])
        )

    @_read
    def count_batches(self, run_id: int) -> dict[str, int]:
        return dict(
            self.db.execute("SELECT state, count(*) FROM batches WHERE run_id = ? GROUP BY state", [run_id])
        )
