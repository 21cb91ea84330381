"""The engine: one attempt of a sync, from the first listing to the last POST, with the journal as its memory.

It owns start and resume (`pipeline`), the coordinator that is the journal's only writer during an attempt (`sync`),
the page plan (`listing`), the detail fetch on a thread pool (`fetch`), the POST side and its batches (`outbox`), the
moment a body is released (`release`), the data-set check against an upstream restart (`upstream`), what one attempt
saw and how it ended (`attempt`), the first contact with the API (`contact`) and incremental runs (`incremental`).

It must never import the reports, the CLI, the web page or the simulator: what work is left is read from the
journal's typed queries, never from a report, and words for people belong to the CLI.
"""
