# Everything installs itself into .venv from pyproject.toml; only python3 is assumed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast docs torture conformance bench bytecode clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m compileall -q src migrations
	touch $(STAMP)

## bytecode: compile src/ and migrations/ ahead, as a wheel install does: an editable install under
## PYTHONDONTWRITEBYTECODE would otherwise compile every module of ours again at every start (about 40 ms)
bytecode:
	$(BIN)/python -m compileall -q src migrations

## demo: start the bundled simulator and run a full, audited sync against it
demo: $(STAMP)
	$(BIN)/animal-sync demo

## test: the whole suite (unit, integration, end-to-end, the docs' transcripts); prints its 15 slowest tests
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

## test-fast: the suite without the tests marked slow (a minute or so), for the edit-test loop
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 -m "not slow"

## docs: rerun every transcript in README.md and docs/*.md against the bundled simulator, regenerate
## docs/cli.md, and retake docs/report-example.png (skipped, with its reason, where no headless Chromium is)
docs: $(STAMP)
	$(BIN)/python scripts/transcripts.py
	$(BIN)/python scripts/gen_cli_docs.py
	$(BIN)/python scripts/report_screenshot.py

## torture: the long reliability suite (20 SIGKILLs, chaos, outage, 10 rounds of the kill loop); prints one line of figures
torture: $(STAMP)
	$(BIN)/python scripts/torture.py

## conformance: one sync killed three times and resumed, then audited; prints one line of figures.
## Against a server: make conformance API_URL=http://localhost:3123 (default: the bundled strict simulator)
conformance: $(STAMP)
	$(BIN)/python scripts/conformance.py $(if $(API_URL),--api-url $(API_URL))

## bench: animal-sync against the naive 32-thread client on the bundled simulator, 5 pairs at 2 % vs 0 % and 0 % vs 0 %
## (per animal, client and server CPU), the journal on disk vs in memory, start-up, scale, 1/2/4 shards; a few minutes
bench: $(STAMP) bytecode
	$(BIN)/python scripts/bench.py

## clean: remove the venv and what the demo and the README's next steps write
clean:
	rm -rf $(VENV) .pytest_cache demo.db demo.db-wal demo.db-shm demo.db.lock report.html raw.csv sync.log
