"""The release handshake: a POST thread waits for the coordinator's answer, and never for a coordinator gone."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from animal_sync.engine.release import ReleaseDesk


def test_a_request_wakes_the_coordinator_and_waits_for_its_answer() -> None:
    desk = ReleaseDesk()
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(desk.gate(7).ask)
        assert desk.wakeup.result(timeout=5) is None  # the coordinator's wait() returns
        [request] = desk.take()
        assert request.batch_id == 7 and not asked.done()  # blocked until answered
        assert not desk.wakeup.done()  # taken: the next wait() sleeps again
        desk.answer([request], True)
        assert asked.result(timeout=5) is True


def test_closing_refuses_what_waits_and_all_that_comes() -> None:
    desk = ReleaseDesk()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(desk.gate(1).ask)
        desk.wakeup.result(timeout=5)
        desk.close()  # the coordinator leaves without taking it
        assert waiting.result(timeout=5) is False
    assert desk.gate(2).ask() is False  # at once: nobody is left to answer


def test_the_coordinator_waits_until_a_released_body_has_left_and_no_longer() -> None:
    """Issue 16: a kill between the `sending` commit and the body's send leaves a batch in doubt the API never saw,
    so the coordinator stands aside (GIL released) until the POST thread says its body is in the socket."""
    desk = ReleaseDesk()
    gate = desk.gate(3)
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(gate.ask)
        desk.wakeup.result(timeout=5)
        [request] = desk.take()
        desk.answer([request], True)
        assert asked.result(timeout=5) is True
        assert desk.await_left([request], timeout=0.05) is False  # released, but the body has not left yet
        pool.submit(gate.left).result(timeout=5)
        started = time.monotonic()
        assert desk.await_left([request], timeout=5) is True
        assert time.monotonic() - started < 1  # at once, not at the timeout


def test_each_try_of_a_post_is_its_own_release() -> None:
    """A retry asks again; `left` speaks for the latest try, never for one the coordinator already waited on."""
    desk = ReleaseDesk()
    gate = desk.gate(4)
    with ThreadPoolExecutor(1) as pool:
        requests = []
        for _ in range(2):
            asked = pool.submit(gate.ask)
            desk.wakeup.result(timeout=5)
            requests += desk.take()
            desk.answer(requests[-1:], True)
            assert asked.result(timeout=5) is True
        gate.left()
    first, second = requests
    assert second.left.is_set() and not first.left.is_set()
