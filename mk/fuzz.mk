# `make fuzz`: the fuzz suite with many more examples than `make test` runs (bounded, not CI).
FUZZ_EXAMPLES ?= 20000
.PHONY: fuzz
fuzz: system-deps test-venv
	CONTEXTD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/test_fuzz.py tests/test_fuzz_attack_*.py \
	  tests/test_tamper.py
