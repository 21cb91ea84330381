"""The commands the CLI suggests, written so that each runs as printed: with this invocation's journal and API.

A hint that drops `--journal` sends a person to `animal-sync.db`, where `audit` may well print OK about another
journal. So every suggestion is built here, from what this invocation was given: `--journal` whenever it is not
the default, `--base-url` where the suggested command needs one (a `run`, which does not read the journal's).
A URL's password is never printed: such a URL is shown redacted, and must be typed again.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..config import DEFAULT_BASE_URL, DEFAULT_JOURNAL
from ..urls import redact_url

__all__ = ["Invocation", "command", "invoked", "plural"]


@dataclass(frozen=True)
class Invocation:
    """What the running command was given that a suggestion must carry."""

    journal: Path = DEFAULT_JOURNAL
    base_url: str | None = None  # None: the default API, or (for resume) the journal's
    argv: tuple[str, ...] = ()  # the command line as typed: a `run` suggested after a `run` keeps its flags


_current = Invocation()


def invoked(
    journal: str | os.PathLike[str] | None = None, base_url: str | None = None, argv: tuple[str, ...] | None = None
) -> None:
    """Record what this invocation was given (`main` records the command line, each command its journal and API)."""
    global _current
    _current = Invocation(
        DEFAULT_JOURNAL if journal is None else Path(journal), base_url, _current.argv if argv is None else argv
    )


def _typed_run_flags() -> list[str]:
    """The flags of the `run` being invoked, as typed (a password redacted); none when this is not a `run`."""
    argv = list(_current.argv)
    if not argv or argv[0] != "run":
        return []
    flags = []
    for index, word in enumerate(argv[1:], start=1):
        before = argv[index - 1]
        if before == "--base-url":
            word = redact_url(word)
        elif word.startswith("--base-url="):
            word = "--base-url=" + redact_url(word.partition("=")[2])
        flags.append(word)
    return flags


def _names(words: list[str], flag: str) -> bool:
    return any(word == flag or word.startswith(flag + "=") for word in words)


def command(
    name: str, *args: str, journal: str | os.PathLike[str] | None = None, base_url: str | None = None, url: bool = False
) -> str:
    """`animal-sync NAME ARGS --journal J --base-url U` in backticks, quoted for a shell.

    `journal` defaults to the invocation's; `url=True` carries the invocation's API (or `base_url`, when given).
    A `run` suggested after a `run` keeps the flags that run was typed with.
    """
    path = _current.journal if journal is None else Path(journal)
    typed = _typed_run_flags() if name == "run" else []  # e.g. --shard, --incremental: the run asked for
    parts = ["animal-sync", name, *[word for word in typed if word not in args], *args]
    if path != DEFAULT_JOURNAL and not _names(parts, "--journal"):
        parts += ["--journal", str(path)]
    chosen = base_url if base_url is not None else (_current.base_url if url else None)
    if chosen and chosen.rstrip("/") != DEFAULT_BASE_URL and not _names(parts, "--base-url"):
        parts += ["--base-url", redact_url(chosen)]
    return f"`{shlex.join(parts)}`"


def plural(count: int, one: str, many: str | None = None) -> str:
    """`1 batch`, `2 batches`: a count with its noun (English's -es after a sibilant, or `many` where irregular)."""
    if many is None:
        many = one + ("es" if one.endswith(("s", "sh", "ch", "x", "z")) else "s")
    return f"{count} {one if count == 1 else many}"
