"""The `animal-sync` command line: options in, library calls out, exit codes back. No logic lives here.

Exit codes: 0 finished and clean; 1 finished (or stopped) with failed, quarantined, in-doubt or missing
animals; 2 a usage or journal error, always as one line, or a credential the API refused; 130 stopped by
Ctrl-C, SIGTERM or SIGHUP.

This module is the app and its entry point: the commands in the order `--help` lists them, and every error a
person can cause worded as one line. The commands live by what they do: sync.py (run, resume, settle), reports.py
(status, audit, export, report), tools.py (demo, simulate), web.py (serve); options.py holds the options they share.
"""

from __future__ import annotations

import sqlite3

import typer
from typer.core import TyperOption
from typer.exceptions import TyperException

from ..errors import AnimalSyncError, ConfigError, CredentialMissing
from . import reports, sync, tools, web
from .sync import exit_code, stop_on_signals

__all__ = ["app", "exit_code", "main", "stop_on_signals"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Move every animal from the Animals API to its home endpoint, exactly once, with proof.",
)

COMMANDS = (  # registered in this order, which is the order of `--help` and of docs/cli.md
    sync.run, sync.resume, reports.status, reports.audit, sync.settle, reports.export, reports.report,
    tools.demo, tools.simulate, web.serve,
)
for command in COMMANDS:
    app.command()(command)


def _option(field: str) -> TyperOption | None:
    """The option that sets a Settings field, read from the commands' own option table (None: no flag sets it)."""
    for command in typer.main.get_command(app).commands.values():  # type: ignore[attr-defined]
        for param in command.params:
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
    return exc.describe(flag)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: every error a person can cause ends as one line and exit code 2."""
    try:
        result = app(args=argv, standalone_mode=False)
    except TyperException as exc:  # typer's vendored click: bad flags, values and commands
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `animal-sync {ctx.info_name} --help`)" if ctx is not None and ctx.parent else ""
        typer.echo(f"animal-sync: {exc.format_message()}{hint}", err=True)
        return 2
    except ConfigError as exc:
        typer.echo(f"animal-sync: {_config_words(exc)}", err=True)
        return 2
    except AnimalSyncError as exc:
        typer.echo(f"animal-sync: {exc}", err=True)
        return 2
    except sqlite3.Error as exc:  # a journal damaged on disk, met by a read the library did not wrap
        typer.echo(f"animal-sync: the journal cannot be read: {exc}", err=True)
        return 2
    except typer.Abort:
        return 130
    return result if isinstance(result, int) else 0
