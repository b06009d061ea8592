# The EL9 package (DESIGN section 1: sites install contextd as an RPM in the base image).
#   make rpm        tarball of the tree + rpmbuild -bb  -> build/rpm/contextd.rpm and
#                   build/rpm/contextd-collector.rpm (symlinks)
#   make rpm-check  rpmlint, install into a scratch root, check files, modes, requirements;
#                   the collector's RPM run on EL9's Python and libraries (check-collector-rpm.sh)
# The collector's bundled wheels (packaging/rpm/collector-bundle.txt) are downloaded with
# their hashes checked BEFORE rpmbuild, into build/rpm-bundle (kept while the lock file does
# not change), and given to rpmbuild as Source1: rpmbuild itself stays offline.
# On a host that is not EL (CI: Debian's rpm) the EL9 macros come from packaging/rpm/el9.macros
# and build dependencies are not checked (rpm has no database of Debian's packages); %check
# then runs the tests with Debian's own python3 libraries. RPM_CHECK=0 skips %check.
RPM_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' contextd/__init__.py)
RPM_TOP     := build/rpm
RPM_LINK    := $(RPM_TOP)/contextd.rpm
RPM_COLLECTOR_LINK := $(RPM_TOP)/contextd-collector.rpm
RPM_LOCK    := packaging/rpm/collector-bundle.txt
RPM_BUNDLE  := build/rpm-bundle
# pure wheels for Python 3.9 only: --platform any with abi none refuses any C extension
RPM_PIP_DOWNLOAD := python3 -m pip download -q --disable-pip-version-check --no-cache-dir \
                    --no-deps --only-binary=:all: --python-version 3.9 --implementation py \
                    --abi none --platform any
RPM_SPEC    := packaging/rpm/contextd.spec
RPM_CHECK   ?= 1
RPM_FOREIGN := $(if $(wildcard /etc/redhat-release),,--load packaging/rpm/el9.macros --nodeps)
RPM_APT     := rpm rpmlint cpio busybox-static systemd openssh-client openssl python3 \
               python3-pip python3-setuptools python3-wheel python3-pytest python3-yaml \
               python3-cryptography python3-pycdlib python3-requests python3-urllib3 \
               python3-pyudev python3-systemd python3-jsonschema man-db groff-base \
               python3-jinja2 python3-markupsafe python3-idna python3-packaging postgresql unzip
# Every file of the working tree that git would take (tracked or new, not ignored).
RPM_INPUTS  := $(wildcard $(shell git ls-files -co --exclude-standard 2>/dev/null))

.PHONY: rpm rpm-check rpm-deps rpm-bundle-lock
rpm: $(RPM_LINK)

rpm-deps:
	@packaging/ci/apt-ensure $(if $(wildcard /etc/redhat-release),,$(RPM_APT))

$(RPM_BUNDLE)/.done: $(RPM_LOCK) | rpm-deps
	rm -rf $(RPM_BUNDLE) && mkdir -p $(RPM_BUNDLE)/collector-bundle
	$(RPM_PIP_DOWNLOAD) --require-hashes -r $(RPM_LOCK) -d $(RPM_BUNDLE)/collector-bundle
	@test "$$(ls $(RPM_BUNDLE)/collector-bundle | grep -c '\.whl$$')" = "$$(grep -c '^[^#].*==' $(RPM_LOCK))" || \
	  { echo "make rpm: the wheels downloaded are not one per line of $(RPM_LOCK)"; exit 1; }
	touch $@

