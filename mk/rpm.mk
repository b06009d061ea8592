# The EL9 package (DESIGN section 1: sites install contextd as an RPM in the base image).
#   make rpm        tarball of the tree + rpmbuild -bb  -> build/rpm/contextd.rpm (a symlink)
#   make rpm-check  rpmlint, install into a scratch root, check files, modes, requirements
# On a host that is not EL (CI: Debian's rpm) the EL9 macros come from packaging/rpm/el9.macros
# and build dependencies are not checked (rpm has no database of Debian's packages); %check
# then runs the tests with Debian's own python3 libraries. RPM_CHECK=0 skips %check.
RPM_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' contextd/__init__.py)
RPM_TOP     := build/rpm
RPM_LINK    := $(RPM_TOP)/contextd.rpm
RPM_SPEC    := packaging/rpm/contextd.spec
RPM_CHECK   ?= 1
RPM_FOREIGN := $(if $(wildcard /etc/redhat-release),,--load packaging/rpm/el9.macros --nodeps)
RPM_APT     := rpm rpmlint cpio busybox-static systemd openssh-client openssl python3 \
               python3-pip python3-setuptools python3-wheel python3-pytest python3-yaml \
               python3-cryptography python3-pycdlib python3-requests python3-urllib3 \
               python3-pyudev python3-systemd python3-jsonschema man-db groff-base
# Every file of the working tree that git would take (tracked or new, not ignored).
RPM_INPUTS  := $(wildcard $(shell git ls-files -co --exclude-standard 2>/dev/null))

.PHONY: rpm rpm-check rpm-deps
rpm: $(RPM_LINK)

rpm-deps:
	@packaging/ci/apt-ensure $(if $(wildcard /etc/redhat-release),,$(RPM_APT))

$(RPM_LINK): $(RPM_INPUTS) | rpm-deps
	@test -n "$(RPM_INPUTS)" || { echo "make rpm: needs a git checkout (the tarball is what git ls-files lists)"; exit 1; }
	@spec_version=$$(sed -n 's/^Version: *//p' $(RPM_SPEC)); test "$$spec_version" = "$(RPM_VERSION)" || \
	  { echo "make rpm: $(RPM_SPEC) has Version $$spec_version, contextd/__init__.py says $(RPM_VERSION)"; exit 1; }
	rm -rf $(RPM_TOP) && mkdir -p $(RPM_TOP)/SOURCES
	git ls-files -co --exclude-standard | while read -r f; do [ -e "$$f" ] && printf '%s\n' "$$f"; done | \
	  tar -czf $(RPM_TOP)/SOURCES/contextd-$(RPM_VERSION).tar.gz --owner=0 --group=0 \
	      --transform 's,^,contextd-$(RPM_VERSION)/,' -T -
	rpmbuild -bb $(RPM_FOREIGN) $(if $(filter 0,$(RPM_CHECK)),--nocheck) \
	  --define "_topdir $(abspath $(RPM_TOP))" $(RPM_SPEC) > $(RPM_TOP)/rpmbuild.log 2>&1 || \
	  { tail -n 60 $(RPM_TOP)/rpmbuild.log; echo "make rpm: rpmbuild failed (log: $(RPM_TOP)/rpmbuild.log)"; exit 1; }
	@grep -E '^[0-9]+ passed' $(RPM_TOP)/rpmbuild.log || test "$(RPM_CHECK)" = 0 || \
	  { echo "make rpm: %check ran no tests?"; exit 1; }
	ln -sf $$(cd $(RPM_TOP) && ls RPMS/noarch/contextd-$(RPM_VERSION)-*.noarch.rpm) $(RPM_LINK)
	@ls -l $(RPM_TOP)/RPMS/noarch/

rpm-check: rpm
	packaging/rpm/check-rpm.sh $(RPM_LINK)

CI_TARGETS += rpm-check
