"""The Animals API client: one Session, a `Retry` policy per method (retry.py), each POST answer classed (outcomes.py).

The API stalls about 1 request in 100 for 5-15 s *before* handling it, and fails about 1 in 100 with a 5xx
*without* handling it. So a GET is cut short and re-sent (it is idempotent), while a POST is re-sent only
when the API surely did not handle it: a connection that never opened, a body withheld because the handler
never asked for it (`Expect: 100-continue`, see continue100), or a 5xx given before the handler read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ProtocolError, ProxyError, ReadTimeoutError

from ..config import Settings
from ..urls import redact_url
from .deadline import Abandoned, Watchdog, guarded_pool_classes
from .latency import AdaptiveCut
from .continue100 import (
    EXPECT_CONTINUE,
    BodyWithheld,
    ContinueAdapter,
    BodyRelease,
    ExpectContinue,
    PostTrace,
    body_release,
    release_gate,
)
from .outcomes import AUTH_REFUSED, PostOutcome, PostResult, classify_answer
from .retry import RetryStopped, get_retry, post_retry

__all__ = [
    "AnimalsApi",
    "ApiUnreachable",
    "BodyTooLarge",
    "CredentialRefused",
    "Detail",
    "FetchFailed",
    "Page",
]

LIST_PATH = "/animals/v1/animals"
HOME_PATH = "/animals/v1/home"
SQLITE_INT_MAX = 2**63 - 1  # the largest id an SQLite INTEGER holds


class FetchFailed(Exception):
    """A GET whose retry budget is spent, or whose answer is unusable; str() is the journaled reason.

    `retries` names the retries made on the way, so a request that finally failed is counted like one that
    succeeded.
    """

    def __init__(self, reason: str, retries: list[str] | None = None) -> None:
        super().__init__(reason)
        self.retries = list(retries or [])


class BodyTooLarge(FetchFailed):
    """A body over the size limit: refused unread, and judged bad data (quarantined), not an unreachable record."""


class ApiUnreachable(FetchFailed):
    """No connection could be opened through a whole retry budget: stop the run, do not fail animals.

    A connection closed after it was opened (a keep-alive connection the server dropped, a reset after an
    answer) is not an outage: the API is up and answering, so that GET is only a FetchFailed.
    """


class CredentialRefused(ApiUnreachable):
    """The API answered 401/403: no request will pass with this credential, so stop, do not fail animals."""


@dataclass(frozen=True)
class Page:
    """A listed page: the usable ids, the items set aside (with why), and a digest of what it listed."""

    page: int
    total_pages: int
    ids: tuple[int, ...]
    retries: tuple[str, ...] = ()
    bad_items: tuple[dict[str, Any], ...] = ()  # {"item": text, "reason": text}
    digest: str | None = None  # of the items' id, name and born_at: the same page of another data set differs


@dataclass(frozen=True)
class Detail:
    """A detail answer as received: `body` is kept byte for byte for the journal."""

    animal_id: int
    body: bytes
    retries: tuple[str, ...] = ()


def _retry_kinds(response: requests.Response) -> list[str]:
    """Name each retry urllib3 made on the way to this response (its `Retry.history`), for the counters."""
    return _history_kinds(getattr(getattr(response.raw, "retries", None), "history", ()))


def _error_kind(error: BaseException | None) -> str:
    if isinstance(error, ProxyError):  # urllib3 wraps an error met on a proxy connection: name what it wraps
        error = error.original_error
    if isinstance(error, BodyWithheld):  # a ConnectTimeoutError too: the body never left
        return "body_withheld"
    if isinstance(error, ConnectTimeoutError):  # includes NewConnectionError (refused)
        return "connect_error"
    if isinstance(error, ReadTimeoutError):
        return "read_timeout"
    if isinstance(error, ProtocolError):
        return "connection_dropped"
    return type(error).__name__ if error else "unknown"


def _history_kinds(history: Sequence[Any]) -> list[str]:
    return [f"http_{attempt.status}" if attempt.status is not None else _error_kind(attempt.error) for attempt in history]


def _deadline_kinds(kinds: list[str], expiries: int) -> list[str]:
    """Name as `get_deadline` the retries urllib3 made after the watchdog cut a try short (it saw a drop)."""
    named = list(kinds)
    for index, kind in enumerate(named):
        if expiries <= 0:
            break
        if kind == "connection_dropped":
            named[index], expiries = "get_deadline", expiries - 1
    return named


def _max_retry(exc: BaseException) -> MaxRetryError | None:
    return next((arg for arg in getattr(exc, "args", ()) if isinstance(arg, MaxRetryError)), None)


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= SQLITE_INT_MAX


def _bad_item(item: Any) -> str | None:
    """Why a listing item cannot be journaled as an animal id, or None when it can."""
    if not isinstance(item, dict):
        return f"item is {type(item).__name__}, not an object"
    if "id" not in item:
        return "item has no id"
    value = item["id"]
    if type(value) is not int:  # bool is an int subclass; a float or a string is not an id, whatever it reads as
        return f"id {value!r} is {type(value).__name__}, not an integer"
    if not 0 <= value <= SQLITE_INT_MAX:
        return f"id {value} is outside 0 .. 2**63-1"
    return None


def _digest(items: list[Any]) -> str:
    """What a page lists, in brief: the same page of a data set drawn afresh (same ids, other animals) differs."""
    brief = [[item.get(k) for k in ("id", "name", "born_at")] if isinstance(item, dict) else item for item in items]
    return hashlib.sha256(json.dumps(brief, sort_keys=True, default=repr).encode()).hexdigest()[:32]


class _GuardedAdapter(HTTPAdapter):
    """The GET adapter: its connections report each socket to the deadline watchdog before waiting on it, and
    each answer's wait to the adaptive cut."""

    def __init__(self, watchdog: Watchdog, cut: AdaptiveCut, **kwargs: Any) -> None:
        self._watchdog, self._cut = watchdog, cut  # set first: HTTPAdapter.__init__ builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = guarded_pool_classes(self._watchdog, self._cut)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Through an HTTP proxy a GET keeps its deadline too."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = guarded_pool_classes(self._watchdog, self._cut)
        return manager


