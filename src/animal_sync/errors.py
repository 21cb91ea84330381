"""The errors animal-sync reports to a person as one readable line (exit 2), not a traceback."""

__all__ = ["AnimalSyncError", "ConfigError", "CredentialMissing", "JournalError", "OutputError", "SimulatorError"]


class AnimalSyncError(Exception):
    """Base of every error the CLI turns into one line and exit code 2."""


class ConfigError(AnimalSyncError):
    """A flag or environment variable has a value the job cannot run with."""


class CredentialMissing(ConfigError):
    """A resume of an authenticated run was given no secret: the journal never keeps one, so it must come back in."""


class JournalError(AnimalSyncError):
    """The journal file cannot be opened, is not a journal, is newer than us, or is in use."""


class SimulatorError(AnimalSyncError):
    """The bundled simulator cannot start (for example, its port is taken)."""


class OutputError(AnimalSyncError):
    """A report or export cannot be written where it was asked for (a missing directory, a directory, no room)."""
