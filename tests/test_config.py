"""Settings as a library sees them: errors carry the field, its value and the rule, and name no flag."""

from __future__ import annotations

from typing import Any

import pytest

from animal_sync.config import Settings
from animal_sync.errors import ConfigError, CredentialMissing, JournaledSettingsInvalid


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 101), ("workers", 0), ("post_workers", 65), ("retries", -1), ("backoff", -0.5),
        ("backoff", float("nan")), ("connect_timeout", 0.0), ("get_timeout", float("inf")), ("post_timeout", -1.0),
        ("get_deadline", 0.0), ("limit", 0), ("max_body_bytes", 10), ("base_url", "ftp://example.org"),
        ("base_url", "http://127.0.0.1:0"), ("base_url", "http://exa mple.org/"), ("base_url", "http://[::1:3123/"),
    ],
)
def test_a_bad_setting_names_its_field_not_a_flag(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings(**{field: value})
    assert raised.value.field == field and raised.value.rule
    assert str(raised.value).startswith(f"{field} ") and "--" not in str(raised.value)


def test_the_error_keeps_the_value_it_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings(workers=300)
    error = raised.value
    assert (error.field, error.value, error.rule) == ("workers", 300, "must be between 1 and 256")
    assert error.describe("--workers") == "--workers must be between 1 and 256, not 300"


def test_a_password_in_a_refused_url_is_not_kept() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings(base_url="http://bob:hunter2@127.0.0.1:99999/")
    assert raised.value.value == "http://bob:***@127.0.0.1:99999/" and "hunter2" not in str(raised.value)


def test_journaled_settings_that_break_a_rule_say_so_with_the_field() -> None:
    stored = {**Settings().journaled(), "backoff": -1}
    with pytest.raises(JournaledSettingsInvalid) as raised:
        Settings.from_journal(stored)
    assert (raised.value.field, raised.value.value) == ("backoff", -1)
    assert "journaled settings cannot be used (backoff must be 0 or more, not -1)" in str(raised.value)


def test_an_authenticated_run_without_its_secret_names_the_url_field() -> None:
    stored = {**Settings(token="t").journaled()}
    with pytest.raises(CredentialMissing) as raised:
        Settings.from_journal(stored)
    assert raised.value.field == "base_url" and "--" not in str(raised.value)
