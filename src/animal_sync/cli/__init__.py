"""The `animal-sync` command line: options in, library calls out, exit codes back. No logic lives here.

Exit codes: 0 finished and clean; 1 finished (or stopped) with failed, quarantined, in-doubt or missing
animals, or an API that never answered (nothing begun); 2 a usage or journal error, always as one line, or a credential the API refused; 130 stopped by
Ctrl-C, SIGTERM or SIGHUP.

This module is the app and its entry point: the commands in the order `--help` lists them, and every error a
person can cause worded as one line. The commands live by what they do: sync.py (run, resume, settle), reports.py
(status, audit, export, report), tools.py (demo, simulate), web.py (serve); options.py holds the options they share.
The other modules are the CLI's words and renderings: suggest.py (commands to type next, runnable as printed),
render.py (the text of reports), progress.py and bars.py (progress), watch.py (`status --watch`), terminal.py
(text from the journal made safe for a terminal), demo.py (`demo`).
It may import any part, and it must never be imported by one: the library speaks no CLI (tests/test_cli_words.py,
tests/test_layout.py).
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated


import typer
from typer.core import TyperOption
from typer.exceptions import TyperException

from ..config import DEFAULT_JOURNAL
from ..errors import (
    AlreadySynced, AnimalSyncError, ConfigError, CredentialMissing, JournalEmpty, JournaledSettingsInvalid, JournalMissing,
    JournalNeedsUpgrade, NoRunToResume, PortTaken, UnfinishedRun,
)
from . import reports, sync, tools, web
from .suggest import command, invoked
from .sync import exit_code, stop_on_signals

__all__ = ["app", "error_words", "exit_code", "main", "stop_on_signals"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # click's plain help, the same text as docs/cli.md: flags shown as flags (never `<bool>`), paragraphs wrapped
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"animal-sync {version('animal-sync')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Move every animal from the Animals API to its home endpoint, exactly once, with proof."""


COMMANDS = (  # registered in this order, which is the order of `--help` and of docs/cli.md
    sync.run, sync.resume, reports.status, reports.audit, sync.settle, reports.export, reports.report,
    tools.demo, tools.simulate, web.serve,
)
for registered in COMMANDS:
    app.command()(registered)


def _option(field: str) -> TyperOption | None:
    """The option that sets a Settings field, read from the commands' own option table (None: no flag sets it)."""
    for cmd in typer.main.get_command(app).commands.values():  # type: ignore[attr-defined]
        for param in cmd.params:
            if isinstance(param, TyperOption) and param.name == field:
                return param
    return None


def _config_words(exc: ConfigError) -> str:
    """A settings error worded with the flag a person types; a field no flag sets keeps its field name."""
    option = _option(exc.field)
    flag = option.opts[0] if option is not None else exc.field
    if isinstance(exc, CredentialMissing):  # the secret comes back the way it came in: a flag, or a variable
        return (
            "the run was authenticated and the journal keeps no secret: pass the password again in"
            f" {flag} http://USER:PASSWORD@HOST (or {option.envvar if option else 'its variable'}),"
            " or the token in ANIMAL_SYNC_TOKEN"
        )
    if isinstance(exc, JournaledSettingsInvalid):
        return f"{exc.describe(flag)}; start a new one with {command('run', '--abandon', url=True)}"
    return exc.describe(flag)


def error_words(exc: AnimalSyncError) -> str:
    """A library error in the CLI's words: what it says, then the command that comes next, runnable as printed."""
    if isinstance(exc, ConfigError):
        return _config_words(exc)
    if isinstance(exc, UnfinishedRun):
        return (
            f"{exc}; continue it with {command('resume', journal=exc.path)}, or start over knowingly with"
            f" {command('run', '--abandon', journal=exc.path, base_url=exc.base_url)}"
        )
    if isinstance(exc, AlreadySynced):
        return (
            f"{exc}. Choose: {command('run', '--incremental', journal=exc.path, url=True)} posts only what is new or"
            f" changed; {command('run', '--full-resync', journal=exc.path, url=True)} sends everything again,"
            " knowingly; or give the new sync a journal of its own (--journal NEW.db)"
        )
    if isinstance(exc, (JournalMissing, JournalEmpty, NoRunToResume)):
        return f"{exc}; start a run with {command('run', journal=exc.path, url=True)}"
    if isinstance(exc, JournalNeedsUpgrade):
        return f"{exc}; {command('resume', journal=exc.path)} applies it once"
    from ..reports.settle import NoResendHere  # here, not above: only `settle` raises it, and a run need not load it

    if isinstance(exc, NoResendHere):
        return f"{exc}; settle it with --delivered, or not at all"
    if isinstance(exc, PortTaken):
        return f"{exc}; choose another with --port, e.g. {command('simulate', '--port', '0', journal=DEFAULT_JOURNAL)} (0 picks a free one)"
    return str(exc)


def _flag_value_words(exc: TyperException, args: list[str]) -> str:
    """`--dry-run true`: a value after a flag that takes none, said as such."""
    ctx = getattr(exc, "ctx", None)
    if ctx is None or "unexpected extra argument" not in exc.format_message().lower():
        return ""
    flags = {
        opt for param in ctx.command.params if getattr(param, "is_flag", False)
        for opt in (*param.opts, *param.secondary_opts)
    }
    for before, word in zip(args, args[1:]):
        if word.lower() in {"true", "false", "yes", "no", "1", "0", "on", "off"} and before in flags:
            return f"; {before} is a flag and takes no value: pass it alone, or leave it out"
    return ""


@contextmanager
def dotenv_defaults() -> Iterator[None]:
    """A `.env` in the working directory, read for ANIMAL_SYNC_* variables the environment does not set.

    Flags beat the environment, which beats `.env`: a variable already set is kept, and click reads the
    variables only for the flags not given. The environment is as it was once the command returns.
    """
    path = Path(".env")
    added = []
    if path.is_file():
        from dotenv import dotenv_values  # only where there is a file to read: a run pays nothing for it otherwise

        for name, value in dotenv_values(path).items():
            if name.startswith("ANIMAL_SYNC_") and value is not None and name not in os.environ:
                os.environ[name] = value
                added.append(name)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: every error a person can cause ends as one line and exit code 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    invoked(argv=tuple(args))  # and the default journal: a command that takes one records it
    try:
        with dotenv_defaults():
            result = app(args=args, standalone_mode=False)
    except TyperException as exc:  # typer's vendored click: bad flags, values and commands
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `animal-sync {ctx.info_name} --help`)" if ctx is not None and ctx.parent else ""
        typer.echo(f"animal-sync: {exc.format_message()}{_flag_value_words(exc, args)}{hint}", err=True)
        return 2
    except AnimalSyncError as exc:
        typer.echo(f"animal-sync: {error_words(exc)}", err=True)
        return 2
    except sqlite3.Error as exc:  # a journal damaged on disk, met by a read the library did not wrap
        typer.echo(f"animal-sync: the journal cannot be read: {exc}", err=True)
        return 2
    except typer.Abort:
        return 130
    finally:
        invoked(argv=())  # a renderer called later, outside a command, suggests no journal of this one
    return result if isinstance(result, int) else 0
