"""The docs' transcripts are what the tool prints today: scripts/transcripts.py reruns each, and they must match."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):  # noqa: ANN202 - a module loaded from its file: the scripts are tools, not in the wheel
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


transcripts = _script("transcripts")


def _fenced_commands(text: str) -> list[tuple[int, str]]:
    """(offset, block) of each ```text block that shows a `$ ` command."""
    return [(m.start(), m[0]) for m in re.finditer(r"```text\n\$ .*?```", text, flags=re.S)]


def test_every_command_shown_with_its_output_is_a_transcript_or_says_why_it_is_recorded() -> None:
    unmarked = []
    for path in transcripts.doc_files():
        text = path.read_text(encoding="utf-8")
        for offset, block in _fenced_commands(text):
            before = text[:offset].rstrip("\n").rsplit("\n", 1)[-1]
            if not re.fullmatch(r"<!-- (transcript: [\w-]+|recorded: .+) -->", before):
                unmarked.append(f"{path.name}: {block.splitlines()[1]}")
    assert not unmarked, f"transcripts that no script makes (mark them, and add a scenario): {unmarked}"


def test_every_block_has_a_scenario_and_every_scenario_block_a_place() -> None:
    documented = transcripts.read_blocks()
    made = {block for scenario in transcripts.SCENARIOS.values() for block in scenario.blocks}
    assert set(documented) == made, (set(documented) ^ made)
    for block, (_, body) in documented.items():
        shown = [line for line in body.splitlines() if line.startswith("$ ")]
        assert [f"$ {c.shown}" for c in transcripts.commands_of(block)] == shown, f"{block}: {transcripts.REGENERATE}"


def test_normalizing_masks_what_varies_between_runs_and_keeps_the_words() -> None:
    command = transcripts.Command("animal-sync status", vary=(r"^ retries .*",))
    one = ("run 1 finished in 4.3 s at 2026-11-22T03:05:04.594871Z on http://127.0.0.1:38041, 402.5/s, "
           "throughput 1,149.9 animals/s, elapsed=7.047 pid 4242 /tmp/animal-sync-x/j.db 0:00:07   \n retries 119: http_500 17")
    two = ("run 1 finished in 12.0 s at 2026-12-04T21:30:19.9Z on http://localhost:3123, 40/s, "
           "throughput 12.0 animals/s, elapsed=10.4 pid 7 /tmp/other/j.db 0:01:00\n retries 3: read_timeout 3")
    assert transcripts.normalize(one, command) == transcripts.normalize(two, command)
    assert transcripts.normalize("run 1 finished: 5220 animals posted") != transcripts.normalize("run 1 finished: 5221 animals posted")
    assert transcripts.normalize("1 batches") != transcripts.normalize("1 batch")
    counts = transcripts.Command("x", numbers=True, head=1)
    assert transcripts.normalize("posted 3800\n...\nstopped", counts) == transcripts.normalize("posted 1200\nstopped", counts)


def test_a_changed_wording_is_reported_as_stale_with_the_command_that_printed_it() -> None:
    documented = "$ animal-sync audit\naudit of run 1 (finished): 10 of 10 animals posted\nOK: every discovered animal was posted exactly once\n"
    fresh = documented.replace("OK: every", "OK: each")
    assert transcripts.compare("first-audit", documented, documented) is None
    difference = transcripts.compare("first-audit", documented, fresh)
    assert difference is not None and "`animal-sync audit` differs" in difference and "+OK: each" in difference


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("scenario", sorted(transcripts.SCENARIOS))
def test_the_documented_transcripts_are_what_the_tool_prints_today(scenario: str) -> None:
    """Each scenario rerun against a fresh simulator; a difference names the block and `make docs` fixes it."""
    documented = transcripts.read_blocks()
    problems = []
    for block, fresh in transcripts.run_scenario(scenario).items():
        assert block in documented, f"{block} is placed in no doc"
        problems.append(transcripts.compare(block, documented[block][1], fresh))
    problems = [p for p in problems if p]
    assert not problems, "\n\n".join(problems) + f"\n\nregenerate with `{transcripts.REGENERATE}` (or `make docs`)"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_report_screenshot_script_draws_a_png_or_skips_with_its_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shot = _script("report_screenshot")
    target = tmp_path / "report.png"
    if shot.chromium() is None:
        assert shot.main(["--output", str(target)]) == 0 and not target.exists()
        assert "no headless Chromium" in capsys.readouterr().err
        assert shot.main(["--output", str(target), "--require"]) == 1
        pytest.skip("no chromium here: the script's skip path was checked instead")
    assert shot.main(["--output", str(target), "--animals", "300"]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 10_000
