"""The CLI reference, docs/cli.md, generated from each command's own --help so it never drifts.

A tool of the repository, not of the wheel: `python scripts/gen_cli_docs.py` rewrites it;
`python scripts/gen_cli_docs.py --check` exits 1 if it is stale.
Help is rendered by click's plain formatter at a fixed width (not typer's Rich panels), so the text is
the same on every machine, terminal or not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from animal_sync.cli import app

__all__ = ["DOCS_PATH", "cli_reference", "main"]

DOCS_PATH = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
WIDTH = 100
REGENERATE = "python scripts/gen_cli_docs.py"


def _plain_help(command: typer.core.click.Command, name: str, parent: typer.core.click.Context | None) -> tuple[str, typer.core.click.Context]:
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}  # e.g. -h
    ctx = command.context_class(command, info_name=name, parent=parent, **settings)
    formatter = ctx.make_formatter()
    # The next class after typer's in the MRO is click's own Command/Group: its help is plain text.
    super(type(command), command).format_help(ctx, formatter)
    return formatter.getvalue().rstrip() + "\n", ctx


def cli_reference() -> str:
    """docs/cli.md's text: the tool's help, then each command's, in the order `--help` lists them."""
    root = typer.main.get_command(app)
    text, ctx = _plain_help(root, "animal-sync", None)
    parts = [
        "# CLI reference\n",
        f"Generated from `--help` by `{REGENERATE}`; a test fails when it drifts. Do not edit by hand.\n",
        "```text\n" + text + "```\n",
    ]
    for name, command in root.commands.items():
        help_text, _ = _plain_help(command, name, ctx)
        parts.append(f"## animal-sync {name}\n\n```text\n{help_text}```\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    expected = cli_reference()
    if "--check" in args:
        current = DOCS_PATH.read_text(encoding="utf-8") if DOCS_PATH.exists() else ""
        if current != expected:
            print(f"{DOCS_PATH} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    DOCS_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOCS_PATH.write_text(expected, encoding="utf-8")
    print(f"wrote {DOCS_PATH}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
