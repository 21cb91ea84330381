"""Tests for animal_sync.urls: a password never leaves in a URL meant to be shown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from animal_sync.urls import redact_url


@pytest.mark.parametrize(
    "url, redacted",
    [
        ("http://sync:hunter2@api.test:3123/v1", "http://sync:***@api.test:3123/v1"),
        ("https://u:p%40ss@api.test/", "https://u:***@api.test/"),
        ("http://:secret@api.test", "http://:***@api.test"),
        ("http://api.test:3123/v1?page=2", "http://api.test:3123/v1?page=2"),
        ("http://user@api.test/", "http://user@api.test/"),
    ],
)
def test_redact_url_hides_a_password(url, redacted):
    assert redact_url(url) == redacted


def test_redact_url_keeps_an_ipv6_host_a_url():
    assert redact_url("http://u:pw@[::1]:3123/v1") == "http://u:***@[::1]:3123/v1"


def test_config_does_not_import_the_api_client() -> None:
    """The api-config import cycle is over: settings load without the HTTP client."""
    probe = "import sys, animal_sync.config; print('animal_sync.client.api' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
