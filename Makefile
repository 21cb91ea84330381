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

## torture: the long reliability suite (20 SIGKILLs, chaos, outage); prints one line of figures
torture: $(STAMP)
	$(BIN)/python scripts/torture.py

## conformance: one sync killed three times and resumed, then audited; prints one line of figures.
## Against a server: make conformance API_URL=http://localhost:3123 (default: the bundled strict simulator)
conformance: $(STAMP)
	$(BIN)/python scripts/conformance.py $(if $(API_URL),--api-url $(API_URL))

## bench: the benchmark table (floor, journal overhead, scale, 1/2/4 shards at once: medians of 3; real conditions: 5 paired repetitions)
bench: $(STAMP)
	$(BIN)/python scripts/bench.py

## clean: remove the venv and what the demo and the README's next steps write
clean:
	rm -rf $(VENV) .pytest_cache demo.db demo.db-wal demo.db-shm demo.db.lock report.html raw.csv sync.log
