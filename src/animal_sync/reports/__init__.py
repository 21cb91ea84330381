"""The reports: what a journal says, as data first (frozen values with `to_json()`), rendered elsewhere.

It owns `status`, the `audit` and its proofs, the union of several shard journals (`union`), a person's settlement
of in-doubt batches (`settle`, `settled`), the writer's liveness (`writer`), `export` (and its `formats`) and the HTML
report (`html_report`), and `plain` (a value as JSON-ready data).

It must never import the engine, the HTTP client, the CLI, the web page or the simulator: a report reads the
journal and sends nothing.
"""
