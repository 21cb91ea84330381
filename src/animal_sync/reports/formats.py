"""What `export` can write, as values a flag names: its file formats and its payloads.

Apart from export.py so that the CLI can build its `--format` and `--what` options without loading the export
and the journal reads behind it (a run's start-up pays for neither: issue 19).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ExportFormat", "Payload"]


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


class Payload(StrEnum):
    RAW = "raw"  # the detail body exactly as the API sent it
    TRANSFORMED = "transformed"  # the record as POSTed (or to be POSTed) to /home
