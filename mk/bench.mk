# `make bench`: the boot-path benchmark (not a test); writes bench/RESULTS.md.
.PHONY: bench
bench: system-deps venv
	$(BIN)/python bench/run.py
