"""The docs' transcripts, rerun: every `$ command` and its output in README.md and docs/*.md comes from here.

A transcript is a fenced block between two markers:

    <!-- transcript: NAME -->
    ```text
    $ animal-sync audit
    ...
    ```
    <!-- /transcript -->

`python scripts/transcripts.py` runs every scenario below against the bundled simulator (a fresh one per scenario,
in its own process, in a fresh directory) and rewrites each stale block in place; `--check` only compares and
exits 1 when a block is stale; `--only NAME` reruns the scenario holding that block. tests/test_transcripts.py
runs `--check`'s comparison, so a change of wording fails the suite until the docs are regenerated.

What varies from one run to the next is compared after `normalize()`: times, timestamps, ports, rates,
durations, pids and paths, and, per command, what chaos and timing decide (retry counts; all numbers of a run
stopped by Ctrl-C). What is written is the run's own text, with the simulator's random port shown as the
documented one (3123) and the scratch directory dropped, so the docs read as a session on the reader's machine.
A block that no script can stage is marked `<!-- recorded: why -->` instead, and the test lists it.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from animal_sync.simulator import SimulatorProcess

__all__ = ["DOC_FILES", "SCENARIOS", "Command", "Scenario", "check", "normalize", "read_blocks", "run_scenario"]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: `animal-sync` is typed as the reader types it
DOC_PORT = 3123  # what a reader's `simulate` listens on, and the default --base-url's port
BLOCK = re.compile(
    r"(?P<open><!-- transcript: (?P<name>[\w-]+) -->\n```text\n)(?P<body>.*?)(?P<close>```\n<!-- /transcript -->)",
    re.S,
)
REGENERATE = "python scripts/transcripts.py"
COMMAND_SECONDS = 120  # no command of a transcript takes a tenth of that


def doc_files() -> list[Path]:
    """README.md and every guide under docs/ (not docs/incoming/, whose text the lead has not placed yet)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


DOC_FILES = doc_files()


@dataclass(frozen=True)
class Command:
    """One line a reader types, and how to show what it printed.

    `run` is what is executed when it differs from `shown` (a free port instead of 3123). `hidden` commands set
    the scene and print nothing; `background` ones keep running while the next ones run. Ctrl-C (SIGINT to the
    process group, as a terminal does) is sent `interrupt_after` seconds after a line matches `until` (after the
    start without `until`): a loaded machine may take seconds just to start Python, and a Ctrl-C then would stop
    nothing the reader sees. `head` lines are shown, then only lines matching `keep`, each run of others as one `...`.
    For the comparison, `vary` patterns (re.M) are masked, `numbers` masks every number, `unordered` sorts lines.
    """

    shown: str
    run: str | None = None
    hidden: bool = False
    background: bool = False
    interrupt_after: float | None = None
    until: str | None = None
    head: int | None = None
    keep: str | None = None
    vary: tuple[str, ...] = ()
    numbers: bool = False
    unordered: bool = False
    restart_simulator: tuple[str, ...] | None = None  # not a command: restart the simulator on its port with these args


@dataclass(frozen=True)
class Scenario:
    """Commands run in order in one fresh directory, against one simulator started with `simulator` args."""

    simulator: tuple[str, ...] | None
    blocks: dict[str, tuple[Command, ...]] = field(default_factory=dict)


def hidden(line: str, **kwargs: object) -> Command:
    return Command(shown=line, hidden=True, **kwargs)  # type: ignore[arg-type]


# A run stopped by Ctrl-C: how far it got is timing, and so is which states its counts name (animals_batched=...).
_CONSOLE_RUN = dict(numbers=True, head=3, keep=r"stopping|run_finished|final=True|^run \d", vary=(r"(?:animals_\w+=\S+ )+", r"resent=\w+"))
_STATUS_VARY = (r"^ retries .*(?:\n {15,}\S.*)*", r"^ POSTs .*(?:\n {15,}\S.*)*")
_SHARDS = " ".join(f"--journal shard-{i}.db" for i in range(4))

