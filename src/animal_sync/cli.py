"""The `animal-sync` command line: options in, library calls out, exit codes back. No logic lives here."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .errors import AnimalSyncError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Move every animal from the Animals API to its home endpoint, exactly once, with proof.",
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"animal-sync: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 3123,
    animals: Annotated[Optional[int], typer.Option(min=0, help="Number of animals (default: drawn from the seed, 5,000-6,000).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the generated animals and the chaos.")] = 1,
    chaos: Annotated[float, typer.Option(min=0.0, max=100.0, help="Percent of requests hit by chaos: half stall, half fail with 5xx.")] = 2.0,
    stall_min: Annotated[float, typer.Option(min=0.0, help="Shortest stall, seconds.")] = 5.0,
    stall_max: Annotated[float, typer.Option(min=0.0, help="Longest stall, seconds.")] = 15.0,
    strict: Annotated[bool, typer.Option(help="Answer 500 to a batch that repeats an already delivered id.")] = False,
) -> None:
    """Serve the bundled Animals API simulator until Ctrl-C."""
    from .simulator import SimulatorConfig, serve

    if stall_max < stall_min:
        _fail("--stall-max must not be below --stall-min")
    config = SimulatorConfig(
        host=host, port=port, animals=animals, seed=seed, chaos=chaos,
        stall_min=stall_min, stall_max=stall_max, strict=strict,
    )
    try:
        serve(config)
    except AnimalSyncError as exc:
        _fail(str(exc))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
