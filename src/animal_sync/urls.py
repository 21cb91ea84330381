"""URLs fit to show: a password never reaches a log line, the journal or a report.

Its own module so that config and the API client both use it without importing each other.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs, the journal and reports."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # keeps an IPv6 host's brackets and the port as written
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
