"""Shared fixtures: a real Animals API simulator on an ephemeral port, stopped when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from animal_sync.simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator() -> Iterator[Callable[..., Simulator]]:
    """Factory: `sim = simulator(animals=250, strict=True)` starts a Simulator on 127.0.0.1, port 0.

    Overrides are SimulatorConfig fields. Unlike SimulatorConfig, chaos defaults to 0 here, so a
    test meets stalls and 5xx only when it asks for them (pass chaos=... or use sim.queue_chaos).
    """
    started: list[Simulator] = []

    def start(**overrides: Any) -> Simulator:
        sim = Simulator(SimulatorConfig(**{"port": 0, "chaos": 0.0, **overrides})).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A CLI test configures structlog with the stderr of its own capture; later tests must not inherit it."""
    yield
    structlog.reset_defaults()
