#!/usr/bin/env bash
# The built-in demo (`make demo`): a VO signs the example payload with a throwaway key, packs
# it on a context ISO, the site explains it, contextd contextualizes a scratch root against
# the example policy and reports. A short story that fits a screen; everything in full (the
# explanation, the report, the files written, what the receiver got) with
# `make demo FULL=1` (examples/demo.sh --full [DIR]), and in DIR (default demo-out) anyway.
# Nothing outside DIR is touched; commands are reported as skipped (alternate root).
set -euo pipefail
cd "$(dirname "$0")/.."
contextd=${CONTEXTD:-.venv/bin/contextd}
python=${PYTHON:-.venv/bin/python}
full=0
if [ "${1:-}" = --full ]; then full=1; shift; fi
out=${1:-demo-out}
rm -rf "$out"
mkdir -p "$out/root/etc"
# The scratch root is an EL9 image: the report's host.image says so.
printf 'ID="almalinux"\nVERSION_ID="9.4"\nPRETTY_NAME="AlmaLinux 9.4 (demo image)"\nIMAGE_ID=atlas-worker\nIMAGE_VERSION=2026.12.1\n' \
    > "$out/root/etc/os-release"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# keygen FILE COMMENT: an unencrypted Ed25519 key (ssh-keygen, or cryptography without it)
keygen() {
    if command -v ssh-keygen >/dev/null; then
        ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1"
    else
        "$python" - "$1" "$2" <<'PY'
import sys
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
k = Ed25519PrivateKey.generate()
open(sys.argv[1], "wb").write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.OpenSSH, s.NoEncryption()))
open(sys.argv[1] + ".pub", "wb").write(k.public_key().public_bytes(s.Encoding.OpenSSH, s.PublicFormat.OpenSSH) + b" " + sys.argv[2].encode() + b"\n")
PY
    fi
    chmod 600 "$1"
}

step "1. The site's image factory signs the image (a scratch root stands in for it)"
keygen "$out/image-key" demo-image-key
"$contextd" image sign --key "$out/image-key" --root "$out/root" --name atlas-worker \
    --version 2026.12.1 --site CERN-PROD 2>&1 | grep -v '^contextd: note:' || true

step "2. The VO signs a payload (dated today) with a throwaway key and packs a context ISO"
keygen "$out/vo-key" demo-vo-key
today=$(date -u +%Y-%m-%dT00:00:00Z)
later=$(date -u -d '+14 days' +%Y-%m-%dT00:00:00Z)
serial=$(date -u +%Y%m%d01)
# Reports go to a receiver on 127.0.0.1 that checks their HMAC; the demo contacts nothing else.
token=$(sed -n 's/^  token: \([0-9a-f]*\)$/\1/p' examples/payload.yaml)
"$python" examples/receiver.py "$token" "$out/receiver.port" > "$out/receiver.log" &
receiver=$!
trap 'kill $receiver 2>/dev/null' EXIT
for _ in $(seq 50); do [ -s "$out/receiver.port" ] && break; sleep 0.1; done
port=$(cat "$out/receiver.port")
sed -e "s/^not_before: .*/not_before: $today/" -e "s/^expires: .*/expires: $later/" \
    -e "s/^serial: .*/serial: $serial/" \
    -e "s|^  url: https://pilot-factory.example.org/|  url: http://127.0.0.1:$port/|" \
    examples/payload.yaml > "$out/payload.yaml"
"$contextd" sign --key "$out/vo-key" "$out/payload.yaml" -o "$out/bundle"
"$contextd" pack iso "$out/bundle" -o "$out/context.iso"

step "3. The site's policy trusts both keys"
pub=$(cut -d' ' -f1,2 "$out/vo-key.pub")
imgpub=$(cut -d' ' -f1,2 "$out/image-key.pub")
sed -e "/^image:/s|ssh_key: \"[^\"]*\"|ssh_key: \"$imgpub demo-image-key\"|" \
    -e "/^image:/!s|ssh_key: \".*\"|ssh_key: \"$pub demo-vo-key\"|" \
    -e "s|report: {urls: \[\"https://\*.example.org/\*\"\]}|report: {urls: [\"http://127.0.0.1:$port/*\"]}|" \
    -e "s|urls: \[\"https://monitor.example.org/contextd\"\]|urls: [\"http://127.0.0.1:$port/site\"]|" \
    examples/policy.yaml > "$out/policy.yaml"
chmod 644 "$out/policy.yaml"
"$contextd" policy check "$out/policy.yaml" >/dev/null && echo "policy $out/policy.yaml is valid"

step "4. contextd explain: what the payload would do on this site, and why"
"$contextd" explain "$out/context.iso" --policy "$out/policy.yaml" --root "$out/root" \
    > "$out/explain.txt" || true
if [ "$full" = 1 ]; then cat "$out/explain.txt"; else
    grep -E '^(signature|verdict):' "$out/explain.txt"
    printf 'changes:   %s allowed, %s set by the site, %s denied (all: %s)\n' \
        "$(grep -c '^  ALLOWED' "$out/explain.txt")" "$(grep -c '^  SITE' "$out/explain.txt")" \
        "$(grep -c '^  DENIED' "$out/explain.txt")" "$out/explain.txt"
fi

step "5. contextd run: the boot job, against the scratch root $out/root"
"$contextd" run --source "iso:$out/context.iso" --policy "$out/policy.yaml" --root "$out/root"

step "6. The report, written and sent to the VO and the site"
report="$out/root/run/contextd/report.json"
"$contextd" status --root "$out/root" | cut -c1-100
"$python" - "$report" "$out/receiver.log" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
image = rep["host"]["image"]
print("host:      %s, image %s %s (%s: %s); %d actions; receiver got %d copies" % (
    rep["host"]["hostname"], image.get("os_id"), image.get("os_version_id"),
    "verified" if image.get("verified") else "NOT verified", image.get("signer")
    or image.get("reason"),
    len(rep["actions"]), sum(1 for line in open(sys.argv[2]) if "report" in line.lower())))
PY
echo "full report: $report (make demo FULL=1 shows it all)"
[ "$full" = 1 ] || exit 0

step "The report ($report)"
cat "$report"

step "The files it wrote under $out/root"
find "$out/root" -type f ! -path '*/run/contextd/*' ! -path '*/var/lib/contextd/*' \
    ! -path '*/etc/contextd/*' ! -path '*/etc/os-release' \
    ! -path '*/var/spool/contextd/*' | sort |
while read -r f; do
    printf -- '--- %s (mode %s)\n' "${f#"$out/root"}" "$(stat -c %a "$f")"
    case "$f" in *.token) echo "(secret: not shown)" ;; *) cat "$f" ;; esac
done

step "contextd status"
"$contextd" status --root "$out/root"

step "What the report receiver on 127.0.0.1 got (the VO's copy signed with its report token)"
cat "$out/receiver.log"
