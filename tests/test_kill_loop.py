"""Issue 16's kill loop, twice, at a smaller size: `run` killed while listing, `resume`s killed after delivered
batches, a last `resume`; judged by the strict uvicorn simulator's ledger and the journal (scripts/torture.py runs
it 10 times at full size)."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "torture.py"
ANIMALS = 1_500  # 15 batches: kills after 2, 6 and 10 of them (issue 16's 10, 25 and 40 of some 55, scaled)


@functools.cache
def torture():
    """scripts/torture.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("torture_script", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["torture_script"] = module  # its dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_the_kill_points_scale_with_the_run():
    script = torture()
    assert script.kill_loop_points(55) == (10, 25, 40) == script.kill_loop_points(60)
    assert script.kill_loop_points(15) == (2, 6, 10)


@pytest.mark.parametrize("seed", [1601, 1602])
def test_a_run_killed_while_listing_and_after_delivered_batches_ends_exactly_once(tmp_path: Path, seed: int) -> None:
    assert torture().kill_loop_round(tmp_path, seed, animals=ANIMALS) == []
