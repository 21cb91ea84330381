"""Tests for animal_sync.latency: the GET cut follows the answers seen, within its floor and ceiling."""

from __future__ import annotations

import threading

from animal_sync.latency import MIN_SAMPLES, RECOMPUTE_EVERY, AdaptiveCut


def feed(cut: AdaptiveCut, seconds: float, count: int) -> None:
    for _ in range(count):
        cut.observe(seconds)


def test_the_cut_stays_at_the_ceiling_until_enough_answers_are_seen():
    cut = AdaptiveCut(floor=0.25, ceiling=1.0)
    feed(cut, 0.01, MIN_SAMPLES - 1)
    assert cut.seconds == 1.0


def test_fast_answers_bring_the_cut_down_to_the_floor():
    cut = AdaptiveCut(floor=0.25, ceiling=1.0)
    feed(cut, 0.01, MIN_SAMPLES)
    assert cut.seconds == 0.25


def test_the_cut_is_a_few_times_the_slow_end_of_the_answers():
    cut = AdaptiveCut(floor=0.05, ceiling=1.0)
    feed(cut, 0.01, MIN_SAMPLES)
    feed(cut, 0.1, RECOMPUTE_EVERY)  # a third of the window now answers in 100 ms: the p99 is 0.1
    assert abs(cut.seconds - 0.4) < 1e-9


def test_slow_answers_raise_the_cut_back_no_higher_than_the_ceiling():
    cut = AdaptiveCut(floor=0.25, ceiling=1.0)
    feed(cut, 0.01, MIN_SAMPLES)
    assert cut.seconds == 0.25
    feed(cut, 0.6, RECOMPUTE_EVERY)
    assert cut.seconds == 1.0


def test_a_floor_at_the_ceiling_keeps_the_cut_fixed():
    cut = AdaptiveCut(floor=1.0, ceiling=1.0)
    feed(cut, 0.01, MIN_SAMPLES * 2)
    assert cut.seconds == 1.0


def test_a_floor_above_the_ceiling_is_the_ceiling():
    cut = AdaptiveCut(floor=0.25, ceiling=0.15)  # tests and impatient users set --get-timeout below the floor
    feed(cut, 0.01, MIN_SAMPLES * 2)
    assert cut.seconds == 0.15


def test_answers_from_many_threads_are_all_counted():
    cut = AdaptiveCut(floor=0.01, ceiling=1.0)
    threads = [threading.Thread(target=feed, args=(cut, 0.05, MIN_SAMPLES)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert abs(cut.seconds - 0.2) < 1e-9
