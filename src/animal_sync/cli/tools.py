"""The commands around a sync: `demo` (one audited run against the bundled simulator) and `simulate` (serve it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..logs import LogFormat, configure_logging
from .progress import DEFAULT_EVERY, ProgressMode
from ..simulator.data import Fault
from .options import ProgressOpt, progress_reporter
from .suggest import command, invoked

__all__ = ["demo", "simulate"]


def demo(
    animals: Annotated[Optional[int], typer.Option(help="Animals in the simulator (default: 5,000-6,000).")] = None,
    chaos: Annotated[float, typer.Option(help="The simulator's chaos, percent.")] = 2.0,
    journal: Annotated[Path, typer.Option("--journal", help="Journal for the demo run (replaced).")] = Path("demo.db"),
    progress: ProgressOpt = ProgressMode.AUTO,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Show no progress.")] = False,
) -> None:
    """Start the bundled simulator (strict mode), sync everything into it, audit, and show its verification."""
    from .demo import run_demo

    invoked(journal)
    configure_logging(LogFormat.AUTO, quiet=True)  # the demo's own lines tell the story; warnings still show
    code = run_demo(
        journal, animals=animals, chaos=chaos, echo=typer.echo,
        progress=lambda: progress_reporter(progress, quiet, DEFAULT_EVERY),
    )
    typer.echo(f"report: {command('report', '--html', 'report.html', journal=journal)} writes the run's page")
    raise typer.Exit(code)


def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")] = 3123,
    animals: Annotated[Optional[int], typer.Option(min=0, help="Number of animals, whole pages of 10 (default: drawn from the seed, 5,000-6,000).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the animals, their page count and the chaos; restart with another to model upstream's restart.")] = 1,
    chaos: Annotated[float, typer.Option(min=0.0, max=100.0, help="Percent of requests hit by chaos: half stall, half fail with 5xx.")] = 2.0,
    stall_min: Annotated[float, typer.Option(min=0.0, help="Shortest stall, seconds.")] = 5.0,
    stall_max: Annotated[float, typer.Option(min=0.0, help="Longest stall, seconds.")] = 15.0,
    strict: Annotated[bool, typer.Option(help="Take a batch's ids one at a time; answer a plain-text 500 at the first already delivered.")] = False,
    fault: Annotated[
        Optional[list[str]],
        typer.Option(metavar="ID=KIND", help=f"Hostile data for one animal (repeatable), e.g. 7=bad_born_at; KIND is one of: {', '.join(kind.value for kind in Fault)}."),
    ] = None,
    revise: Annotated[Optional[list[int]], typer.Option(min=0, help="Serve this animal changed (another name), as if revised upstream since an earlier sync (repeatable).")] = None,
    url_fd: Annotated[Optional[int], typer.Option(hidden=True, help="Write the URL once listening to this inherited pipe (for SimulatorProcess).")] = None,
) -> None:
    """Serve the bundled Animals API simulator until Ctrl-C.

    It is as strict as the real server. Ids run 0..N-1 in full pages of 10; a page past the end lists none and
    an unknown id answers a plain-text 500. Of the requests --chaos hits, half stall (5-15 s by default)
    before they are handled and half fail at once with a plain-text 500/502/503/504, unhandled, the body
    unread (the connection is then closed). `Expect: 100-continue` is answered only when the body is read, so
    after any stall. Idle keep-alive connections are closed after 5 s. POST /home takes a JSON array of at most
    100 (400 above that, 422 for a malformed item or a body that is not JSON); with --strict it takes the ids
    one at a time and answers a plain-text 500 at the first one already delivered, keeping the ids before it.
    A restart of the real server draws a new data set: restart with another --seed for the same. To model
    records changed upstream between two syncs, restart on the same --seed with --revise ID.
    """
    from ..simulator import SimulatorConfig, serve

    if stall_max < stall_min:
        raise typer.BadParameter("--stall-max must not be below --stall-min")
    faults: dict[int, str] = {}
    for item in fault or []:
        animal_id, _, kind = item.partition("=")
        if not animal_id.strip().isdigit() or not kind:
            raise typer.BadParameter(f"--fault takes ID=KIND, not {item!r}")
        faults[int(animal_id)] = kind.strip()
    serve(SimulatorConfig(
        host=host, port=port, animals=animals, seed=seed, chaos=chaos,
        stall_min=stall_min, stall_max=stall_max, strict=strict, faults=faults, revised=frozenset(revise or ()),
    ), url_fd=url_fd)
