"""What a batch's outcome rests on when it is not proven: a 5xx to a body sent with no `100 Continue` evidence,
taken to have come before the handler read it (and so re-sent). NULL when the outcome is proven."""

from sqlite_utils import Database


def migrate(db: Database) -> None:
    db["batches"].add_column("assumption", str)
