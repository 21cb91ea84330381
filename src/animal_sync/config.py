"""One frozen settings object, validated once; flags win over ANIMAL_SYNC_* variables, which win over defaults.

The CLI resolves flags and environment (typer's `envvar=`); this module owns the defaults and the rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .api import redact_url
from .errors import ConfigError

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
    get_deadline: float = 10.0  # a GET try's whole answer, headers and body: bounds an upstream that trickles
    post_timeout: float = 30.0  # above the longest stall: the API still handles a stalled POST, so wait it out
    max_body_bytes: int = 1_000_000  # a detail body above this is refused, not read into memory
    resend_in_doubt: bool = True  # at-least-once for in-doubt batches; False holds them for a person to decide
    limit: int | None = None  # sync only the first N animals listed (test mode)
    dry_run: bool = False  # list, fetch, transform and journal, but post nothing
    token: str | None = field(default=None, repr=False)  # bearer token; never journaled or logged

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--base-url must be an http(s) URL with a host, not {self.base_url!r}")
        if not 1 <= self.batch_size <= API_MAX_BATCH:
            raise ConfigError(f"--batch-size must be between 1 and {API_MAX_BATCH} (the API's limit), not {self.batch_size}")
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"--workers must be between 1 and 256, not {self.workers}")
        if not 1 <= self.post_workers <= 64:
            raise ConfigError(f"--post-workers must be between 1 and 64, not {self.post_workers}")
        if self.retries < 0:
            raise ConfigError(f"--retries must be 0 or more, not {self.retries}")
        for name in ("connect_timeout", "get_timeout", "post_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be above 0, not {getattr(self, name)}")
        if not (math.isfinite(self.get_deadline) and self.get_deadline > 0):
            raise ConfigError(f"--get-deadline must be a finite number of seconds above 0, not {self.get_deadline}")
        if self.backoff < 0:
            raise ConfigError(f"--backoff must be 0 or more, not {self.backoff}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be 1 or more, not {self.limit}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"--max-body-bytes must be at least 1024, not {self.max_body_bytes}")

    def journaled(self) -> dict[str, Any]:
        """The settings as stored in the journal: no token, no password, the journal path as text."""
        data = asdict(self)
        data.pop("token")
        data["base_url"] = redact_url(self.base_url)
        data["journal"] = str(self.journal)
        data["authenticated"] = bool(self.token) or urlsplit(self.base_url).password is not None
        return data

    @classmethod
    def from_journal(cls, stored: dict[str, Any], **overrides: Any) -> Settings:
        """Rebuild a run's settings from its journal row, with what cannot be stored (secrets) passed back in."""
        data = {key: value for key, value in stored.items() if key in cls.__dataclass_fields__}
        data.update({key: value for key, value in overrides.items() if value is not None})
        data["journal"] = Path(data.get("journal", DEFAULT_JOURNAL))  # journaled as text; an override may be too
        return cls(**data)
