# Everything installs itself into .venv from pyproject.toml; only python3 is assumed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test torture conformance bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## demo: start the bundled simulator and run a full, audited sync against it
demo: $(STAMP)
	$(BIN)/animal-sync demo

## test: the whole fast suite (unit, integration, end-to-end)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## torture: the long reliability suite (20 SIGKILLs, chaos, outage, 10 rounds of the kill loop); prints one line of figures
torture: $(STAMP)
	$(BIN)/python scripts/torture.py

## conformance: one sync killed three times and resumed, then audited; prints one line of figures.
## Against a server: make conformance API_URL=http://localhost:3123 (default: the bundled strict simulator)
conformance: $(STAMP)
	$(BIN)/python scripts/conformance.py $(if $(API_URL),--api-url $(API_URL))

## bench: animal-sync against the naive 32-thread client on the bundled simulator, 5 pairs at 2 % vs 0 % and 0 % vs 0 %
## (per animal, client and server CPU), the journal on disk vs in memory, start-up, scale, 1/2/4 shards; a few minutes
bench: $(STAMP)
	$(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) .pytest_cache demo.db demo.db-wal demo.db-shm
