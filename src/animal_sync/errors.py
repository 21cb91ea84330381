"""The errors animal-sync reports to a person as one readable line (exit 2), not a traceback.

They carry their fields, not flags: a library caller reads `field`, `value` and `rule`, and only the CLI
words them with the flag or variable that sets the field.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AnimalSyncError", "ConfigError", "CredentialMissing", "JournalError", "JournaledSettingsInvalid", "OutputError",
    "SimulatorError", "UNSHOWN",
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
        return (
            f"the run's journaled settings cannot be used ({super().describe(name)});"
            " start a new one with `animal-sync run --abandon`"
        )


class CredentialMissing(ConfigError):
    """A resume of an authenticated run was given no secret: the journal never keeps one, so it must come back in.

    `field` is the URL the password goes back into; the token, the other way back, has no field of its own.
    """

    def __init__(self) -> None:
        super().__init__("base_url", UNSHOWN, "")

    def describe(self, name: str) -> str:
        return (
            "the run was authenticated and the journal keeps no secret: pass the password again in"
            f" {name} (http://USER:PASSWORD@HOST), or the token"
        )


class JournalError(AnimalSyncError):
    """The journal file cannot be opened, is not a journal, is newer than us, or is in use."""


class SimulatorError(AnimalSyncError):
    """The bundled simulator cannot start (for example, its port is taken)."""


class OutputError(AnimalSyncError):
    """A report or export cannot be written where it was asked for (a missing directory, a directory, no room)."""
