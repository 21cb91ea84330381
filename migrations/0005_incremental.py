"""Incremental runs (`run --incremental`): an animal whose record is the one an earlier run delivered is journaled
`unchanged`, with a pointer to that delivery, so the audit can prove it instead of taking it on trust."""

from sqlite_utils import Database


def migrate(db: Database) -> None:
    # For an unchanged animal: the earlier run, and its batch, that delivered this very record. NULL otherwise.
    db["animals"].add_column("delivered_run_id", int)
    db["animals"].add_column("delivered_batch_id", int)