def _root_cause(exc: BaseException) -> BaseException | None:
    """The urllib3 error behind a requests exception (MaxRetryError.reason, or the direct cause)."""
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, MaxRetryError):
            return arg.reason
        if isinstance(arg, BaseException):
            return arg
    return exc.__cause__ or exc.__context__


class AnimalsApi:
    """The upstream API. Thread-safe for concurrent GETs and POSTs; close() when done."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        """`stop`, once set, ends any wait between retries at once (a run told to stop does not sit out Retry-After)."""
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.session = requests.Session()
        # requests re-reads proxy and CA settings from the environment on every request (a measurable share of
        # a GET's CPU here); read them once for this API's URL and stop looking.
        self.session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        self.session.trust_env = False
        proxy = self.session.proxies.get(self.base_url.split(":", 1)[0]) or self.session.proxies.get("all") or ""
        # A CA bundle only where TLS is spoken: with a path in `verify`, requests stats it (isdir) for every request,
        # plain http:// too, and that syscall's GIL hand-off was 4-6 % of a GET thread's time (py-spy, issue 19).
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle and (self.base_url.lower().startswith("https:") or proxy.lower().startswith("https:")):
            self.session.verify = ca_bundle
        # A SOCKS proxy would carry POSTs on connections that neither wait for `100 Continue` nor journal the
        # body's release before it leaves: refuse them (GETs may go through it). An HTTP proxy keeps both.
        self.post_refusal = (
            f"proxy_refused: POSTs are not sent through the SOCKS proxy {redact_url(proxy)} (set in HTTP_PROXY,"
            " HTTPS_PROXY or ALL_PROXY): the journal could not mark a body as sent before it leaves; use an HTTP"
            " proxy, or exempt the API's host with NO_PROXY"
            if proxy.lower().startswith("socks") else None
        )
        # POSTs go through continue100's connection (its wait, release gate and trace) over plain HTTP, direct or
        # through an http:// proxy. To an https:// proxy urllib3 speaks through its own HTTPS connection, which
        # neither asks the gate nor sees the body leave: such a POST is handled as over HTTPS.
        self._continues = self.base_url.startswith("http://") and not proxy.lower().startswith("https://")
        if settings.token:
            self.session.headers["Authorization"] = f"Bearer {settings.token}"
        self.session.headers["Accept"] = "application/json"
        self._watchdog = Watchdog(settings.get_deadline)
        # A stalled GET is cut at a few times the slow end of the answers seen, not after a fixed second (latency).
        self.get_cut = AdaptiveCut(settings.get_timeout_floor, settings.get_timeout)
        gets = _GuardedAdapter(
            self._watchdog,
            self.get_cut,
            pool_connections=1,
            pool_maxsize=settings.workers,
            max_retries=get_retry(settings.retries, settings.backoff, stop),
        )
        # A POST waits for `100 Continue` about as long as a GET waits for its answer: far above a handler
        # starting, far below a stall.
        posts = ContinueAdapter(
            ExpectContinue(wait=settings.get_timeout),
            pool_connections=1,
            pool_maxsize=settings.post_workers,
            max_retries=post_retry(settings.retries, settings.backoff, stop),
        )
        # requests picks the adapter with the longest matching prefix: POSTs to home get their own policy.
        self.session.mount(self.base_url + "/", gets)
        self.session.mount(self.base_url + HOME_PATH, posts)
        # A GET goes to its adapter directly, prepared from this template: Session.request's merging of settings,
        # cookies and redirects cost 40 % of a GET's client CPU, and the API sets no cookies and never redirects.
        self._gets = gets
        self._get_template = self.session.prepare_request(requests.Request("GET", self.base_url + LIST_PATH))
        self._post_timeout = (settings.connect_timeout, settings.post_timeout)

    def close(self) -> None:
        self._watchdog.close()
        self.session.close()

    def greet(self) -> None:
        """One GET of `/` without retries, for a run's first contact: any HTTP answer returns (the API is there);
        ApiUnreachable, with the cause in a few words, when no connection could be opened."""
        adapter = HTTPAdapter(max_retries=0)
        request = self.session.prepare_request(requests.Request("GET", self.base_url + "/"))
        try:
            adapter.send(
                request, timeout=(self.settings.connect_timeout, self.settings.get_timeout),
                verify=self.session.verify, cert=self.session.cert, proxies=self.session.proxies,
            ).close()
        except requests.ConnectionError as exc:  # ConnectTimeout included; a read timeout means it is there
            cause = _root_cause(exc)
            if _error_kind(cause) != "connect_error":
                return  # a connection opened, then was dropped or reset: something answers there
            errno = re.search(r"\[Errno -?\d+\] ([^')\]]+)", str(cause))
            raise ApiUnreachable(errno.group(1).lower() if errno else _error_kind(cause)) from None
        except requests.Timeout:
            pass
        finally:
            adapter.close()

    def abandon_gets(self) -> None:
        """Cut every GET in flight and fail any later one at once (a stopping run drops their results)."""
        self._watchdog.abandon()

    def _get(self, path: str, params: dict[str, Any] | None = None) -> tuple[int, bytes, list[str]]:
        """GET with the retry policy, each try bounded in total by the deadline; a try cut short is re-sent."""
        history: list[str] = []
        while True:
            try:
                with self._watchdog.attempt() as attempt:
                    try:
                        status, body, retries = self._get_once(path, params)
                    except FetchFailed as exc:
                        exc.retries = history + _deadline_kinds(exc.retries, attempt.expiries - attempt.expired)
                        if not attempt.expired:
                            raise
                        history = exc.retries
                    else:
                        retries = history + _deadline_kinds(retries, attempt.expiries - attempt.expired)
                        if not attempt.expired:
                            return status, body, retries
                        history = retries
            except Abandoned:
                raise FetchFailed("abandoned: the run is stopping", history) from None
            # The last try's answer trickled past the deadline (headers cut mid-way, or its body): re-send it.
            if len(history) >= self.settings.retries:
                raise FetchFailed(
                    f"get_deadline after {self.settings.retries} retries:"
                    f" no whole answer within {self.settings.get_deadline:g} s",
                    history,
                )
            history.append("get_deadline")

    def _get_once(self, path: str, params: dict[str, Any] | None) -> tuple[int, bytes, list[str]]:
        """One GET through urllib3's retry policy; the body is read up to the size limit and no further."""
        try:
            request = self._get_template.copy()
            request.url = self.base_url + path + (f"?{urlencode(params)}" if params else "")  # ASCII: ints only
            timeout = (self.settings.connect_timeout, self.get_cut.seconds)
            session = self.session
            response = self._gets.send(
                request, stream=True, timeout=timeout, verify=session.verify, cert=session.cert, proxies=session.proxies
            )
        except requests.RequestException as exc:
            cause = _root_cause(exc)
            kind = _error_kind(cause)
            history = _history_kinds(getattr(_max_retry(exc), "retry_history", ()))
            if kind == "connect_error":
                raise ApiUnreachable(f"{kind} after {self.settings.retries} retries: {cause}", history) from None
            raise FetchFailed(f"{kind} after {self.settings.retries} retries: {cause}", history) from None
        with response:
            retries = _retry_kinds(response)
            if response.status_code in AUTH_REFUSED:
                raise CredentialRefused(f"HTTP {response.status_code} to GET {path}")
            declared = response.headers.get("Content-Length")
            limit = self.settings.max_body_bytes
            if 300 <= response.status_code < 400:  # never followed: the API never redirects, and a GET is not re-aimed
                where = response.headers.get("Location", "no Location")
                raise FetchFailed(f"HTTP {response.status_code} redirect to {where!r}: not followed", retries)
            if declared and declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(f"body of {declared} bytes is over the {limit}-byte limit", retries)
            chunks, size = [], 0
            try:
                for chunk in response.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLarge(f"body is over the {limit}-byte limit", retries)
                    chunks.append(chunk)
            except requests.RequestException as exc:  # one answer cut short: this record's problem, not an outage
                raise FetchFailed(f"body cut short after {size} bytes: {_root_cause(exc)}", retries) from None
            return response.status_code, b"".join(chunks), retries

    def list_page(self, page: int) -> Page:
        """One page of the listing; a body that is not a listing is a FetchFailed (the page stays unlisted).

        An item whose id is not one an SQLite INTEGER holds exactly (0 .. 2**63-1, a JSON integer) is set aside
        with its reason, never coerced: 3.7 is not 3, and 10**20 would overflow the journal.
        """
        status, body, retries = self._get(LIST_PATH, {"page": page})
        if status != 200:
            raise FetchFailed(f"page {page}: HTTP {status} after {len(retries)} retries", retries)
        try:
            return self._listing(page, body, retries)
        except RecursionError:  # 100,000 nested `[`: decoding, repr and dumps all recurse; a bad page, not a crash
            raise FetchFailed(f"page {page}: not a listing (nested too deeply to decode)", retries) from None

    @staticmethod
    def _listing(page: int, body: bytes, retries: list[str]) -> Page:
        """The listing a page's body holds; FetchFailed when it holds none."""
        try:
            data = json.loads(body)
            items, total = data["items"], data["total_pages"]
        except (ValueError, TypeError, KeyError) as exc:
            raise FetchFailed(f"page {page}: not a listing ({type(exc).__name__}: {exc})", retries) from None
        if not isinstance(items, list) or not _is_count(total):
            raise FetchFailed(
                f"page {page}: not a listing (items {type(items).__name__}, total_pages {total!r})", retries
            )
        ids, bad = [], []
        for item in items:
            reason = _bad_item(item)
            if reason is None:
                ids.append(item["id"])
            else:
                bad.append({"item": json.dumps(item)[:200], "reason": reason})
        return Page(
            page=page, total_pages=total, ids=tuple(ids), retries=tuple(retries), bad_items=tuple(bad), digest=_digest(items)
        )

    def fetch_detail(self, animal_id: int) -> Detail:
        """One animal's detail body as received; a non-200 answer past the retry budget is a FetchFailed."""
        status, body, retries = self._get(f"{LIST_PATH}/{animal_id}")
        if status != 200:
            raise FetchFailed(
                f"HTTP {status} after {len(retries)} retries: {body[:200].decode('utf-8', 'replace')}", retries
            )
        return Detail(animal_id=animal_id, body=body, retries=tuple(retries))

    def post_batch(
        self,
        records: Sequence[dict[str, Any]],
        release: Callable[[], bool] | None = None,
        left: Callable[[], None] | None = None,
    ) -> PostResult:
        """POST one batch and say what is known of its fate; never raises for a network outcome.

        The body waits for the handler's `100 Continue`, so a stall or a chaos 5xx never sees it (continue100).
        `release` is asked just before the body leaves (the journal's write-ahead mark); False withholds it.
        `left` is told once a released body's send has returned (or failed). A POST is never redirected: a 3xx is
        an answer (see outcomes.classify_answer), not a new request.
        """
        if self.post_refusal is not None:
            return PostResult(PostOutcome.NEVER_RECEIVED, None, None, self.post_refusal)
        continues = self._continues
        if release is not None and not continues:
            # HTTPS sends its body at once (continue100 speaks plain HTTP only): the release comes first
            if not release():
                return PostResult(PostOutcome.NEVER_RECEIVED, None, None, "body_withheld: its release could not be journaled")
            if left is not None:
                left()  # the body leaves inside session.post below, on this thread: nothing to wait for
        try:
            with release_gate(release if continues else None, left if continues else None) as trace:
                response = self.session.post(
                    self.base_url + HOME_PATH, json=list(records), timeout=self._post_timeout, headers=EXPECT_CONTINUE,
                    allow_redirects=False,
                )
        except RetryStopped as exc:  # the run is stopping: the answer waited after is the last word
            if exc.response is None:  # it waited after a failed connection: no answer, only that error
                retries = _history_kinds(exc.history)
                return _unanswered(exc.error, trace, retries, continues, "stopped while waiting to retry: ")
            return self._answered(exc.response, trace, continues, "stopped while waiting to retry: ")
        except requests.RequestException as exc:
            retries = _history_kinds(getattr(_max_retry(exc), "retry_history", ()))
            return _unanswered(_root_cause(exc), trace, retries, continues, "")
        return self._answered(response.raw, trace, continues, "", text=response.text)

    def _answered(self, raw: Any, trace: PostTrace, continues: bool, said: str, text: str | None = None) -> PostResult:
        """The PostResult of a final answer (a urllib3 response), with what became of the body on its try."""
        retries = _history_kinds(getattr(getattr(raw, "retries", None), "history", ()))
        status = raw.status
        if text is None:  # an answer drained before a retry's wait: its body may be gone
            try:
                text = (raw.data or b"").decode("utf-8", "replace")
            except Exception:  # noqa: BLE001 - the body is only shown, never judged
                text = ""
        body = text[:2000]
        release = body_release(raw)
        outcome = classify_answer(status, release)
        if outcome is PostOutcome.DELIVERED:
            error = None
        elif 200 <= status < 300:
            error = f"{said}HTTP {status} before the body was sent: the server never read the batch"
        elif 300 <= status < 400:
            where = raw.headers.get("Location", "no Location")
            sent = "before the body was sent" if release is BodyRelease.WITHHELD else "after the body was sent"
            error = f"{said}HTTP {status} redirect to {where!r} {sent}: not followed for a POST"
        else:
            error = f"{said}HTTP {status}: {body[:300]}"
        assumption = _assumption(trace, retries, continues)
        if outcome is PostOutcome.REFUSED_BEFORE_READING and status >= 500 and release is not BodyRelease.WITHHELD:
            assumption = (  # refused, and its animals will be sent again: "unread" is the old rule, not a proof
                f"HTTP {status} to a body sent without 100 Continue was taken to come before the handler read it;"
                " its animals are sent again: exactly once only if it did"
            )
        return PostResult(outcome, status, body, error, tuple(retries), release, assumption)


