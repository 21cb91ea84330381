"""One frozen settings object, validated once; flags win over ANIMAL_SYNC_* variables, which win over defaults.

The CLI resolves flags and environment (typer's `envvar=`); this module owns the defaults and the rules.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import UNSHOWN, ConfigError, CredentialMissing, JournaledSettingsInvalid
from .shards import Shard, journaled_shard
from .urls import redact_url

__all__ = ["API_MAX_BATCH", "DEFAULT_BASE_URL", "DEFAULT_JOURNAL", "Settings"]

API_MAX_BATCH = 100  # POST /home answers 400 above this
DEFAULT_BASE_URL = "http://localhost:3123"
DEFAULT_JOURNAL = Path("animal-sync.db")


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know; stored in the journal (redacted) so `resume` needs nothing else."""

    base_url: str = DEFAULT_BASE_URL
    journal: Path = DEFAULT_JOURNAL
    workers: int = 16  # concurrent GETs
    post_workers: int = 4  # concurrent POSTs, so a stalled POST overlaps other work
    batch_size: int = API_MAX_BATCH
    retries: int = 10  # per request, on top of the first try
    backoff: float = 0.05  # urllib3 backoff_factor; the first retry is immediate, then 0.1, 0.2, ... capped at 2 s
    connect_timeout: float = 3.05
    get_timeout: float = 1.0  # far above a normal answer, far below a stall: a stalled GET is re-sent, not waited on
    get_timeout_floor: float = 0.1  # the GET cut adapts to observed answers (4x their p99) but never below this
    get_deadline: float = 10.0  # a GET try's whole answer, headers and body: bounds an upstream that trickles
    post_timeout: float = 30.0  # above the longest stall: the API still handles a stalled POST, so wait it out
    max_body_bytes: int = 1_000_000  # a detail body above this is refused, not read into memory
    resend_in_doubt: bool = True  # at-least-once for in-doubt batches; False holds them for a person to decide
    limit: int | None = None  # sync only the first N animals listed (test mode)
    dry_run: bool = False  # list, fetch, transform and journal, but post nothing
    incremental: bool = False  # post only what is new or changed since the journal's earlier finished runs
    shard: Shard | None = None  # list, fetch and post only this shard's pages (None: all of them)
    token: str | None = field(default=None, repr=False)  # bearer token; never journaled or logged

    def __post_init__(self) -> None:
        _check_url(self.base_url)
        for name in ("backoff", "connect_timeout", "get_timeout", "get_timeout_floor", "post_timeout"):
            # NaN passes every comparison below and inf would wait forever; both would be journaled and
            # then break every resume, which rebuilds these settings from the journal.
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(name, value, "must be a finite number")
        if not 1 <= self.batch_size <= API_MAX_BATCH:
            raise ConfigError("batch_size", self.batch_size, f"must be between 1 and {API_MAX_BATCH} (the API's limit)")
        if not 1 <= self.workers <= 256:
            raise ConfigError("workers", self.workers, "must be between 1 and 256")
        if not 1 <= self.post_workers <= 64:
            raise ConfigError("post_workers", self.post_workers, "must be between 1 and 64")
        if self.retries < 0:
            raise ConfigError("retries", self.retries, "must be 0 or more")
        for name in ("connect_timeout", "get_timeout", "get_timeout_floor", "post_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, getattr(self, name), "must be above 0")
        if not (math.isfinite(self.get_deadline) and self.get_deadline > 0):
            raise ConfigError("get_deadline", self.get_deadline, "must be a finite number of seconds above 0")
        if self.backoff < 0:
            raise ConfigError("backoff", self.backoff, "must be 0 or more")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", self.limit, "must be 1 or more")
        if self.max_body_bytes < 1024:
            raise ConfigError("max_body_bytes", self.max_body_bytes, "must be at least 1024")

    def journaled(self) -> dict[str, Any]:
        """The settings as stored in the journal: no token, no password, the journal path as text."""
        data = asdict(self)
        data.pop("token")
        data["base_url"] = redact_url(self.base_url)
        data["journal"] = str(self.journal)
        data["shard"] = None if self.shard is None else str(self.shard)  # as typed: `resume` parses it back
        data["authenticated"] = bool(self.token) or urlsplit(self.base_url).password is not None
        return data

    @classmethod
    def from_journal(cls, stored: dict[str, Any], **overrides: Any) -> Settings:
        """Rebuild a run's settings from its journal row, with what cannot be stored (secrets) passed back in."""
        data = {key: value for key, value in stored.items() if key in cls.__dataclass_fields__}
        given = {key: value for key, value in overrides.items() if value is not None}
        if "base_url" in data:
            # The journaled URL is redacted: its "***" must never go out as a password.
            data["base_url"] = _without_password(str(data["base_url"]))
        data["journal"] = Path(data.get("journal", DEFAULT_JOURNAL))  # journaled as text
        try:
            data["shard"] = journaled_shard(data)  # journaled as text
            cls(**data)  # what the journal holds, checked alone, so its faults are not blamed on a flag
        except ConfigError as exc:
            raise JournaledSettingsInvalid(exc.field, exc.value, exc.rule) from None
        authenticated = bool(stored.get("authenticated")) or "***@" in str(stored.get("base_url", ""))
        has_password = "base_url" in given and urlsplit(str(given["base_url"])).password is not None
        if authenticated and not given.get("token") and not has_password:
            raise CredentialMissing()
        data.update(given)
        data["journal"] = Path(data["journal"])  # an override may be text too
        return cls(**data)


def _check_url(url: str) -> None:
    """An http(s) URL with a host of legal characters and a usable port, so a typo fails here, not mid-run."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an IPv6 host whose bracket is not closed; the URL may hold a password
        raise ConfigError("base_url", UNSHOWN, f"must be an http(s) URL with a host: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("base_url", redact_url(url), "must be an http(s) URL with a host")
    try:
        port = parts.port  # raises ValueError for a port that is not a number or is above 65535
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError("base_url", redact_url(url), "must have a port between 1 and 65535")
    host = parts.hostname
    if ":" in host:  # an IPv6 literal (urlsplit has dropped its brackets)
        try:
            ipaddress.IPv6Address(host)
            return
        except ValueError:
            pass
    elif all(char.isalnum() or char in "-._" for char in host):
        return
    raise ConfigError("base_url", UNSHOWN, f"has a host name with characters a host cannot have: {host!r}")


def _without_password(url: str) -> str:
    """`url` with its user information dropped when it carries a (redacted) password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
