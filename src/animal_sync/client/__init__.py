"""The HTTP client: the Animals API over requests and urllib3, and what each answer means.

It owns the session and its adapters (`api`), the urllib3 `Retry` policies (`retry`), `Expect: 100-continue` on a
urllib3 connection (`continue100`), each GET try's deadline (`deadline`), the adaptive GET cut (`latency`), and the
classification of a POST's answer into a verdict (`outcomes`).

It must never import the journal, the engine, the reports, the CLI, the web page or the simulator: HTTP knows no
storage, and nothing here decides what is written.
"""