# Prints the lock file's lines for the versions it names, with the hashes of the wheels
# PyPI serves now: for changing a version (check the output before pasting it).
rpm-bundle-lock:
	@tmp=$$(mktemp -d) && sed -n 's/^\([^#][^ ]*==[^ ]*\).*/\1/p' $(RPM_LOCK) | \
	  xargs $(RPM_PIP_DOWNLOAD) -d $$tmp && \
	  for w in $$tmp/*.whl; do \
	    meta=$$(unzip -p $$w '*.dist-info/METADATA'); \
	    echo "$$(echo "$$meta" | sed -n 's/^Name: //p')==$$(echo "$$meta" | sed -n 's/^Version: //p') --hash=sha256:$$(sha256sum $$w | cut -d' ' -f1)"; \
	  done; rm -rf $$tmp

$(RPM_LINK): $(RPM_INPUTS) $(RPM_BUNDLE)/.done | rpm-deps
	@test -n "$(RPM_INPUTS)" || { echo "make rpm: needs a git checkout (the tarball is what git ls-files lists)"; exit 1; }
	@spec_version=$$(sed -n 's/^Version: *//p' $(RPM_SPEC)); test "$$spec_version" = "$(RPM_VERSION)" || \
	  { echo "make rpm: $(RPM_SPEC) has Version $$spec_version, contextd/__init__.py says $(RPM_VERSION)"; exit 1; }
	rm -rf $(RPM_TOP) && mkdir -p $(RPM_TOP)/SOURCES
	git ls-files -co --exclude-standard | while read -r f; do [ -e "$$f" ] && printf '%s\n' "$$f"; done | \
	  tar -czf $(RPM_TOP)/SOURCES/contextd-$(RPM_VERSION).tar.gz --owner=0 --group=0 \
	      --transform 's,^,contextd-$(RPM_VERSION)/,' -T -
	tar -czf $(RPM_TOP)/SOURCES/contextd-collector-bundle-$(RPM_VERSION).tar.gz --owner=0 --group=0 \
	    -C $(RPM_BUNDLE) collector-bundle
	cp $(RPM_LOCK) $(RPM_TOP)/SOURCES/
	@test -z "$(RPM_FOREIGN)" || test -n "$(PYTHON39)" || \
	  { echo "make rpm: no Python 3.9 to byte-compile the collector's bundle for EL9; set PYTHON39=/path/to/python3.9"; exit 1; }
	rpmbuild -bb $(RPM_FOREIGN) $(if $(RPM_FOREIGN),--define "el9_python39 $(PYTHON39)") \
	  $(if $(filter 0,$(RPM_CHECK)),--nocheck) \
	  --define "_topdir $(abspath $(RPM_TOP))" $(RPM_SPEC) > $(RPM_TOP)/rpmbuild.log 2>&1 || \
	  { tail -n 60 $(RPM_TOP)/rpmbuild.log; echo "make rpm: rpmbuild failed (log: $(RPM_TOP)/rpmbuild.log)"; exit 1; }
	@grep -E '^[0-9]+ passed' $(RPM_TOP)/rpmbuild.log || test "$(RPM_CHECK)" = 0 || \
	  { echo "make rpm: %check ran no tests?"; exit 1; }
	ln -sf $$(cd $(RPM_TOP) && ls RPMS/noarch/contextd-$(RPM_VERSION)-*.noarch.rpm) $(RPM_LINK)
	ln -sf $$(cd $(RPM_TOP) && ls RPMS/noarch/contextd-collector-$(RPM_VERSION)-*.noarch.rpm) $(RPM_COLLECTOR_LINK)
	@ls -l $(RPM_TOP)/RPMS/noarch/

# EL9's Python (3.9) with only EL9's versions of the libraries (mk/floor.mk's FLOOR_PINS, the
# agent's stack; idna and psycopg2 as EL9 has them) and none of the collector's: the bundle
# must supply them when check-collector-rpm.sh runs the installed collector.
RPM_EL9_VENV := build/rpm-el9-venv
$(RPM_EL9_VENV)/.done: mk/floor.mk mk/rpm.mk
	@test -n "$(PYTHON39)" || { echo "rpm-check: no Python 3.9 found; set PYTHON39=/path/to/python3.9"; exit 1; }
	rm -rf $(RPM_EL9_VENV) && $(PYTHON39) -m venv $(RPM_EL9_VENV)
	$(RPM_EL9_VENV)/bin/python -m pip install -q --disable-pip-version-check $(FLOOR_PINS) idna==2.10 psycopg2-binary==2.8.6
	touch $@

rpm-check: rpm $(RPM_EL9_VENV)/.done
	packaging/rpm/check-rpm.sh $(RPM_LINK) $(RPM_COLLECTOR_LINK)
	packaging/rpm/check-collector-rpm.sh $(RPM_LINK) $(RPM_COLLECTOR_LINK) $(RPM_EL9_VENV)/bin/python

CI_TARGETS += rpm-check
