"""`make torture`'s hostile-front cases (scripts/torture.py), run once each with small numbers: a front that
redirects every POST (killed twice mid-redirect), and one that answers 200 before reading a POST's body.

Each case drives the real CLI in child processes and judges by the simulator's ledger; here it must pass and say so
in torture's one line of figures. On the code before the client fixes (a redirect followed, an early 2xx taken for
a delivery) both cases fail.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "torture.py"


@pytest.fixture(scope="module")
def torture():
    spec = importlib.util.spec_from_file_location("torture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["torture"] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("torture", None)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """The children speak to 127.0.0.1 directly, whatever proxy the machine sets."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_a_front_that_redirects_every_post_loses_nothing_and_ends_exactly_once(torture, monkeypatch, capsys):
    monkeypatch.setattr(torture, "FRONT_ANIMALS", 300)  # 12 batches of 25: every status, before and after the body
    assert torture.main(["redirect"]) == 0, capsys.readouterr().err
    line = capsys.readouterr().out
    assert re.search(
        r"redirect \((\d+) 3xx, 2 kills, 0 followed, 0 false deliveries, 0 false OKs\) exactly once yes", line
    ), line
    assert "animals lost 0" in line and "animals duplicated outside in-doubt 0" in line


def test_a_front_that_answers_200_before_the_body_loses_nothing_and_ends_exactly_once(torture, monkeypatch, capsys):
    monkeypatch.setattr(torture, "FRONT_ANIMALS", 300)
    monkeypatch.setattr(torture, "EARLY_POSTS", 4)  # then it forwards, mid-run
    assert torture.main(["early-2xx"]) == 0, capsys.readouterr().err
    line = capsys.readouterr().out
    found = re.search(r"early-2xx \((\d+) 200s unread, 0 false deliveries, 0 false OKs\) exactly once yes", line)
    assert found and int(found[1]) == 4, line
    assert "animals lost 0" in line and "animals duplicated outside in-doubt 0" in line
