#!/usr/bin/env bash
# `make collector-demo`: contextd-collector on SQLite on 127.0.0.1, fed by the demo's runs
# (applied, then unchanged, then a payload the site refuses), then left running for you to
# look at. Nothing outside collector-demo-out/ is touched; Ctrl-C stops the collector.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
out=${1:-collector-demo-out}
rm -rf "$out"
mkdir -p "$out"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "The collector: its config, the demo VO's report token and the site's report key"
port=$($bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
token=$(sed -n 's/^  token: \([0-9a-f]*\)$/\1/p' examples/payload.yaml)
echo "$token" > "$out/atlas.tokens"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$out/site.key"
chmod 600 "$out/atlas.tokens" "$out/site.key"
cat > "$out/collector.yaml" <<YAML
listen: 127.0.0.1:$port
database: sqlite:///$PWD/$out/collector.db
vos: {atlas: {tokens_file: $PWD/$out/atlas.tokens}}
sites: {CERN-PROD: {report_key_file: $PWD/$out/site.key}}
YAML
cat "$out/collector.yaml"
$bin/contextd-collector migrate --config "$out/collector.yaml"
$bin/contextd-collector serve --config "$out/collector.yaml" 2> "$out/collector.log" &
collector=$!
trap 'kill $collector 2>/dev/null' EXIT
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

step "VO side: a throwaway key signs the example payload, dated for today"
ssh-keygen -q -t ed25519 -N '' -C demo-vo-key -f "$out/vo-key"
today=$(date -u +%Y-%m-%dT00:00:00Z)
later=$(date -u -d '+14 days' +%Y-%m-%dT00:00:00Z)
serial=$(date -u +%Y%m%d01)
payload() {   # payload SERIAL OUT
    sed -e "s/^not_before: .*/not_before: $today/" -e "s/^expires: .*/expires: $later/" \
        -e "s/^serial: .*/serial: $1/" \
        -e "s|^  url: https://pilot-factory.example.org/.*|  url: http://127.0.0.1:$port/v1/reports|" \
        examples/payload.yaml > "$2.yaml"
    $bin/contextd sign --key "$out/vo-key" "$2.yaml" -o "$2"
}
payload "$serial" "$out/bundle"
payload "$((serial - 1))" "$out/older-bundle"

step "Site side: the example policy, reports to the collector, the site's copy signed"
pub=$(cut -d' ' -f1,2 "$out/vo-key.pub")
mkdir -p "$out/root/etc/contextd"
cp "$out/site.key" "$out/root/etc/contextd/report.key"
sed -e "s|ssh_key: \".*\"|ssh_key: \"$pub demo-vo-key\"|" \
    -e "s|report: {urls: \[\"https://\*.example.org/\*\"\]}|report: {urls: [\"http://127.0.0.1:$port/v1/*\"]}|" \
    -e "s|^  urls: \[\"https://monitor.example.org/contextd\"\].*|  urls: [\"http://127.0.0.1:$port/v1/reports\"]\n  hmac_key_file: /etc/contextd/report.key|" \
    examples/policy.yaml > "$out/policy.yaml"
chmod 644 "$out/policy.yaml"

run() { $bin/contextd run --source "file:$1" --policy "$out/policy.yaml" --root "$out/root" || true; }
step "contextd run: applied"; run "$out/bundle"
step "contextd run again (a reboot): unchanged"; run "$out/bundle"
step "contextd run with an older serial: rejected (no rollback)"; run "$out/older-bundle"

step "What the collector stored (GET /v1/instances)"
$bin/python -c 'import json,sys,urllib.request as u; print(json.dumps(json.load(u.urlopen(sys.argv[1])), indent=1))' \
    "http://127.0.0.1:$port/v1/instances"
step "The fleet page: http://127.0.0.1:$port/  (metrics: /metrics; Ctrl-C stops the collector)"
if [ -n "${COLLECTOR_DEMO_EXIT:-}" ]; then exit 0; fi
wait $collector
