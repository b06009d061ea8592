#!/usr/bin/env bash
# The base image of the e2e VM: Debian bookworm from debootstrap, with a kernel, systemd, udev
# and the Python libraries contextd uses (packages.txt), but no contextd yet.
#
# usage: build-image.sh CACHE_DIR   -> prints the image directory (tree/, vmlinuz, initrd.img)
#
# The image is cached under CACHE_DIR/<key>, where the key hashes packages.txt, this script and
# the debootstrap options: the same inputs reuse the image, any change rebuilds it. Older keys
# are removed once a new image is complete. Needs root (debootstrap) and the network to the
# Debian mirror only; nothing else is downloaded.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:?usage: build-image.sh CACHE_DIR}

SUITE=bookworm
MIRROR=${E2E_MIRROR:-http://deb.debian.org/debian}
VARIANT=minbase

packages=$(sed -e "s/#.*//" -e "/^[[:space:]]*$/d" "$here/packages.txt" | awk "{print \$1}" | paste -sd, -)
key=$( { echo "$SUITE $VARIANT $MIRROR $packages"; cat "$here/build-image.sh"; } | sha256sum | cut -c1-16)
image="$cache/$key"

[ "$(id -u)" = 0 ] || { echo "build-image: debootstrap needs root" >&2; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9                                     # two runs at once build the image once

if [ -e "$image/.complete" ]; then
    echo "build-image: cached image $image" >&2
    echo "$image"
    exit 0
fi

start=$(date +%s)
work="$cache/.build-$key"
rm -rf "$work" "$image"
mkdir -p "$work"
echo "build-image: debootstrap $SUITE ($VARIANT) into $work/tree; packages: $packages" >&2
mkdir -p "$cache/debs"                      # downloaded .debs, kept for the next key
if ! debootstrap --variant="$VARIANT" --include="$packages" --components=main \
        --cache-dir="$cache/debs" \
        "$SUITE" "$work/tree" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
    tail -n 40 "$work/debootstrap.log" >&2
    [ -f "$work/tree/debootstrap/debootstrap.log" ] && tail -n 40 "$work/tree/debootstrap/debootstrap.log" >&2
    echo "build-image: debootstrap failed (log: $work/debootstrap.log)" >&2
    exit 1
fi

tree="$work/tree"
# Not a first boot: a fixed machine id, so systemd does not run systemd-firstboot (a prompt
# on the console) or apply presets to every unit (which would enable the fake condor.service).
if [ ! -s "$tree/etc/machine-id" ] || grep -qx uninitialized "$tree/etc/machine-id"; then
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$tree/etc/machine-id"
    echo >>"$tree/etc/machine-id"
fi
echo contextd-e2e >"$tree/etc/hostname"
printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$tree/etc/fstab"
# A root shell on the serial console would wait for input; nothing logs in here.
chroot "$tree" systemctl mask serial-getty@ttyS0.service getty@tty1.service getty-static.service >/dev/null 2>&1
rm -rf "$tree/var/cache/apt/archives/"*.deb "$tree/var/lib/apt/lists/"*

kver=$(ls "$tree/lib/modules" | sort -V | tail -n1)
# A small initramfs: only what mounts the root disk (virtio, ext4), not MODULES=most (36 MB,
# which software emulation unpacks and probes for 10 s at every boot).
sed -i 's/^MODULES=.*/MODULES=list/' "$tree/etc/initramfs-tools/initramfs.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' >>"$tree/etc/initramfs-tools/modules"
chroot "$tree" update-initramfs -u -k "$kver" >"$work/initramfs.log" 2>&1 ||
    { cat "$work/initramfs.log" >&2; echo "build-image: update-initramfs failed" >&2; exit 1; }
# The journal on disk, so that the host can read it after a boot that went wrong.
mkdir -p "$tree/var/log/journal"
cp "$tree/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$tree/boot/initrd.img-$kver" "$work/initrd.img"
chroot "$tree" dpkg-query -W -f '${Package} ${Version}\n' >"$work/packages.lock"
echo "$kver" >"$work/kernel"
touch "$work/.complete"
mv "$work" "$image"

# Only the current key (and the .deb cache) is kept, and no half-built image of another run.
for old in "$cache"/*/ "$cache"/.build-*/; do
    [ -d "$old" ] || continue
    case "${old%/}" in "$image"|"$cache/debs") ;; *) rm -rf "${old%/}" ;; esac
done
echo "build-image: built $image in $(( $(date +%s) - start ))s (kernel $kver)" >&2
echo "$image"
