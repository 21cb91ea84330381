"""The first journal schema: runs, listed pages, animals, batches, and per-run counters."""

from sqlite_utils import Database


def migrate(db: Database) -> None:
    db["runs"].create(
        {
            "id": int,
            "state": str,  # running | interrupted | finished | abandoned
            "settings": str,  # JSON, secrets redacted
            "base_url": str,  # secrets redacted
            "total_pages": int,  # the largest total the API has reported, NULL until page 1 answers
            "started_at": str,
            "resumed_at": str,
            "attempts": int,  # 1 for the first run, +1 for each resume
            "finished_at": str,
            "outcome": str,  # JSON summary written when an attempt ends
        },
        pk="id",
    )
    db["pages"].create(
        {"run_id": int, "page": int, "items": int, "total_pages": int, "listed_at": str},
        pk=("run_id", "page"),
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["batches"].create(
        {
            "id": int,
            "run_id": int,
            "state": str,  # pending | sending | posted | failed | in_doubt
            "ids": str,  # JSON array of the animal ids the batch carries, in order
            "size": int,
            "attempts": int,  # POSTs sent for it (a re-send after in-doubt adds one)
            "response_status": int,
            "response_body": str,
            "last_error": str,
            "created_at": str,
            "sent_at": str,
            "in_doubt_at": str,  # set the first time it became in-doubt; never cleared
            "finished_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["animals"].create(
        {
            "run_id": int,
            "id": int,
            "page": int,
            "state": str,  # discovered | fetched | quarantined | failed | batched | posted
            "attempts": int,  # detail fetches made for it
            "last_error": str,
            "raw": str,  # the detail body exactly as received (TEXT, or BLOB if not UTF-8)
            "transformed": str,  # canonical JSON of the outgoing record
            "batch_id": int,
            "discovered_at": str,
            "updated_at": str,
        },
        pk=("run_id", "id"),
        foreign_keys=[("run_id", "runs", "id"), ("batch_id", "batches", "id")],
    )
    db["counters"].create(
        {"run_id": int, "name": str, "value": int},
        pk=("run_id", "name"),
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["animals"].create_index(["run_id", "state"])
    db["animals"].create_index(["batch_id"])
    db["batches"].create_index(["run_id", "state"])