SCENARIOS: dict[str, Scenario] = {
    # A run slower than 10 s (a loaded machine) logs a progress event before the final one: that is timing.
    "demo": Scenario(None, {"demo": (Command(
        "animal-sync demo", vary=(r"\"retries\": \d+",), head=1, keep=r'"final": true|^[^{]',
    ),)}),
    # The README's first sync: a simulator of 10,000 animals, so that the run lasts long enough to be stopped by hand.
    "first-sync": Scenario(("--strict", "--animals", "10000"), {
        "first-simulate": (Command(
            "animal-sync simulate --strict --animals 10000",
            run="animal-sync simulate --strict --animals 10000 --port 0", until=r"^Animals API simulator on",
        ),),
        "first-run": (Command("animal-sync run --log-format console", until=r"run_started", interrupt_after=1.5, **_CONSOLE_RUN),),
        "run-refused": (
            Command("animal-sync run", vary=(r"started \S+",)),
            Command("echo $?"),
        ),
        "first-resume": (Command("animal-sync resume --log-format console", numbers=True, head=2,
                                 keep=r"run_finished|final=True|^run \d", vary=(r"resent=\w+",)),),
        "first-audit": (Command("animal-sync audit"),),
        "first-report": (Command("animal-sync report --html report.html"),),
        "status-finished": (Command("animal-sync status", vary=_STATUS_VARY),),
        "resume-finished": (Command("animal-sync resume --quiet"),),
        "run-again-refused": (Command("animal-sync run"), Command("echo $?")),
        "export": (
            Command("animal-sync export | head -2"),
            Command("animal-sync export --format csv | head -3"),
            Command("animal-sync export --format csv --what raw --output raw.csv"),
        ),
    }),
    "dry-run": Scenario(("--strict", "--animals", "2000"), {
        "dry-run": (
            Command("animal-sync run --journal try.db --dry-run --quiet"),
            Command("animal-sync audit --journal try.db"),
            Command("animal-sync run --journal test.db --limit 50 --quiet"),
        ),
    }),
    "incremental": Scenario(("--animals", "50", "--chaos", "0"), {
        "incremental": (
            Command("animal-sync run --incremental --quiet"),
            Command("animal-sync run --incremental --quiet"),
            hidden("restart", restart_simulator=("--animals", "50", "--chaos", "0", "--revise", "3", "--revise", "7")),
            Command("animal-sync run --incremental --quiet"),
            Command("animal-sync audit"),
        ),
    }),
    "bad-data": Scenario(("--animals", "30", "--chaos", "0", "--fault", "7=bad_born_at", "--fault", "8=html"), {
        "bad-data": (
            Command("animal-sync run --journal j.db --quiet", unordered=True),
            Command("animal-sync audit --journal j.db"),
        ),
    }),
    "progress-event": Scenario(("--animals", "2000", "--chaos", "0"), {
        "progress-event": (Command(
            "animal-sync run --progress log --progress-every 0.5 2>&1 | grep '\"event\": \"progress\"' | head -1",
            numbers=True, vary=(r'"eta_seconds": (?:null|[\d.]+)',),
        ),),
    }),
    "shards": Scenario(("--strict", "--animals", "2000"), {
        "shards-status": (
            hidden("for i in 0 1 2 3; do animal-sync run --shard $i/4 --journal shard-$i.db --quiet & done; wait"),
            Command(f"animal-sync status {_SHARDS}"),
        ),
        "shards-audit": (Command(f"animal-sync audit {_SHARDS}"),),
    }),
    "watch": Scenario(("--strict", "--animals", "6000"), {
        "watch": (
            hidden("animal-sync run --journal watch.db --quiet", background=True),
            hidden("while [ ! -s watch.db ]; do sleep 0.05; done; sleep 0.5"),
            Command("animal-sync status --journal watch.db --watch --interval 2 | cat", numbers=True, head=2,
                    keep=r"^run \d+: ", vary=(r"pages \d+/(?:\d+|\?)",)),  # before the first page, the total is unknown
        ),
    }),
}


# --- normalizing: what differs between two honest runs -----------------------------------------------------------

