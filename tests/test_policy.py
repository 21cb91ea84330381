"""The policies as values, without a server or a journal: what a POST's answer means (outcomes.classify), whether the
upstream changed (upstream.UpstreamCheck), and the one decode-and-transform path (examine)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from animal_sync.client.api import Page
from animal_sync.client.continue100 import BodyRelease
from animal_sync.examine import examine
from animal_sync.client.outcomes import Action, Halt, PostOutcome, PostResult, Verdict, classify, proven_repeat
from animal_sync.engine.upstream import CHECK_TRIES, RECHECK_EVERY, RECHECK_SECONDS, UpstreamCheck

O = PostOutcome


@dataclass(frozen=True)
class Batch:
    ids: tuple[int, ...]
    in_doubt_at: str | None = None


FIRST = Batch((1, 2, 3))
RESENT = Batch((1, 2, 3), in_doubt_at="2026-01-01T00:00:00Z")
ONE = Batch((7,))


def answer(outcome: PostOutcome, status: int | None, error: str | None = None, release: BodyRelease | None = None) -> PostResult:
    return PostResult(outcome, status, "body" if status else None, error, (), release)


# (case, result, batch) -> (action, halt, keep_answer, counters, event)
TABLE = [
    ("delivered", answer(O.DELIVERED, 200), FIRST, Action.POSTED, None, False, (), "batch_posted"),
    ("delivered on a re-send", answer(O.DELIVERED, 201), RESENT, Action.POSTED, None, False, (), "batch_posted"),
    ("never received", answer(O.NEVER_RECEIVED, None, "connect_error: x"), FIRST,
     Action.UNSEND, Halt.UNREACHABLE, False, ("error_api_unreachable",), None),
    ("a re-send never received", answer(O.NEVER_RECEIVED, None, "body_withheld: x"), RESENT,
     Action.IN_DOUBT, Halt.UNREACHABLE, False, ("error_api_unreachable",), None),
    ("credential refused", answer(O.REFUSED_AFTER_READING, 401, "HTTP 401"), FIRST,
     Action.UNSEND, Halt.CREDENTIAL_REFUSED, False, ("error_credential_refused",), None),
    ("credential refused on a re-send", answer(O.REFUSED_AFTER_READING, 403, "HTTP 403"), RESENT,
     Action.IN_DOUBT, Halt.CREDENTIAL_REFUSED, False, ("error_credential_refused",), None),
    ("answer lost", answer(O.UNKNOWN, None, "read_timeout: x"), FIRST,
     Action.IN_DOUBT, None, False, ("batch_in_doubt",), "batch_in_doubt"),
    ("answer lost on a re-send", answer(O.UNKNOWN, None, "read_timeout: x"), RESENT,
     Action.IN_DOUBT, None, False, ("batch_in_doubt",), "batch_in_doubt"),
    ("refused after reading on a re-send: a repeat", answer(O.REFUSED_AFTER_READING, 500, "HTTP 500", BodyRelease.AFTER_CONTINUE),
     RESENT, Action.IN_DOUBT, None, True, ("resend_refused",), "batch_resend_refused"),
    ("refused with no sign on a re-send: probably a repeat", answer(O.REFUSED_BEFORE_READING, 500, "HTTP 500"),
     RESENT, Action.IN_DOUBT, None, True, ("resend_refused",), "batch_resend_refused"),
    ("refused, body withheld, on a re-send: still in doubt",
     answer(O.REFUSED_BEFORE_READING, 503, "HTTP 503", BodyRelease.WITHHELD), RESENT,
     Action.IN_DOUBT, None, True, (), "batch_resend_refused"),
    ("422 on a multi-animal batch", answer(O.REFUSED_AFTER_READING, 422, "HTTP 422"), FIRST,
     Action.SPLIT, None, False, ("batch_split_http_422",), "batch_split"),
    ("400 on a multi-animal batch", answer(O.REFUSED_AFTER_READING, 400, "HTTP 400"), FIRST,
     Action.SPLIT, None, False, ("batch_split_http_400",), "batch_split"),
    ("422 on one animal", answer(O.REFUSED_AFTER_READING, 422, "HTTP 422"), ONE,
     Action.FAILED, None, False, ("batch_failed_http_422",), "batch_failed"),
    ("a 5xx after reading: the ids may be taken", answer(O.REFUSED_AFTER_READING, 500, "HTTP 500", BodyRelease.AFTER_CONTINUE),
     FIRST, Action.IN_DOUBT, None, True, ("batch_in_doubt",), "batch_in_doubt"),
    ("a 5xx before reading, retries spent", answer(O.REFUSED_BEFORE_READING, 503, "HTTP 503"), FIRST,
     Action.FAILED, None, False, ("batch_failed_http_503",), "batch_failed"),
    ("another 4xx", answer(O.REFUSED_AFTER_READING, 404, "HTTP 404"), FIRST,
     Action.FAILED, None, False, ("batch_failed_http_404",), "batch_failed"),
    ("a 2xx before the body was read: no delivery", answer(O.REFUSED_BEFORE_READING, 200, "HTTP 200 before", BodyRelease.WITHHELD),
     FIRST, Action.FAILED, None, False, ("batch_failed_http_200",), "batch_failed"),
    ("a redirect before the body was read", answer(O.REFUSED_BEFORE_READING, 301, "HTTP 301 redirect", BodyRelease.WITHHELD),
     FIRST, Action.FAILED, None, False, ("batch_failed_http_301",), "batch_failed"),
    ("a redirect after the body left: maybe processed", answer(O.UNKNOWN, 303, "HTTP 303 redirect", BodyRelease.AFTER_CONTINUE),
     FIRST, Action.IN_DOUBT, None, True, ("batch_in_doubt",), "batch_in_doubt"),
    ("a 5xx after a late 100 Continue: the ids may be taken",
     answer(O.REFUSED_AFTER_READING, 500, "HTTP 500", BodyRelease.LATE_CONTINUE),
     FIRST, Action.IN_DOUBT, None, True, ("batch_in_doubt",), "batch_in_doubt"),
]


@pytest.mark.parametrize(
    ("result", "batch", "action", "halt", "keep_answer", "counters", "event"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_classify_decides_what_an_answer_means(
    result: PostResult, batch: Batch, action: Action, halt: Halt | None, keep_answer: bool,
    counters: tuple[str, ...], event: str | None,
) -> None:
    verdict = classify(result, batch)
    assert (verdict.action, verdict.halt, verdict.keep_answer, verdict.counters, verdict.event) == (
        action, halt, keep_answer, counters, event
    )


@pytest.mark.parametrize(
    ("result", "batch", "reason"),
    [
        (answer(O.NEVER_RECEIVED, None, "connect_error: x"), FIRST, "never_received: never reached the API: connect_error: x"),
        (answer(O.NEVER_RECEIVED, None, "connect_error: x"), RESENT,
         "never_received: the re-send never reached the API: connect_error: x"),
        (answer(O.REFUSED_AFTER_READING, 401, "HTTP 401"), FIRST, "refused_after_reading: was refused the credential: HTTP 401"),
        (answer(O.UNKNOWN, None, "read_timeout: x"), FIRST, "unknown: read_timeout: x"),
        (answer(O.REFUSED_AFTER_READING, 500, "HTTP 500", BodyRelease.AFTER_CONTINUE), RESENT,
         "refused_after_reading on a re-send (HTTP 500): a repeat, the first send was delivered"),
        (answer(O.REFUSED_BEFORE_READING, 500, "HTTP 500"), RESENT,
         "refused_before_reading on a re-send (HTTP 500): probably a repeat, the first send was delivered"),
        (answer(O.REFUSED_BEFORE_READING, 503, "HTTP 503", BodyRelease.WITHHELD), RESENT,
         "refused_before_reading on a re-send (HTTP 503): still in doubt"),
        (answer(O.REFUSED_AFTER_READING, 404, None), FIRST, "refused_after_reading: refused"),
        (answer(O.DELIVERED, 200), FIRST, None),
        (answer(O.UNKNOWN, 307, "HTTP 307 redirect to '/x' after the body was sent: not followed for a POST"), FIRST,
         "unknown: HTTP 307 redirect to '/x' after the body was sent: not followed for a POST"),
    ],
)
def test_the_verdict_words_the_reason_the_journal_keeps(result: PostResult, batch: Batch, reason: str | None) -> None:
    assert classify(result, batch).reason == reason


def test_a_verdict_is_a_frozen_value_and_classify_never_touches_its_inputs() -> None:
    result = answer(O.UNKNOWN, None, "read_timeout: x")
    verdict = classify(result, FIRST)
    assert verdict == classify(result, FIRST) == Verdict(
        Action.IN_DOUBT, "unknown: read_timeout: x", counters=("batch_in_doubt",), event="batch_in_doubt"
    )
    with pytest.raises(AttributeError):
        verdict.action = Action.POSTED  # type: ignore[misc]


def page(number: int = 1, total: int = 5, digest: str | None = "abc") -> Page:
    return Page(page=number, total_pages=total, ids=(), digest=digest)


def test_the_first_listed_page_is_the_baseline_and_a_resume_is_unverified_until_checked() -> None:
    fresh = UpstreamCheck()
    fresh.resume_from(None)
    assert fresh.verified and fresh.baseline is None
    fresh.listed(page(3, digest="c"))
    fresh.listed(page(1, digest="a"))
    fresh.listed(page(2, digest="b"))
    assert fresh.baseline == (1, "a")
    resumed = UpstreamCheck()
    resumed.resume_from((1, "a"))
    assert not resumed.verified


@pytest.mark.parametrize(
    ("listing", "total", "stored", "difference"),
    [
        (page(1, 5, "abc"), 5, "abc", None),
        (page(2, 5, "other"), 5, None, None),  # a page not listed before: only its total is compared
        (page(2, 5, "other"), 5, "b", "page 2 now lists other animals under the same ids"),  # any page listed again
        (page(1, 5, "other"), 5, "abc", "page 1 now lists other animals under the same ids"),
        (page(1, 4, "abc"), 5, "abc", "total_pages was 5, the API now says 4 (fewer pages: ids it listed are gone)"),
        (page(1, 6, "abc"), 5, "abc", "total_pages was 5, the API now says 6 (more pages)"),
        (page(1, 9, "other"), None, "abc", "page 1 now lists other animals under the same ids"),
        (page(1, 5, None), 5, "abc", None),  # nothing to compare a digest with
    ],
)
def test_a_listing_that_contradicts_the_run_is_a_change(
    listing: Page, total: int | None, stored: str | None, difference: str | None
) -> None:
    check = UpstreamCheck(baseline=(1, "abc"))
    assert check.difference(listing, total, stored) == difference


def test_a_batch_may_go_only_once_a_check_that_started_after_it_was_built_found_the_data_set_the_same() -> None:
    check = UpstreamCheck(baseline=(1, "abc"))
    assert check.covers(float("-inf")) and not check.covers(5.0)  # built before the attempt: the resume check covers it
    assert check.start(6.0, page=7) == 7  # the page a waiting batch holds
    assert not check.covers(5.0)  # not before its answer
    check.same()
    assert check.covers(5.0) and check.covers(6.0) and not check.covers(6.5)
    check.start(7.0)
    check.could_not_check(1, "HTTP 503", now=7.5, gating=True)  # a failed check vouches for nothing
    assert not check.covers(6.5) and check.failures == 1 and check.failed is None


def test_a_check_that_keeps_failing_while_a_batch_waits_stops_the_run_after_check_tries() -> None:
    check = UpstreamCheck(baseline=(1, "abc"))
    for attempt in range(CHECK_TRIES):
        check.start(10.0 * attempt)
        check.could_not_check(3, "HTTP 503", now=10.0 * attempt + 1, gating=True)
    assert check.failed == f"page 3 could not be listed again to check the data set (HTTP 503; {CHECK_TRIES} checks failed)"


def test_only_the_first_change_is_news() -> None:
    check = UpstreamCheck()
    assert check.change("first") and not check.change("second")
    assert check.changed == "first"


def test_a_check_is_wanted_when_asked_for_and_waited_or_idle_or_periodically() -> None:
    check = UpstreamCheck(baseline=(1, "abc"), next_periodic=100.0)
    assert not check.wanted(0.0, idle=False)
    check.due = True
    assert check.start(10.0) == 1 and not check.due and check.next_periodic == 10.0 + RECHECK_EVERY
    check.due = True
    assert not check.wanted(10.0 + RECHECK_SECONDS / 2, idle=False)
    assert check.wanted(10.0 + RECHECK_SECONDS / 2, idle=True)
    assert check.wanted(10.0 + RECHECK_SECONDS, idle=False)
    check.due = False
    assert check.wanted(10.0 + RECHECK_EVERY, idle=False)


def test_with_nothing_listed_there_is_nothing_to_check() -> None:
    check = UpstreamCheck(due=True)
    assert check.start(5.0) is None and not check.due


def test_a_failed_check_stops_only_a_run_not_yet_verified_and_only_after_check_tries() -> None:
    verified = UpstreamCheck(baseline=(1, "abc"))
    verified.could_not_check(1, "HTTP 503", now=10.0)
    assert verified.failed is None and not verified.due
    resumed = UpstreamCheck()
    resumed.resume_from((1, "abc"))
    for attempt in range(1, CHECK_TRIES):
        resumed.could_not_check(1, "HTTP 503", now=10.0 * attempt)
        assert resumed.failed is None and resumed.due  # chaos fails a listing now and then: try again
        assert not resumed.retry_due(10.0 * attempt + RECHECK_SECONDS / 2) and resumed.retry_due(10.0 * attempt + RECHECK_SECONDS)
    resumed.could_not_check(1, "HTTP 503", now=100.0)
    assert resumed.failed == f"page 1 could not be listed again to check the data set (HTTP 503; {CHECK_TRIES} checks failed)"


@pytest.mark.parametrize(
    ("body", "animal_id", "transformed", "reason"),
    [
        (b'{"id":7,"name":"Cobra","born_at":0,"friends":"Dog, ,Cat"}', 7,
         '{"id":7,"name":"Cobra","born_at":"1970-01-01T00:00:00.000Z","friends":["Dog","Cat"]}', None),
        ('{"id":0,"name":"Zebu","born_at":null,"friends":""}', 0, '{"id":0,"name":"Zebu","born_at":null,"friends":[]}', None),
        (b"\xff\xfe", 1, None, "body is not UTF-8"),
        (b"{nope", 1, None, "body is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b'{"id":8,"name":"Cobra","friends":""}', 7, None, "id mismatch: asked for 7, got 8"),
        (b'{"id":7,"name":"","friends":""}', 7, None, "name is empty"),
    ],
)
def test_examine_is_the_one_path_from_a_body_to_its_outgoing_text(
    body: bytes | str, animal_id: int, transformed: str | None, reason: str | None
) -> None:
    examined = examine(body, animal_id)
    assert (examined.transformed, examined.reason) == (transformed, reason)
    assert examined.raw == (body if reason == "body is not UTF-8" else (body.decode() if isinstance(body, bytes) else body))


@pytest.mark.parametrize(
    ("reason", "proven"),
    [
        ("refused_after_reading on a re-send (HTTP 500): a repeat, the first send was delivered", True),
        ("refused_before_reading on a re-send (HTTP 500): probably a repeat, the first send was delivered", False),
        ("refused_before_reading on a re-send (HTTP 503): still in doubt", False),
        ("unknown: read_timeout: x", False),
        (None, False),
    ],
)
def test_only_a_re_send_read_and_refused_is_a_proven_repeat_and_held(reason: str | None, proven: bool) -> None:
    assert proven_repeat(reason) is proven
    if reason and reason.endswith("delivered"):  # the reason classify words is the one proven_repeat reads back
        release = BodyRelease.AFTER_CONTINUE if proven else None
        outcome = O.REFUSED_AFTER_READING if proven else O.REFUSED_BEFORE_READING
        assert classify(answer(outcome, 500, "HTTP 500", release), RESENT).reason == reason
