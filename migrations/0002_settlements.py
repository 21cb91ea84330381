"""Settlements: a person's decision about a batch whose delivery the journal cannot prove, with who, when and why."""

from sqlite_utils import Database


def migrate(db: Database) -> None:
    db["settlements"].create(
        {
            "id": int,
            "run_id": int,
            "batch_id": int,
            "decision": str,  # delivered | resend
            "reason": str,  # the person's own words, required
            "user": str,  # the OS user who settled it (or their uid)
            "settled_at": str,
            # POSTs the batch had been sent when it was settled: a re-send decision answers one doubt, and a
            # batch that went in doubt again after it is not covered by it.
            "attempts": int,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id"), ("batch_id", "batches", "id")],
    )
    db["settlements"].create_index(["run_id", "batch_id"])