_RULES: tuple[tuple[str, str], ...] = (
    (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?", "<time>"),
    (r"\b(?:127\.0\.0\.1|localhost):\d+", "<host>:<port>"),
    (r"(?:/tmp|/var/tmp|/private)/[^\s'\"`),]+", "<path>"),
    (r"\bpid[ =:]*\d+", "pid <pid>"),
    (r"\b\d[\d,]*(?:\.\d+)?(?: animals)?/s\b", "<rate>"),
    (r"(\"?\b(?:elapsed|\w+_rate|eta_seconds)\"?[=:] ?)(?:null|[\d.]+)", r"\1<n>"),
    (r"\b\d+(?:\.\d+)? (?:s|ms|seconds)\b", "<duration>"),
    (r"\b\d+:\d\d:\d\d\b", "<clock>"),
)


def normalize(text: str, command: Command | None = None) -> str:
    """The text with what legitimately varies masked, so two honest runs compare equal."""
    for pattern in command.vary if command else ():
        text = re.sub(pattern, "<varies>", text, flags=re.M)
    for pattern, replacement in _RULES:
        text = re.sub(pattern, replacement, text)
    if command is not None and command.numbers:
        text = re.sub(r"\d[\d,.]*", "N", text)
    lines = [line.rstrip() for line in text.splitlines()]
    if command is not None and command.head is not None:  # how many lines an elision hides is timing
        lines = [line for line in lines if line != "..."]
    if command is not None and command.unordered:
        lines.sort()
    return "\n".join(lines)


# --- running -----------------------------------------------------------------------------------------------------

def _environment(base_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANIMAL_SYNC_") and k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", COLUMNS="80", LINES="50", TERM="dumb", NO_COLOR="1", TZ="UTC")
    if base_url:
        env["ANIMAL_SYNC_BASE_URL"] = base_url
    return env


def _shape(command: Command, output: str) -> str:
    """What the docs show of an output: its first `head` lines, then the lines `keep` matches."""
    lines = [line.rstrip() for line in output.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if command.head is None or len(lines) <= command.head:
        return "\n".join(lines)
    shown, elided = lines[: command.head], False
    for line in lines[command.head:]:
        if command.keep and re.search(command.keep, line):
            shown.append(line)
            elided = False
        elif not elided:
            shown.append("...")
            elided = True
    return "\n".join(shown)


# The child as a terminal would start it: with Ctrl-C at its default. A shell that runs a job in the background
# (CI, `cmd &`) has its children ignore SIGINT, an ignored signal stays ignored across exec, and bash cannot reset
# one it was started with; so a tiny Python resets it, then execs bash. (A preexec_fn would do it in the forked
# child, which is unsafe in a process with threads, such as pytest with its timeout watchdog.)
_WITH_CTRL_C = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"


def _shell(script: str) -> list[str]:
    return [sys.executable, "-S", "-c", _WITH_CTRL_C, "bash", "-c", script]


def _execute(command: Command, cwd: Path, env: dict[str, str], last_code: int) -> tuple[str, int, subprocess.Popen[bytes] | None]:
    line = command.run or command.shown
    script = f"(exit {last_code}); {line}"  # `echo $?` sees the previous command's exit code, as in a shell
    if command.background:
        process = subprocess.Popen(_shell(line), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        return "", 0, process
    process = subprocess.Popen(_shell(script), cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    assert process.stdout is not None
    chunks: list[bytes] = []
    started = time.monotonic()
    armed_at = None if command.until else started  # when the interrupt's clock starts
    interrupted = False
    while True:
        timeout = 0.05
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            chunks.append(chunk)
        if armed_at is None and re.search(command.until or "", b"".join(chunks).decode(errors="replace"), re.M):
            armed_at = time.monotonic()
        wanted = command.interrupt_after is not None or command.until is not None
        if wanted and not interrupted and armed_at is not None and time.monotonic() - armed_at >= (command.interrupt_after or 0.0):
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
            interrupted = True
        if time.monotonic() - started > COMMAND_SECONDS:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise RuntimeError(f"{command.shown!r} ran for over {COMMAND_SECONDS} s; it printed: {b''.join(chunks)[-2000:]!r}")
    code = process.wait()
    return b"".join(chunks).decode("utf-8", "replace"), code, None


def run_scenario(name: str) -> dict[str, str]:
    """Run one scenario; its blocks' texts, as the docs show them, by block name."""
    scenario = SCENARIOS[name]
    if shutil.which("animal-sync", path=str(BIN)) is None:
        raise RuntimeError(f"no animal-sync beside {sys.executable}: run this with the project's venv python")
    blocks: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="animal-sync-transcript-") as scratch:
        cwd = Path(scratch)
        simulator = SimulatorProcess(*scenario.simulator).__enter__() if scenario.simulator is not None else None
        background: list[subprocess.Popen[bytes]] = []
        try:
            ports: set[str] = set()
            env = _environment(simulator.url if simulator else None)
            last_code = 0
            for block, commands in scenario.blocks.items():
                shown: list[str] = []
                for command in commands:
                    if command.restart_simulator is not None:
                        assert simulator is not None
                        port = simulator.url.rsplit(":", 1)[1]
                        simulator.__exit__()
                        simulator = SimulatorProcess(*command.restart_simulator, "--port", port).__enter__()
                        continue
                    output, last_code, process = _execute(command, cwd, env, last_code)
                    if process is not None:
                        background.append(process)
                    ports.update(re.findall(r"127\.0\.0\.1:(\d+)", output) if command.run else ())
                    if not command.hidden:
                        shown.append(f"$ {command.shown}")
                        text = _shape(command, output)
                        if text:
                            shown.append(text)
                text = "\n".join(shown) + "\n"
                if "ANIMAL_SYNC_BASE_URL" in env:  # the reader's runs use the default --base-url
                    text = text.replace(env["ANIMAL_SYNC_BASE_URL"], f"http://localhost:{DOC_PORT}")
                    # A suggestion names --base-url only when it is not the default, which the reader's is.
                    text = text.replace(f" --base-url http://localhost:{DOC_PORT}", "")
                for port in ports:  # and the reader's `simulate` listens on 3123
                    text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{DOC_PORT}")
                blocks[block] = text.replace(f"{cwd}/", "").replace(str(cwd), ".")
        finally:
            for process in background:
                try:
                    process.wait(120)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            if simulator is not None:
                simulator.__exit__()
    return blocks


# --- the docs' side ----------------------------------------------------------------------------------------------

def read_blocks(files: list[Path] | None = None) -> dict[str, tuple[Path, str]]:
    """Every transcript block in the docs: name -> (file, body)."""
    found: dict[str, tuple[Path, str]] = {}
    for path in files or doc_files():
        for match in BLOCK.finditer(path.read_text(encoding="utf-8")):
            name = match["name"]
            if name in found:
                raise SystemExit(f"transcript {name!r} appears twice ({found[name][0].name}, {path.name})")
            found[name] = (path, match["body"])
    return found


def commands_of(block: str) -> tuple[Command, ...]:
    for scenario in SCENARIOS.values():
        if block in scenario.blocks:
            return tuple(c for c in scenario.blocks[block] if not c.hidden)
    raise KeyError(block)


def split_by_command(body: str) -> list[str]:
    """A block's text cut at each `$ ` line: one piece per command shown."""
    pieces: list[list[str]] = []
    for line in body.rstrip("\n").splitlines():
        if line.startswith("$ ") or not pieces:
            pieces.append([])
        pieces[-1].append(line)
    return ["\n".join(piece) for piece in pieces]


def compare(block: str, documented: str, fresh: str) -> str | None:
    """None when the documented text matches the fresh run after normalizing; else what differs."""
    commands = commands_of(block)
    old, new = split_by_command(documented), split_by_command(fresh)
    if len(old) != len(new) or len(new) != len(commands):
        return f"{block}: {len(old)} commands documented, {len(new)} run"
    for command, a, b in zip(commands, old, new):
        if normalize(a, command) != normalize(b, command):
            import difflib

            diff = difflib.unified_diff(normalize(a, command).splitlines(), normalize(b, command).splitlines(),
                                        "documented", "fresh run", lineterm="")
            return f"{block}: `{command.shown}` differs:\n" + "\n".join(diff)
    return None


def scenario_of(block: str) -> str:
    return next(name for name, scenario in SCENARIOS.items() if block in scenario.blocks)


def check(names: list[str] | None = None) -> list[str]:
    """Rerun the scenarios (all, or those holding `names`); the differences found, one text per stale block."""
    documented = read_blocks()
    problems = [f"{name}: a transcript in the docs that no scenario makes" for name in documented
                if not any(name in s.blocks for s in SCENARIOS.values())]
    wanted = {scenario_of(name) for name in names} if names else set(SCENARIOS)
    for scenario in sorted(wanted):
        for block, fresh in run_scenario(scenario).items():
            if block not in documented:
                problems.append(f"{block}: made by scenario {scenario} but placed in no doc")
                continue
            difference = compare(block, documented[block][1], fresh)
            if difference:
                problems.append(difference)
    return problems


def rewrite(names: list[str] | None = None, *, force: bool = False) -> list[str]:
    """Rerun and write the fresh text into each stale block in place (every block with `force`); those written.

    A block that matches after normalizing is left as it is, so a regeneration changes only what the tool now
    prints differently, not every timestamp."""
    documented = read_blocks()
    wanted = {scenario_of(name) for name in names} if names else set(SCENARIOS)
    written: list[str] = []
    for scenario in sorted(wanted):
        for block, fresh in run_scenario(scenario).items():
            if block not in documented:
                print(f"warning: {block} is made by scenario {scenario} but placed in no doc", file=sys.stderr)
                continue
            path, body = documented[block]
            if not force and compare(block, body, fresh) is None:
                continue
            text = path.read_text(encoding="utf-8")
            pattern = re.compile(rf"(<!-- transcript: {re.escape(block)} -->\n```text\n).*?(```\n<!-- /transcript -->)", re.S)
            path.write_text(pattern.sub(lambda m: m[1] + fresh + m[2], text, count=1), encoding="utf-8")
            written.append(block)
    return written


def _iter_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if a block is stale")
    parser.add_argument("--only", action="append", metavar="BLOCK", help="only the scenario holding this block (repeatable)")
    parser.add_argument("--force", action="store_true", help="rewrite every block, not only the stale ones")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _iter_args(argv)
    if shutil.which("animal-sync", path=str(BIN)) is None:
        print(f"no animal-sync in {BIN}: run this with the project's venv python", file=sys.stderr)
        return 2
    if args.check:
        problems = check(args.only)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"stale transcripts: run `{REGENERATE}`", file=sys.stderr)
        return 1 if problems else 0
    written = rewrite(args.only, force=args.force)
    for block in written:
        print(f"rewrote {block}")
    if not written:
        print("every transcript is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