def _unanswered(
    cause: BaseException | None, trace: PostTrace, retries: Sequence[str], continues: bool, said: str
) -> PostResult:
    """The PostResult of a POST whose last try got no answer: never received only if that try's body never left."""
    kind = _error_kind(cause)
    # Through continue100's connection every try knows whether a body left; otherwise only a failed connect proves it.
    never = kind in ("connect_error", "body_withheld") or (continues and not trace.body_left)
    outcome = PostOutcome.NEVER_RECEIVED if never else PostOutcome.UNKNOWN
    return PostResult(outcome, None, None, f"{said}{kind}: {cause}", assumption=_assumption(trace, retries, continues, False))


def _assumption(trace: PostTrace, retries: Sequence[str], continues: bool, answered: bool = True) -> str | None:
    """The assumption a POST's outcome rests on, if any (see PostResult.assumption); `answered`: its last try got
    the final answer (otherwise every answer in the trace was one urllib3 re-sent after)."""
    if continues:
        status = trace.unread_answer_resent(answered)
    else:  # HTTPS: no 100-continue, so every answer urllib3 re-sent (a 5xx, a 429...) was to a body that had left
        status = next((int(kind[5:]) for kind in retries if kind.startswith("http_") and kind[5:].isdigit()), None)
    if status is None:
        return None
    return (
        f"re-sent after HTTP {status} to a body sent without 100 Continue: exactly once only if that {status}"
        " came before the handler read the body"
    )
