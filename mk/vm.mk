# A real boot (DESIGN section 1: contextd runs at every boot of a VM): `make e2e-vm` boots the
# RPM's payload in a Debian bookworm VM under qemu (software emulation, no network device) with
# a signed context ISO, a tampered one, none, and the signed one with contextd=off on the kernel
# command line, and an OpenStack config drive on a virtio disk (labelled config-2, no CD-ROM),
# and checks outcome, files and HTCondor. Needs root; the first run builds the
# image (debootstrap, about 3 minutes), later runs reuse it.
# See packaging/e2e/run-e2e.sh. The image is cached in E2E_CACHE, keyed by its package list.
# Scenarios packages and packagefail (issue 18) install from a local apt repository built at
# test time inside the image (packaging/e2e/local-repo.sh, dpkg-deb and dpkg-scanpackages).
#   make e2e-vm E2E_SCENARIOS="signed"     one scenario;  E2E_SOURCE=iso  without detection
E2E_APT       := debootstrap qemu-system-x86 e2fsprogs cpio rpm openssh-client python3 coreutils genisoimage \
                 systemd dpkg-dev
E2E_SCENARIOS ?=
export E2E_CACHE E2E_OUT E2E_BOOT_TIMEOUT E2E_SOURCE

.PHONY: e2e-vm
RPM_LINK ?= build/rpm/contextd.rpm
e2e-vm: $(RPM_LINK)
	@packaging/ci/apt-ensure $(E2E_APT)
	packaging/e2e/run-e2e.sh $(RPM_LINK) $(E2E_SCENARIOS)

CI_TARGETS += e2e-vm
