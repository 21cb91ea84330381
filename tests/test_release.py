"""The release handshake: a POST thread waits for the coordinator's answer, and never for a coordinator gone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from animal_sync.engine.release import ReleaseDesk


def test_a_request_wakes_the_coordinator_and_waits_for_its_answer() -> None:
    desk = ReleaseDesk()
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(desk.gate(7))
        assert desk.wakeup.result(timeout=5) is None  # the coordinator's wait() returns
        [request] = desk.take()
        assert request.batch_id == 7 and not asked.done()  # blocked until answered
        assert not desk.wakeup.done()  # taken: the next wait() sleeps again
        desk.answer([request], True)
        assert asked.result(timeout=5) is True


def test_closing_refuses_what_waits_and_all_that_comes() -> None:
    desk = ReleaseDesk()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(desk.ask, 1)
        desk.wakeup.result(timeout=5)
        desk.close()  # the coordinator leaves without taking it
        assert waiting.result(timeout=5) is False
    assert desk.ask(2) is False  # at once: nobody is left to answer
