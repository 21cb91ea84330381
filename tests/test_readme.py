"""The docs cannot drift: docs/cli.md is --help, the configuration table and the diagrams match the code, links land."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import typer

from animal_sync.cli import app
from animal_sync.journal import ANIMAL_TRANSITIONS, BATCH_TRANSITIONS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
DOCS = ROOT / "docs"
COMMANDS_DOC = (DOCS / "commands.md").read_text(encoding="utf-8")
CONFIGURATION = (DOCS / "configuration.md").read_text(encoding="utf-8")
HOW_IT_WORKS = (DOCS / "how-it-works.md").read_text(encoding="utf-8")
OPERATIONS = (DOCS / "operations.md").read_text(encoding="utf-8")
GUIDES = ("commands", "configuration", "operations", "guarantees", "simulator", "performance", "how-it-works")
COMMANDS = typer.main.get_command(app).commands


def _generator():  # noqa: ANN202 - a module loaded from its file: the generator is a script, not in the wheel
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_the_current_help() -> None:
    docs = _generator()
    current = docs.DOCS_PATH.read_text(encoding="utf-8") if docs.DOCS_PATH.exists() else ""
    assert current == docs.cli_reference(), f"{docs.DOCS_PATH} is stale: regenerate it with `{docs.REGENERATE}` and commit it"


def test_the_readme_opens_with_what_it_is_then_make_demo_and_make_test() -> None:
    lines = TEXT.splitlines()
    assert lines[0] == "# animal-sync"
    assert lines[2].startswith("Moves every animal from the Animals API")
    block = TEXT.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].startswith("make demo") and block[1].startswith("make test")
    assert TEXT.index("make demo") < TEXT.index("## ")


def test_the_readme_is_a_front_door_that_links_every_guide() -> None:
    assert len(TEXT.splitlines()) <= 300, "the README is a front door: move reference text into docs/"
    for guide in GUIDES:
        assert f"](docs/{guide}.md)" in TEXT, f"the README does not link docs/{guide}.md"
    assert "](docs/benchmarks.md)" in TEXT and "](docs/cli.md)" in TEXT


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_anchor(heading) for heading in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_every_link_between_the_docs_lands_on_a_file_and_a_heading() -> None:
    broken = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def _table_rows() -> dict[str, str]:
    section = CONFIGURATION.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`--"):
            rows[cells[0].split("`")[1]] = cells[1].strip("`")
        elif len(cells) == 5 and cells[0] == "(none)":
            rows[cells[1].strip("`")] = cells[1].strip("`")
    return rows


def test_the_configuration_table_lists_every_run_and_resume_option_with_its_variable() -> None:
    rows = _table_rows()
    for command in ("run", "resume"):
        for param in COMMANDS[command].params:
            if param.name == "help":
                continue
            flag = param.opts[0]
            assert flag in rows, f"docs/configuration.md's table lacks {flag} ({command})"
            assert rows[flag] == (param.envvar or ""), f"{flag}: the table says {rows[flag]!r}, the code {param.envvar!r}"
    assert "ANIMAL_SYNC_TOKEN" in rows


def test_every_command_the_docs_run_exists_and_each_has_its_section() -> None:
    for page in [README, *(DOCS / f"{guide}.md" for guide in GUIDES)]:  # benchmarks.md is prose about versions
        used = set(re.findall(r"animal-sync ([a-z]+)", page.read_text(encoding="utf-8")))
        assert used <= set(COMMANDS), f"{page.name}: {used - set(COMMANDS)}"
    for command in COMMANDS:
        assert f"## {command}\n" in COMMANDS_DOC, f"docs/commands.md has no section for `{command}`"
        assert f"`{command}`" in TEXT, f"the README's command table lacks `{command}`"


def _diagram_edges(first_state: str) -> set[tuple[str, str]]:
    blocks = re.findall(r"```mermaid\n(.*?)```", HOW_IT_WORKS, flags=re.S)
    (block,) = [b for b in blocks if f"[*] --> {first_state}" in b]
    return {
        (source, target)
        for source, target in re.findall(r"^\s*(\w+) --> (\w+)", block, flags=re.M)
    }


def test_the_state_diagrams_are_the_journal_s_transitions() -> None:
    animals = {(s.value, t.value) for s, targets in ANIMAL_TRANSITIONS.items() for t in targets}
    batches = {(s.value, t.value) for s, targets in BATCH_TRANSITIONS.items() for t in targets}
    assert _diagram_edges("discovered") == animals
    assert _diagram_edges("pending") == batches


def test_the_kubernetes_manifest_forbids_overlap_and_keeps_the_journal_on_a_claim() -> None:
    manifest = OPERATIONS.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert "kind: CronJob" in manifest and "concurrencyPolicy: Forbid" in manifest
    assert "kind: PersistentVolumeClaim" in manifest and "claimName: animal-sync-journal" in manifest
    assert "then exec animal-sync resume; else exec animal-sync run" in manifest
    assert "exec animal-sync run --incremental; fi" in manifest  # a nightly job posts only what changed


def test_the_nightly_patterns_resume_an_unfinished_run_else_run_incremental() -> None:
    """The shell test both patterns use must match `status --json` as it is printed, and only an unfinished run."""
    import json

    test = re.compile(r'"state": "(running|interrupted)"')  # the patterns' `grep -Eq` expression
    cron = OPERATIONS.split("## Running from cron", 1)[1].split("\n## ", 1)[0]
    manifest = OPERATIONS.split("```yaml\n", 1)[1].split("```", 1)[0]
    for text in (cron, manifest):
        assert f"grep -Eq '{test.pattern}'" in text and "run --incremental" in text
    for state, unfinished in (("running", True), ("interrupted", True), ("finished", False), ("abandoned", False)):
        printed = json.dumps({"run_id": 1, "state": state, "settled": [{"batch_state": "running"}]}, indent=2)
        assert bool(test.search(printed)) is unfinished
