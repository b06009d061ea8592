# contextd developer entry points. Quick start: `make demo`, then `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Real peers the tests use (DESIGN: no silent skips in CI).
APT_PACKAGES := genisoimage xorriso openssh-client puppet postgresql chromium \
		cloud-image-utils cloud-init dosfstools mtools man-db groff-base

# Further targets live in mk/*.mk; each may add itself to CI_TARGETS, which `make ci-extra`
# runs (.ci/run calls `make test`, then `make ci-extra`).
CI_TARGETS :=

.PHONY: demo collector-demo test ci-extra system-deps venv test-venv clean

venv: $(VENV)/.runtime
$(VENV)/.runtime: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e .
	touch $@

test-venv: $(VENV)/.test
$(VENV)/.test: $(VENV)/.runtime requirements-test.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

# Debian packages for the test peers: installed when we are root and they are missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (install them as root)"; exit 1; fi; \
	fi

demo: venv
	bash examples/demo.sh $(if $(FULL),--full)

# contextd-collector on SQLite on 127.0.0.1, fed by the demo's runs; prints the page's URL.
collector-demo: venv
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[collector]'
	bash examples/collector-demo.sh

test: system-deps test-venv
	$(BIN)/python -m pytest -q

-include mk/*.mk

ci-extra:
	@for t in $(CI_TARGETS); do echo "== make $$t"; $(MAKE) --no-print-directory $$t || exit 1; done

clean:
	rm -rf $(VENV) demo-out collector-demo-out build *.egg-info
