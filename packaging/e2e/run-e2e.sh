#!/usr/bin/env bash
# make e2e-vm: boot the contextd RPM's payload in a real VM, three times.
#
# usage: run-e2e.sh RPM [SCENARIO...]
#        scenarios: signed tampered nocd killswitch configdrive packages packagefail
#        (default: all)
#
# The image is Debian bookworm from debootstrap (build-image.sh, cached by its package list)
# with Debian's own python3 libraries. contextd goes in from the RPM's payload, unchanged, at
# EL9's paths (/usr/lib/python3.9/site-packages, found by Debian's Python through one .pth
# line), and is enabled the way the RPM's %post does it (systemctl preset, our preset file).
# Each scenario boots a fresh copy of the disk under qemu with software emulation (TCG), no
# network device at all, the context ISO (if any) on an IDE CD-ROM, the kernel console on
# ttyS0 (console.log) and the guest's verdict data on ttyS1 (result.log). `configdrive` has no
# CD-ROM: an OpenStack config drive, built with Nova's genisoimage options, is a virtio disk
# labelled config-2, found by label by the policy's config-drive source. The guest powers
# itself off; a scenario that does not finish within E2E_BOOT_TIMEOUT seconds fails.
# `packages` and `packagefail` (issue 18) install from a local apt repository inside the image
# (local-repo.sh: e2e-gmond and a broken e2e-broken) and template e2e-gmond's configuration:
# the first must install, write and then see the package's service start, the second fails
# at its broken package (exit 3) and leaves no configuration and no started service.
#
# Environment: E2E_CACHE (image cache, default /var/cache/contextd-e2e), E2E_OUT (work dir,
# default build/e2e), E2E_BOOT_TIMEOUT (default 300), E2E_SOURCE (detect: the policy's
# hepix-cdrom source finds the disc through udev, the default; iso: the unit is told
# --source iso:/dev/sr0, which needs no detection).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rpm=$(readlink -f "${1:?usage: run-e2e.sh RPM [SCENARIO...]}")
shift
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(signed tampered nocd killswitch configdrive packages packagefail)
cache=${E2E_CACHE:-/var/cache/contextd-e2e}
out=$(mkdir -p "${E2E_OUT:-$repo/build/e2e}" && cd "${E2E_OUT:-$repo/build/e2e}" && pwd)
boot_timeout=${E2E_BOOT_TIMEOUT:-300}
source_mode=${E2E_SOURCE:-detect}
E2E_UUID=83679162-1378-4288-a2d4-70e13ec132aa
py=/usr/bin/python3
sitelib=/usr/lib/python3.9/site-packages

log() { echo "e2e: $*"; }
fail() { echo "e2e: FAIL: $*" >&2; exit 1; }
# After a failed boot: contextd's journal from the disk (persistent journal in the image).
post_mortem() {
    local dir=$1
    rm -rf "$dir/journal"
    debugfs -R "rdump /var/log/journal $dir" "$dir/disk.img" >/dev/null 2>&1 || return 0
    echo "e2e: the guest's journal for contextd, condor, e2e-report (from its disk):" >&2
    journalctl -D "$dir/journal" -o short-monotonic --no-pager \
        -u contextd.service -u condor.service -u e2e-report.service -u e2e-gmond.service 2>&1 | tail -n 60 >&2 || true
}
t0=$(date +%s)

image=$("$here/build-image.sh" "$cache")
t_image=$(date +%s)

# --- the VO side, on the host: a key, a payload, a signed ISO and a tampered one ------------
rm -rf "$out"/{payload,tree,scenarios} && mkdir -p "$out/payload" "$out/scenarios"
payload="$out/payload"
rpm2cpio "$rpm" | (cd "$payload" && cpio -idm --quiet)
host_contextd() { PYTHONPATH="$payload$sitelib" "$py" -s "$payload/usr/bin/contextd" "$@"; }
ssh-keygen -q -t ed25519 -N '' -C e2e-vo-key -f "$out/payload/vo-key"
now=$(date -u +%s)
cat >"$out/payload/payload.yaml" <<EOF
contextd: payload/v1
vo: atlas
serial: $(date -u +%Y%m%d)01
not_before: $(date -u -d "@$((now - 86400))" +%Y-%m-%dT%H:%M:%SZ)
expires: $(date -u -d "@$((now + 7 * 86400))" +%Y-%m-%dT%H:%M:%SZ)
targets: [{site: E2E-SITE}]
cvmfs:
  repositories: [atlas.cern.ch, sft.cern.ch]
  quota_limit_mb: 20000
htcondor:
  role: execute
  central_manager: atlas-cm.cern.ch
  attributes: {VMType: e2e-signed-worker}
  token: e2e-secret-token-never-in-a-report
