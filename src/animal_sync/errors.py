"""The errors animal-sync reports to a person as one readable line (exit 2), not a traceback.

They carry their fields, not flags: a library caller reads `field`, `value` and `rule`, and only the CLI
words them with the flag or variable that sets the field.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "AlreadySynced", "AnimalSyncError", "ApiNotReached", "ConfigError", "CredentialMissing", "JournalEmpty", "JournalError",
    "JournalMissing", "JournalNeedsUpgrade", "JournaledSettingsInvalid", "NoRunToResume", "OutputError", "PortTaken",
    "SimulatorError", "UNSHOWN", "UnfinishedRun",
]

UNSHOWN: Any = object()  # a value left out of the words, e.g. a URL that did not parse and may hold a password


class AnimalSyncError(Exception):
    """Base of every error the CLI turns into one line and exit code 2."""


class ConfigError(AnimalSyncError):
    """A setting has a value the job cannot run with: `field` (a Settings field) breaks `rule` with `value`."""

    def __init__(self, field: str, value: Any, rule: str) -> None:
        super().__init__(field, value, rule)
        self.field, self.value, self.rule = field, value, rule

    def describe(self, name: str) -> str:
        """The error in words, the setting called `name`: its field for a library caller, its flag for the CLI."""
        shown = "" if self.value is UNSHOWN else f", not {self.value!r}"
        return f"{name} {self.rule}{shown}"

    def __str__(self) -> str:
        return self.describe(self.field)


class JournaledSettingsInvalid(ConfigError):
    """A resume found settings in the journal that this version refuses (e.g. a NaN an older one let through)."""

    def describe(self, name: str) -> str:
        return f"the run's journaled settings cannot be used ({super().describe(name)})"


class CredentialMissing(ConfigError):
    """A resume of an authenticated run was given no secret: the journal never keeps one, so it must come back in.

    `field` is the URL the password goes back into; the token, the other way back, has no field of its own.
    """

    def __init__(self) -> None:
        super().__init__("base_url", UNSHOWN, "needs the password again (the journal keeps no secret), or the token")


class JournalError(AnimalSyncError):
    """The journal file cannot be opened, is not a journal, is newer than us, or is in use."""


class JournalMissing(JournalError):
    """No journal file at `path` (a reader, or a resume, never creates one)."""

    def __init__(self, path: Any) -> None:
        self.path = path
        super().__init__(f"no journal at {path}")


class JournalEmpty(JournalError):
    """A journal file that holds no run yet (a 0-byte file, or one nothing was ever written to)."""

    def __init__(self, path: Any) -> None:
        self.path = path
        super().__init__(f"{path} is empty: it holds no run yet")


class JournalNeedsUpgrade(JournalError):
    """A reader met a journal of an older schema, which only a writer may migrate."""

    def __init__(self, path: Any) -> None:
        self.path = path
        super().__init__(f"{path} needs a schema upgrade")


class UnfinishedRun(JournalError):
    """A new run was asked for while the journal holds an unfinished one: resume it, or abandon it knowingly."""

    def __init__(self, path: Any, run_id: int, started_at: str, base_url: str) -> None:
        self.path, self.run_id, self.started_at, self.base_url = path, run_id, started_at, base_url
        super().__init__(f"journal {path} holds unfinished run {run_id} (started {started_at})")


class NoRunToResume(JournalError):
    """A resume found no run it may continue: none at all (`state` None), or the last one ended that way."""

    def __init__(self, path: Any, run_id: int | None = None, state: str | None = None) -> None:
        self.path, self.run_id, self.state = path, run_id, state
        said = "holds no run" if state is None else f"ended its last run {state}"
        super().__init__(f"journal {path} {said}: there is nothing to resume")


class ApiNotReached(AnimalSyncError):
    """No request of a run's first contact got a connection: nothing was begun or resumed in the journal."""

    def __init__(self, url: str, cause: str, waited: float) -> None:
        self.url, self.cause, self.waited = url, cause, waited
        super().__init__(f"could not reach the Animals API at {url} ({cause}), tried for {waited:.0f} s")


class SimulatorError(AnimalSyncError):
    """The bundled simulator cannot start (for example, its port is taken)."""


class PortTaken(SimulatorError):
    """The simulator's port is in use by another process."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        super().__init__(f"port {port} on {host} is already in use")


class OutputError(AnimalSyncError):
    """A report or export cannot be written where it was asked for (a missing directory, a directory, no room)."""


class AlreadySynced(JournalError):
    """A plain `run` on a journal that already finished a sync against the same API: it would post those animals
    again. Refused, with no request sent, unless the caller chose it (`full_resync`). A test-mode (limited) run
    counts too: the animals it delivered would go out twice."""

    def __init__(self, path: os.PathLike[str] | str, run: Any) -> None:  # run: journal.RunRow
        self.path, self.run = path, run
        limit = (run.settings or {}).get("limit")
        what = f"a sync of its first {limit} animals" if limit else "a full sync"
        super().__init__(
            f"journal {path} already holds run {run.id}, {what} against {run.base_url} that finished"
            f" {run.finished_at}; a new full sync would post {'those' if limit else 'every'} animal"
            f"{'s' if limit else ''} again, so nothing was sent"
        )
