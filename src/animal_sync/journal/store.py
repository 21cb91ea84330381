"""A journal file opened: the checks before opening, the writer's lock, the schema, and transactions.

One process writes a journal at a time (an exclusive flock on the journal file itself, held while it is
open); readers such as `status` open it read-only and may do so while a run writes, thanks to WAL. All writes
of one pipeline step share one transaction (`transaction()`), so the journal costs a commit per step, not one
per animal. The reads and writes themselves live in reads.py and journal.py, on subclasses of `JournalFile`.
"""

from __future__ import annotations

import functools
import inspect
import os
import resource
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, Self, TypeVar

from sqlite_utils import Database

from ..errors import JournalEmpty, JournalError, JournalMissing
from .lock import lock_is_held, lock_journal, read_side_file, write_side_file, writer_pid_path
from .schema import migration_files, migrations

__all__ = ["JournalFile", "JournalRolledBack", "atomic", "chunks", "placeholders", "reading"]


class JournalRolledBack(JournalError):
    """The journal holds fewer durable commits than its side file recorded: committed state was lost (a deleted
    `-wal`, a copy restored over it), so nothing it says about what was sent can be trusted."""

    def __init__(self, path: Path, recorded: int, found: int) -> None:
        self.path, self.recorded, self.found = path, recorded, found
        super().__init__(
            f"journal {path} lost committed state: {writer_pid_path(path).name} records {recorded} durable commits,"
            f" the journal holds {found} (was its -wal file deleted, or an older copy put in its place?);"
            " it cannot say what was sent, so nothing was done: restore the missing -wal or a complete copy,"
            " or start a new journal and reconcile with the API's owner"
        )

P = ParamSpec("P")
T = TypeVar("T")


def atomic(method: Callable[P, T]) -> Callable[P, T]:
    """A write method is all or nothing on its own; inside a caller's transaction it simply joins it, and the
    caller's rollback undoes it (no savepoint per write: the pipeline makes thousands of them a second)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        journal = args[0]
        assert isinstance(journal, JournalFile)
        if journal.db.conn.in_transaction:
            return method(*args, **kwargs)
        with journal.transaction():
            return method(*args, **kwargs)

    return wrapper


def reading(method: Callable[P, T]) -> Callable[P, T]:
    """A read method: an SQLite error (a damaged file, a failing disk) is a one-line JournalError, as for writes.

    Reads happen outside `Journal.transaction()` (reports, a resume's set-up, a batch's records before its POST),
    so without this a damaged journal would end the CLI with a traceback instead of one line.
    """

    def journal_error(journal: Any, exc: sqlite3.Error | OverflowError) -> JournalError:
        if isinstance(exc, OverflowError):  # e.g. `audit --run 99999999999999999999`: no row can have that id
            return JournalError(f"journal {journal.path}: a number asked for is beyond any id the journal holds ({exc})")
        return JournalError(f"journal {journal.path}: {exc}")

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                yield from method(*args, **kwargs)  # type: ignore[misc]
            except (sqlite3.Error, OverflowError) as exc:
                raise journal_error(args[0], exc) from None

        return generator  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except (sqlite3.Error, OverflowError) as exc:
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



def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def placeholders(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def chunks(values: Sequence[int], size: int = 500) -> Iterator[Sequence[int]]:
    """SQLite caps bound parameters per statement; long id lists go in slices."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


