# The EL9 floor (DESIGN section 10): the suite on Python 3.9 with the oldest dependency
# versions that install here, so nothing newer sneaks in unnoticed.
PYTHON39 ?= $(firstword $(shell command -v python3.9 2>/dev/null | grep -v pyenv/shims) $(wildcard /root/.pyenv/versions/3.9*/bin/python3.9) $(wildcard /usr/bin/python3.9))
FLOOR_VENV := .venv-floor
FLOOR_PINS := cryptography==36.0.2 PyYAML==5.4.1 pycdlib==1.11.0

.PHONY: test-floor
test-floor:
	@test -n "$(PYTHON39)" || { echo "test-floor: no Python 3.9 found; set PYTHON39=/path/to/python3.9"; exit 1; }
	@test -x $(FLOOR_VENV)/bin/python || $(PYTHON39) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install -q --disable-pip-version-check -e . $(FLOOR_PINS) -r requirements-test.txt
	$(FLOOR_VENV)/bin/python -m pytest -q -p no:cacheprovider

CI_TARGETS += test-floor
