#!/usr/bin/env bash
# The built-in demo (`make demo`): a VO signs the example payload with a throwaway key, packs
# it on a context ISO, and contextd contextualizes a scratch root against the example policy.
# Nothing outside demo-out/ is touched; commands are reported as skipped (alternate root).
set -euo pipefail
cd "$(dirname "$0")/.."
contextd=${CONTEXTD:-.venv/bin/contextd}
out=${1:-demo-out}
rm -rf "$out"
mkdir -p "$out/root"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# keygen FILE COMMENT: an unencrypted Ed25519 key (ssh-keygen, or cryptography without it)
keygen() {
    if command -v ssh-keygen >/dev/null; then
        ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1"
    else
        .venv/bin/python - "$1" "$2" <<'PY'
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

step "VO side: a throwaway signing key, the payload dated for today, signed and packed"
keygen "$out/vo-key" demo-vo-key
today=$(date -u +%Y-%m-%dT00:00:00Z)
later=$(date -u -d '+14 days' +%Y-%m-%dT00:00:00Z)
serial=$(date -u +%Y%m%d01)
# Reports go to a receiver on 127.0.0.1 that checks their HMAC; the demo contacts nothing else.
token=$(sed -n 's/^  token: \([0-9a-f]*\)$/\1/p' examples/payload.yaml)
.venv/bin/python examples/receiver.py "$token" "$out/receiver.port" > "$out/receiver.log" &
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

step "Site side: the image factory signs the image (a scratch root standing in for it)"
keygen "$out/image-key" demo-image-key
mkdir -p "$out/root/etc"
printf 'ID="rocky"\nVERSION_ID="9.4"\nIMAGE_ID=atlas-worker\nIMAGE_VERSION=2026.12.1\n' \
    > "$out/root/etc/os-release"
"$contextd" image sign --key "$out/image-key" --root "$out/root" --name atlas-worker \
    --version 2026.12.1 --site CERN-PROD 2>&1 | grep -v '^contextd: note:'

step "Site side: the example policy, trusting the demo keys"
pub=$(cut -d' ' -f1,2 "$out/vo-key.pub")
imgpub=$(cut -d' ' -f1,2 "$out/image-key.pub")
sed -e "/^image:/s|ssh_key: \"[^\"]*\"|ssh_key: \"$imgpub demo-image-key\"|" \
    -e "/^image:/!s|ssh_key: \".*\"|ssh_key: \"$pub demo-vo-key\"|" \
    -e "s|report: {urls: \[\"https://\*.example.org/\*\"\]}|report: {urls: [\"http://127.0.0.1:$port/*\"]}|" \
    -e "s|urls: \[\"https://monitor.example.org/contextd\"\]|urls: [\"http://127.0.0.1:$port/site\"]|" \
    examples/policy.yaml > "$out/policy.yaml"
chmod 644 "$out/policy.yaml"
"$contextd" policy check "$out/policy.yaml" >/dev/null && echo "policy $out/policy.yaml is valid"

step "contextd explain: what the payload would do on this site"
"$contextd" explain "$out/context.iso" --policy "$out/policy.yaml" --root "$out/root"

step "contextd run: the boot job, against a scratch root"
"$contextd" run --source "iso:$out/context.iso" --policy "$out/policy.yaml" --root "$out/root"

step "The report ($out/root/run/contextd/report.json)"
cat "$out/root/run/contextd/report.json"

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
