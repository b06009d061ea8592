# contextd-collector (DESIGN section 12): `make bench-collector` measures it (not a test) and
# writes its section of bench/RESULTS.md. REPORTS and CLIENTS bound the run (about 10
# minutes for the three setups at 100,000 on 2 cores).
REPORTS ?= 100000
CLIENTS ?= 16
.PHONY: bench-collector
bench-collector: system-deps venv
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[collector,collector-postgresql]'
	$(BIN)/python bench/collector.py --reports $(REPORTS) --clients $(CLIENTS)