EOF
host_contextd sign --key "$out/payload/vo-key" "$out/payload/payload.yaml" -o "$out/payload/bundle"
host_contextd pack iso "$out/payload/bundle" -o "$out/payload/signed.iso"
# An OpenStack config drive as Nova builds it (nova/virt/configdrive.py _make_iso9660), with a
# meta_data.json in Nova's shape and the bundle as the instance's user_data.
cd_tree="$out/payload/config-drive"
for v in latest 2018-08-27; do
    mkdir -p "$cd_tree/openstack/$v"
    printf '%s\n' "{\"uuid\": \"$E2E_UUID\", \"name\": \"e2e-worker\", \"hostname\": \"e2e-worker.novalocal\", \"launch_index\": 0, \"availability_zone\": \"e2e-zone-a\", \"project_id\": \"5f3ab3a5a6e14dbb8c2ee0e1d8e1ab21\", \"meta\": {}, \"keys\": [], \"public_keys\": {}, \"devices\": [], \"dedicated_cpus\": []}" \
        >"$cd_tree/openstack/$v/meta_data.json"
    cp "$out/payload/bundle" "$cd_tree/openstack/$v/user_data"
done
# Issue 18: a package from the site's repository, configured by a templated file (a fact and a
# var), its service started after; and the same with a package that fails to install.
packages_payload() {    # packages_payload SERIAL_SUFFIX NAME...
    local suffix=$1; shift
    cat <<EOF
contextd: payload/v1
vo: atlas
serial: $(date -u +%Y%m%d)$suffix
not_before: $(date -u -d "@$((now - 86400))" +%Y-%m-%dT%H:%M:%SZ)
expires: $(date -u -d "@$((now + 7 * 86400))" +%Y-%m-%dT%H:%M:%SZ)
targets: [{site: E2E-SITE}]
packages: {install: [$(IFS=,; echo "$*")]}
files:
  - path: /etc/e2e-gmond/gmond.conf
    mode: "0644"
    vars: {cluster: atlas-e2e-workers}
    template: |
      # e2e-gmond.conf, from the payload's template
      cluster_name = {{ vars.cluster }}
      cluster_owner = {{ facts.site }}
      host_location = {{ facts.hostname }}
EOF
}
for kind in packages packagefail; do
    case $kind in
        packages) packages_payload 02 e2e-gmond ;;
        packagefail) packages_payload 03 e2e-gmond e2e-broken ;;
    esac >"$out/payload/$kind.yaml"
    host_contextd sign --key "$out/payload/vo-key" "$out/payload/$kind.yaml" -o "$out/payload/$kind.bundle"
    host_contextd pack iso "$out/payload/$kind.bundle" -o "$out/payload/$kind.iso"
done
genisoimage -o "$out/payload/config-drive.iso" -ldots -allow-lowercase -allow-multidot -l \
    -publisher "OpenStack Compute e2e" -quiet -J -r -V config-2 "$cd_tree"
# Tampered: the same disc with one byte of the signed payload changed on it, as an attacker
# (or a broken copy) would; the signature no longer matches.
"$py" - "$out/payload/signed.iso" "$out/payload/tampered.iso" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
n = data.count(b"e2e-signed-worker")
assert n >= 1, "payload text not found on the ISO"
open(sys.argv[2], "wb").write(data.replace(b"e2e-signed-worker", b"e2e-evil00-worker"))
PY

# --- the image: base tree + the RPM payload + the e2e policy and fakes ---------------------
tree="$out/tree"
cp -a "$image/tree" "$tree"
rpm2cpio "$rpm" | (cd "$tree" && cpio -idm --quiet)
echo "$sitelib" >"$tree/usr/lib/python3/dist-packages/zz-contextd-el9-sitelib.pth"
# What the RPM's %post does on EL9 (systemd-update-helper install-system-units): presets.
chroot "$tree" systemctl preset contextd.service contextd-report.timer
[ "$(chroot "$tree" systemctl is-enabled contextd.service)" = enabled ] || fail "the preset did not enable contextd.service"
pub=$(cut -d' ' -f1,2 "$out/payload/vo-key.pub")
ssh-keygen -q -t ed25519 -N '' -C e2e-image-key -f "$out/payload/image-key"
imgpub=$(cut -d' ' -f1,2 "$out/payload/image-key.pub")
cat >"$tree/etc/contextd/policy.yaml" <<EOF
# e2e VM policy: trusts the keys this run generated, reads the CD-ROM or a config drive.
version: 1
site: E2E-SITE
sources: [hepix-cdrom, config-drive]
wait_for_source: 10s
image: {signers: [{id: e2e-image-factory, ssh_key: "$imgpub e2e-image-key"}]}
trust:
  atlas:
    signers:
      - id: e2e-vo-key
        ssh_key: "$pub e2e-vo-key"
    allow:
      cvmfs: {repositories: ["atlas*.cern.ch", "sft.cern.ch"], max_quota_mb: 50000}
      htcondor: {roles: [execute], central_managers: ["atlas-cm*.cern.ch"], attributes: [VMType]}
      packages: {names: ["e2e-*"], repos: [e2e-local]}
      files: {paths: ["/etc/e2e-gmond/*.conf"], max_bytes: 4096}
