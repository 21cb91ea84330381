"""Each attempt records the API URL it used (redacted), so status shows the one in use after `resume --base-url`."""

from sqlite_utils import Database


def migrate(db: Database) -> None:
    db["runs"].add_column("attempt_url", str)  # the latest attempt's URL, secrets redacted; base_url keeps the first