class JournalFile:
    """An open journal file: its connection, its lock and its transactions, with no reads or writes of rows."""

    def __init__(self, db: Database, path: Path, readonly: bool, lock_fd: int | None = None) -> None:
        self.db = db
        self.path = path
        self.readonly = readonly
        self._lock_fd = lock_fd  # the writer's flock on the journal file (a reader's probe); closed after the connection
        self._mark: int | None = None  # the writer's durable commits (PRAGMA user_version), mirrored in the side file
        self._recorded: int | None = None  # a reader: the mark the side file held before the connection opened
        self._fresh = False  # a writer that created the file: a side file beside it belonged to a journal deleted since

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False, exclusive: bool = True) -> Self:
        """Open (and for writers create and migrate) a journal; every failure is a one-line JournalError.

        A writer takes the writer's lock first (`exclusive`, the default), so no process migrates or writes a journal
        another one is using; `exclusive=False` is for tests that play a second writer on purpose. A reader never
        writes: a journal of an older schema is read through a migrated copy in memory.
        """
        path = Path(path)
        lock_fd = None
        if readonly:
            if not path.is_file():
                raise JournalMissing(path)
            if not os.access(path, os.R_OK):
                raise JournalError(f"journal {path} is not readable")
            side = read_side_file(path)  # before the connection: its snapshot is then at least as new as the mark
            try:  # held until the connection closes: closing another descriptor of the file drops SQLite's locks
                lock_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise JournalError(f"journal {path}: {exc.strerror}") from None
            try:
                conn = sqlite3.connect(_read_only_uri(path), uri=True)
            except sqlite3.Error as exc:
                os.close(lock_fd)
                raise JournalError(f"journal {path}: {exc}") from None
        else:
            if path.is_dir():
                raise JournalError(f"journal path {path} is a directory")
            if not path.parent.is_dir():
                raise JournalError(f"journal directory {path.parent} does not exist")
            if path.exists() and not os.access(path, os.W_OK):
                raise JournalError(f"journal {path} is read-only")
            if not path.exists() and not os.access(path.parent, os.W_OK):
                raise JournalError(f"cannot create journal in {path.parent}: directory is not writable")
            fresh = not path.exists() or path.stat().st_size == 0  # a side file left beside no journal is stale
            if exclusive:
                lock_fd = lock_journal(path)  # before SQLite opens the file: see lock_journal
            try:
                conn = sqlite3.connect(path)
            except sqlite3.Error as exc:
                if lock_fd is not None:
                    os.close(lock_fd)
                raise JournalError(f"journal {path}: {exc}") from None
        journal = cls(Database(conn), path, readonly, lock_fd)
        if readonly and side is not None:
            journal._recorded = side.mark
        journal._fresh = not readonly and fresh
        try:
            journal._check_mark()  # first: a rolled-back journal is not migrated, nor read
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
        known = {path.stem for path in migration_files()}
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
                raise JournalEmpty(self.path)
            if known - applied:  # an older schema: read through a migrated copy, and the file stays as it was
                memory = sqlite3.connect(":memory:")
                self.db.conn.backup(memory)
                self.db.conn.close()
                self.db = Database(memory)
                registry.apply(self.db)
            return
        self.db.enable_wal()
        # NORMAL: commits reach the OS at once, and transaction(durable=True) fsyncs where a power cut matters.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        registry.apply(self.db)

    def _read_mark(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _check_mark(self) -> None:
        """Refuse a journal that holds fewer durable commits than its side file recorded (JournalRolledBack).

        The side file is written only after a durable commit is on disk, so a kill or a power cut leaves it at or
        behind the journal: it is ahead only when commits the journal had made are gone.
        """
        found = self._read_mark()
        if self.readonly:
            recorded = self._recorded
        elif self._lock_fd is None:
            return  # a writer without the lock (tests) keeps no mark: it cannot vouch for one
        else:
            side = None if self._fresh else read_side_file(self.path)
            recorded = side.mark if side is not None else None
        if recorded is not None and recorded > found:
            raise JournalRolledBack(self.path, recorded, found)
        if self.readonly:
            return
        try:  # the writer's pid, for `status` and for the refusal a second writer gets
            write_side_file(self.path, found, durable=False)
        except OSError as exc:  # e.g. a side file another user left, in a directory shared by group
            raise JournalError(f"cannot lock journal {self.path}: {writer_pid_path(self.path)}: {exc.strerror}") from None
        self._mark = found

    def writer_alive(self) -> bool:
        """Whether a writer holds this journal now: this process, if it is the writer, or another one (its lock)."""
        if not self.readonly:
            return self._lock_fd is not None
        return self._lock_fd is not None and lock_is_held(self._lock_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection, then let go of the lock. A writer whose every commit is checkpointed into the
        journal itself removes its side file: nothing is left beside the journal, and no -wal holds anything."""
        if self._mark is not None and self._lock_fd is not None and self._checkpointed():
            try:
                writer_pid_path(self.path).unlink()
            except OSError:
                pass  # already gone, or not ours to remove: it stays, harmless
        self.db.conn.close()
        if self._lock_fd is not None:  # only now: closing it earlier would drop SQLite's own locks on the file
            os.close(self._lock_fd)
            self._lock_fd = None

    def _checkpointed(self) -> bool:
        """Copy every commit from the -wal into the journal file and empty the -wal; True when all of it went."""
        try:
            busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            return False
        return busy == 0

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
            marked = outermost and self._mark is not None
            try:
                with self.db.atomic():
                    yield
                    if marked:  # one more durable commit, counted inside it
                        self.db.execute(f"PRAGMA user_version = {self._mark + 1}")
            finally:
                if outermost:
                    self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {exc}") from None
        if marked:
            self._mark += 1
            try:  # after the commit is on disk: a kill between the two leaves the side file behind, never ahead
                write_side_file(self.path, self._mark)
            except OSError:
                pass  # the side file keeps an older mark: a rollback to before it is still caught

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