EOF
chmod 0644 "$tree/etc/contextd/policy.yaml"
# The site's package repository, inside the image (issue 18's packages scenarios).
"$here/local-repo.sh" "$tree" "$out/debs"
# The image factory's step (DESIGN section 11): sign the image's manifest, dpkg's package list
# included; the guest's report must show host.image verified.
host_contextd image sign --key "$out/payload/image-key" --root "$tree" --name e2e-worker \
    --version "$(date -u +%Y.%m.%d)" --build-id "e2e-$now"
if [ "$source_mode" = iso ]; then
    mkdir -p "$tree/etc/systemd/system/contextd.service.d"
    printf '[Service]\nExecStart=\nExecStart=/usr/bin/contextd run --source iso:/dev/sr0\n' \
        >"$tree/etc/systemd/system/contextd.service.d/e2e-source.conf"
fi
install -m 0644 "$here/guest/condor.service" "$here/guest/e2e-report.service" \
    "$here/guest/e2e-watchdog.service" "$here/guest/e2e-watchdog.timer" "$tree/etc/systemd/system/"
install -m 0755 "$here/guest/cvmfs_config" "$tree/usr/local/bin/cvmfs_config"
install -m 0755 "$here/guest/e2e-report" "$here/guest/e2e-watchdog" "$tree/usr/local/sbin/"
# What HTCondor's package does: a condor system user. The daemons read their token as it.
chroot "$tree" useradd --system --user-group --no-create-home --home-dir /var/lib/condor \
    --shell /usr/sbin/nologin condor || fail "cannot add the condor user to the image"
chroot "$tree" systemctl enable e2e-report.service e2e-watchdog.timer >/dev/null 2>&1
[ "$(chroot "$tree" systemctl is-enabled condor.service)" = disabled ] || fail "condor.service must start disabled"
mkfs.ext4 -q -F -L e2e-root -d "$tree" "$out/root.img" 2G
rm -rf "$tree"
t_prep=$(date +%s)
log "image $(basename "$image"), prepared in $((t_prep - t_image))s (source mode: $source_mode)"

# --- the boots ------------------------------------------------------------------------------
times=()
for scenario in "${scenarios[@]}"; do
    dir="$out/scenarios/$scenario"
    mkdir -p "$dir"
    cp --sparse=always "$out/root.img" "$dir/disk.img"
    cdrom=()
    append=""
    case "$scenario" in
        signed)   cdrom=(-drive "file=$out/payload/signed.iso,format=raw,media=cdrom,if=ide,readonly=on") ;;
        tampered) cdrom=(-drive "file=$out/payload/tampered.iso,format=raw,media=cdrom,if=ide,readonly=on") ;;
        nocd)     [ "$source_mode" = detect ] || fail "nocd needs E2E_SOURCE=detect: --source iso: has no wait" ;;
        killswitch) cdrom=(-drive "file=$out/payload/signed.iso,format=raw,media=cdrom,if=ide,readonly=on")
                    append=" contextd=off" ;;
        configdrive) [ "$source_mode" = detect ] || fail "configdrive needs E2E_SOURCE=detect"
                     cdrom=(-drive "file=$out/payload/config-drive.iso,format=raw,if=virtio,readonly=on") ;;
        packages|packagefail)
                  cdrom=(-drive "file=$out/payload/$scenario.iso,format=raw,media=cdrom,if=ide,readonly=on") ;;
        *) fail "unknown scenario $scenario (signed, tampered, nocd, killswitch, configdrive, packages, packagefail)" ;;
    esac
    log "boot $scenario (limit ${boot_timeout}s; console: $dir/console.log)"
    start=$(date +%s)
    code=0
    timeout --kill-after=10 "$boot_timeout" qemu-system-x86_64 \
        -machine pc -accel tcg -smp 2 -m 1024 \
        -nodefaults -display none -no-reboot -nic none \
        -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0,115200 panic=-1 systemd.firstboot=off$append" \
        -drive "file=$dir/disk.img,format=raw,if=virtio" \
        "${cdrom[@]}" \
        -serial "file:$dir/console.log" -serial "file:$dir/result.log" \
        </dev/null >"$dir/qemu.log" 2>&1 || code=$?
    took=$(( $(date +%s) - start ))
    times+=("$scenario=${took}s")
    if [ "$code" != 0 ]; then
        tail -n 60 "$dir/console.log" >&2 || true
        cat "$dir/qemu.log" >&2
        post_mortem "$dir"
        [ "$code" = 124 ] || [ "$code" = 137 ] && fail "$scenario: no power-off within ${boot_timeout}s"
        fail "$scenario: qemu exited $code"
    fi
    if ! "$py" "$here/check.py" "$scenario" "$dir"; then
        post_mortem "$dir"
        fail "$scenario (console: $dir/console.log, result: $dir/result.log)"
    fi
    rm -f "$dir/disk.img"                   # 800 MB each; kept only when a scenario fails
    log "$scenario passed in ${took}s"
done
log "all passed: image $((t_image - t0))s, prepare $((t_prep - t_image))s, ${times[*]}"
