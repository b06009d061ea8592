# The EL9 floor (DESIGN section 10): the suite on Python 3.9 with the oldest dependency
# versions that install here, so nothing newer sneaks in unnoticed. The versions are EL9's own
# packages: python3-cryptography 36.0.1 (36.0.2 is the oldest wheel here), python3-pyyaml 5.4.1,
# python3-pycdlib 1.11.0 (EPEL), python3-requests 2.25.1, python3-urllib3 1.26.5,
# python3-pyudev 0.22.0, python3-jinja2 2.11.3 with python3-markupsafe 1.1.1. (python3-systemd 234 is a C extension against libsystemd; the code
# only calls systemd.journal.send, which every version has.)
PYTHON39 ?= $(firstword $(shell command -v python3.9 2>/dev/null | grep -v pyenv/shims) $(wildcard /root/.pyenv/versions/3.9*/bin/python3.9) $(wildcard /usr/bin/python3.9))
FLOOR_VENV := .venv-floor
FLOOR_PINS := cryptography==36.0.2 PyYAML==5.4.1 pycdlib==1.11.0 requests==2.25.1 urllib3==1.26.5 \
              pyudev==0.22.0 Jinja2==2.11.3 MarkupSafe==1.1.1

.PHONY: test-floor lint-floor wheel-floor
# The gates (tests/test_gates.py) are left to `make test` and lint-strict: mypy reads the
# installed libraries' types, and EL9's cryptography 36 has no SSH certificate API to type.
test-floor:
	@test -n "$(PYTHON39)" || { echo "test-floor: no Python 3.9 found; set PYTHON39=/path/to/python3.9"; exit 1; }
	@test -x $(FLOOR_VENV)/bin/python || $(PYTHON39) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install -q --disable-pip-version-check -e . $(FLOOR_PINS) -r requirements-test.txt
	$(FLOOR_VENV)/bin/python -m pytest -q -p no:cacheprovider --ignore=tests/test_gates.py

# Python 3.9 syntax and standard library, checked statically (a 3.10-only call in a branch
# the tests never take still fails here):
# - vermin: the minimum Python version of every stdlib module, function and keyword argument
#   used, annotations included. Scope: what runs on EL9 (contextd, the plugins, the generator)
#   and the tests, which the floor runs on 3.9; not the packaging/ CI helpers, which run on the
#   CI host's Python. (Not its union-types feature: it takes `os.O_RDONLY | os.O_CLOEXEC` for
#   a PEP 604 union. FA102 below covers those in annotations.)
# - ruff with the py39 target: syntax 3.9 cannot parse (match, except*, ...), the pyflakes and
#   pycodestyle rules (E, F, W: undefined names, unused imports, invalid escapes), and FA102:
#   a PEP 604 `X | None` annotation without `from __future__ import annotations`, which 3.9
#   evaluates and fails on. Not E501: line length is style, left to the authors
#   (pyproject.toml keeps 100), not a floor.
LINT_PINS   := vermin==1.9.2 ruff==0.17.5
VERMIN_SCOPE := contextd plugins contextd_collector tests packaging/systemd/contextd-generator
# (tests/test_gates.py checks that this names every directory and extension-less script of
# Python in the tree, and that the mypy/ruff pins equal requirements-test.txt's.)
RUFF_SCOPE   := contextd plugins contextd_collector tests packaging examples bench \
                packaging/systemd/contextd-generator packaging/e2e/guest/e2e-report

lint-floor: $(VENV)/.lint
	$(BIN)/vermin -t=3.9- --violations --eval-annotations --no-tips $(VERMIN_SCOPE)
	$(BIN)/ruff check --no-cache --target-version py39 --select E,F,W,FA102 --ignore E501 $(RUFF_SCOPE)

# Issue 13's type and lint gates over the whole tree, in CI: mypy on the repo's own config
# ([tool.mypy] in pyproject.toml: contextd and plugins; mypy 1.x, the last that checks for
# Python 3.9) and ruff with the extended rules of [tool.ruff.lint] (B, SIM, RUF, UP, PT, BLE
# beside E, F, W) on RUFF_SCOPE. tests/test_gates.py runs the same two on the same scopes.
STRICT_PINS := mypy==1.19.1

.PHONY: lint-strict
lint-strict: $(VENV)/.strict
	$(BIN)/mypy
	$(BIN)/ruff check --no-cache $(RUFF_SCOPE)

$(VENV)/.strict: $(VENV)/.lint
	$(BIN)/python -m pip install -q --disable-pip-version-check $(STRICT_PINS)
	touch $@

$(VENV)/.lint: $(VENV)/.runtime mk/floor.mk
	$(BIN)/python -m pip install -q --disable-pip-version-check $(LINT_PINS)
	touch $@

# The RPM's build step on EL9's own tools: pip 21.2.3, setuptools 53.0.0 and wheel 0.36.2,
# without build isolation, as contextd.spec runs them (pyproject.toml's setuptools>=61 is for
# developers' pip; EL9 never sees it). Fails when the packaging metadata needs anything newer.
EL9_BUILD_PINS := pip==21.2.3 setuptools==53.0.0 wheel==0.36.2
EL9_BUILD_DIR  := build/el9-wheel

wheel-floor:
	@test -n "$(PYTHON39)" || { echo "wheel-floor: no Python 3.9 found; set PYTHON39=/path/to/python3.9"; exit 1; }
	rm -rf $(EL9_BUILD_DIR) && mkdir -p $(EL9_BUILD_DIR)/src
	git ls-files -co --exclude-standard | while read -r f; do [ -e "$$f" ] && printf '%s\n' "$$f"; done | \
	  tar -cf - -T - | tar -xf - -C $(EL9_BUILD_DIR)/src
	$(PYTHON39) -m venv $(EL9_BUILD_DIR)/venv
	$(EL9_BUILD_DIR)/venv/bin/python -m pip install -q --disable-pip-version-check $(EL9_BUILD_PINS)
	cd $(EL9_BUILD_DIR)/src && ../venv/bin/python -m pip wheel -q --no-deps --no-build-isolation \
	  --no-index --no-cache-dir --disable-pip-version-check --wheel-dir ../dist .
	$(EL9_BUILD_DIR)/venv/bin/python -c 'import sys, zipfile; \
	  z = zipfile.ZipFile(sys.argv[1]); ep = [n for n in z.namelist() if n.endswith("entry_points.txt")]; \
	  text = z.read(ep[0]).decode(); assert "[contextd.plugins]" in text and "contextd = contextd.cli:main" in text, text; \
	  print("wheel-floor: %s builds with EL9 pip/setuptools/wheel" % sys.argv[1])' $(EL9_BUILD_DIR)/dist/contextd-*.whl

CI_TARGETS += lint-floor lint-strict test-floor wheel-floor
