# `make bench`: the boot-path benchmark (not a test); writes bench/RESULTS.md.
.PHONY: bench
bench: system-deps venv
	@packaging/ci/apt-ensure valgrind
	$(BIN)/python bench/run.py --el9-python "$(PYTHON39)" --el9-pins "$(FLOOR_PINS)"
