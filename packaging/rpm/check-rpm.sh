#!/usr/bin/env bash
# check-rpm.sh RPM [OTHER_RPM...]: what `make rpm-check` proves about the built package.
#   1. rpmlint: no errors and no warnings but those contextd.rpmlintrc justifies, over the spec
#      and every RPM it built (the collector's too: the rpmlintrc is shared, and rpmlint calls a
#      filter that matches nothing an error); the rest checks RPM, the agent's
#   2. requirements: exactly the EL9 packages of what the code imports (packaging/rpm/deps.py)
#   3. install with `rpm --root SCRATCH --nodeps -i` (scriptlets run, with busybox as /bin/sh)
#   4. files, modes, owners and the config file as listed below
#   5. the installed payload works: --version, policy check, a run with the default policy
#      ("skipped": it trusts nobody), and the generator with and without the ec2 source
#   6. the man pages render (man --warnings -l); systemd-analyze verify on the units
#   7. erase: scriptlets run, a policy the site edited is kept as policy.yaml.rpmsave
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rpmfile=$(readlink -f "${1:?usage: check-rpm.sh RPM [OTHER_RPM...]}")
lint_rpms=()
for f in "$@"; do lint_rpms+=("$(readlink -f "$f")"); done
fail() { echo "rpm-check: FAIL: $*" >&2; exit 1; }
step() { echo "rpm-check: $*"; }

sitelib=/usr/lib/python3.9/site-packages
py=/usr/bin/python3          # Debian's, with Debian's libraries: what an EL9 host has, newer
scratch=$(mktemp -d "${TMPDIR:-/var/tmp}/contextd-rpm-check.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

step "rpmlint (rpmlintrc: $here/contextd.rpmlintrc)"
lint_out=$(rpmlint -r "$here/contextd.rpmlintrc" "$here/contextd.spec" "${lint_rpms[@]}" 2>&1) || true
echo "$lint_out" | sed 's/^/  /'
summary=$(echo "$lint_out" | grep -E '[0-9]+ errors?, [0-9]+ warnings?' | tail -n1)
[ -n "$summary" ] || fail "no rpmlint summary line"
echo "$summary" | grep -Eq ' 0 errors, 0 warnings' ||
    fail "rpmlint: $summary (fix it, or justify a filter in contextd.rpmlintrc)"

step "requirements match the code's imports"
"$py" "$here/deps.py" "$rpmfile" || fail "requirements and imports disagree"

step "install into a scratch root"
mkdir -p "$scratch/root/bin" "$scratch/root/usr/bin"
cp /bin/busybox "$scratch/root/bin/busybox"
for tool in sh "[" test; do ln -s busybox "$scratch/root/bin/$tool"; done
rpm --root "$scratch/root" --initdb
# (Debian's rpm first says to use alien instead: not a problem of the package)
rpm --root "$scratch/root" --nodeps -i "$rpmfile" 2>&1 | grep -v "use Alien instead\|assuming you know what you are doing" | tee "$scratch/install.log" || true
rpm --root "$scratch/root" -q contextd >/dev/null || fail "contextd is not installed in the scratch root"
if grep -qi "scriptlet failed\|warning\|error" "$scratch/install.log"; then
    fail "rpm -i printed warnings or errors"
fi
rpm --root "$scratch/root" -V --nodeps contextd || fail "rpm -V: installed files differ from the package"

step "files, modes, owners"
# path mode owner:group; every packaged path must be here, and nothing else (but *.py[c]).
expected=$(cat <<EOF
/etc/contextd drwxr-xr-x root:root
/etc/contextd/policy.yaml -rw-r--r-- root:root
/usr/bin/contextd -rwxr-xr-x root:root
/usr/lib/systemd/system-generators/contextd-generator -rwxr-xr-x root:root
/usr/lib/systemd/system-preset/80-contextd.preset -rw-r--r-- root:root
/usr/lib/systemd/system/contextd.service -rw-r--r-- root:root
/usr/lib/systemd/system/contextd-report.service -rw-r--r-- root:root
/usr/lib/systemd/system/contextd-report.timer -rw-r--r-- root:root
/usr/share/contextd drwxr-xr-x root:root
/usr/share/contextd/schemas drwxr-xr-x root:root
/usr/share/contextd/schemas/payload.schema.json -rw-r--r-- root:root
/usr/share/contextd/schemas/policy.schema.json -rw-r--r-- root:root
/usr/share/contextd/schemas/report.schema.json -rw-r--r-- root:root
/usr/share/doc/contextd drwxr-xr-x root:root
/usr/share/doc/contextd/README.md -rw-r--r-- root:root
/var/lib/contextd drwx------ root:root
/var/spool/contextd drwxr-xr-x root:root
/var/spool/contextd/reports drwx------ root:root
$sitelib/contextd drwxr-xr-x root:root
$sitelib/contextd/delivery drwxr-xr-x root:root
$sitelib/contextd/image drwxr-xr-x root:root
$sitelib/contextd/schemas drwxr-xr-x root:root
$sitelib/contextd/schemas/payload.schema.json -rw-r--r-- root:root
$sitelib/contextd/schemas/policy.schema.json -rw-r--r-- root:root
$sitelib/contextd/schemas/report.schema.json -rw-r--r-- root:root
$sitelib/contextd/sources drwxr-xr-x root:root
$sitelib/contextd/trust drwxr-xr-x root:root
$sitelib/contextd/vo drwxr-xr-x root:root
$sitelib/contextd_plugins drwxr-xr-x root:root
EOF
)
rpm -qp --qf '[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME}\n]' "$rpmfile" |
    sort >"$scratch/actual"
grep -v -E "^/usr/share/man/|^$sitelib/(contextd|contextd_plugins)/.*\.py[c]? |^$sitelib/(contextd|contextd_plugins)/(.*/)?__pycache__ |^$sitelib/contextd-[^/]*\.dist-info" \
    "$scratch/actual" >"$scratch/actual.core" || true
echo "$expected" | sort >"$scratch/expected"
if ! diff -u "$scratch/expected" "$scratch/actual.core"; then
    fail "packaged files differ from the expected list (above: - expected, + packaged)"
fi
# The man pages, compressed or not as the build host's brp-compress does it, and each renders.
for page in man8/contextd.8 man5/contextd-policy.5 man5/contextd-payload.5; do
    grep -Eq "^/usr/share/man/$page(\.gz)? -rw-r--r-- root:root\$" "$scratch/actual" ||
        fail "man page $page is not packaged (rpm -qpl: $(grep -c '^/usr/share/man/' "$scratch/actual") pages)"
done
# Bytecode only for EL9's Python (brp-python-bytecompile there); none from the build host's.
foreign_pyc=$(grep -E '\.pyc ' "$scratch/actual" | grep -v '\.cpython-39\.pyc ' || true)
[ -z "$foreign_pyc" ] || fail "bytecode of another Python in the package: $foreign_pyc"
bad_py=$(grep -E "^$sitelib/.*\.py " "$scratch/actual" | grep -v -- '-rw-r--r-- root:root$' || true)
[ -z "$bad_py" ] || fail "Python files not 0644 root: $bad_py"
for f in contextd/__init__.py contextd/cli.py contextd_plugins/htcondor.py; do
    grep -q "^$sitelib/$f " "$scratch/actual" || fail "$sitelib/$f is not packaged"
done
grep -q "^$sitelib/contextd-[^/]*\.dist-info/entry_points.txt " "$scratch/actual" ||
    fail "no entry_points.txt: the plugins would not be found"
[ "$(rpm -qp --configfiles "$rpmfile")" = /etc/contextd/policy.yaml ] ||
    fail "the only config file must be /etc/contextd/policy.yaml"
# grep -x >/dev/null, not grep -q: -q stops reading at the match and, with pipefail, rpm's
# SIGPIPE on the rest of the file list would fail the check.
rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpmfile" | grep -x '/etc/contextd/policy.yaml cn' >/dev/null ||
    fail "/etc/contextd/policy.yaml is not %config(noreplace)"
rpm -qp --scripts "$rpmfile" | grep -q 'systemd-update-helper install-system-units contextd.service contextd-report.timer' ||
    fail "%post does not enable the units through the systemd scriptlets"

step "the installed payload runs (Debian's python3 on EL9's paths)"
root="$scratch/root"
export PYTHONPATH="$root$sitelib" PYTHONDONTWRITEBYTECODE=1
run_contextd() { "$py" -s "$root/usr/bin/contextd" "$@"; }
head -n1 "$root/usr/bin/contextd" | grep -qx '#!/usr/bin/python3 -s' || fail "bad shebang in /usr/bin/contextd"
head -n1 "$root/usr/lib/systemd/system-generators/contextd-generator" | grep -qx '#!/usr/bin/python3 -s' ||
    fail "bad shebang in contextd-generator"
run_contextd --version | grep -q "^contextd " || fail "contextd --version"
(cd "$scratch" && "$py" -s -c 'import contextd, sys; assert contextd.__file__.startswith(sys.argv[1]), contextd.__file__' "$root") ||
    fail "contextd is imported from somewhere else than the scratch root"
run_contextd policy check "$root/etc/contextd/policy.yaml" >/dev/null || fail "the default policy does not pass policy check"
code=0
run_contextd run --root "$root" --policy "$root/etc/contextd/policy.yaml" --json >"$scratch/report.json" || code=$?
[ "$code" = 0 ] || fail "contextd run with the default policy exited $code"
"$py" - "$scratch/report.json" "$root/run/contextd/report.json" <<'PY' || fail "default policy run is not 'skipped'"
import json, sys
for path in sys.argv[1:]:
    rep = json.load(open(path))
    assert rep["outcome"] == "skipped", rep
    assert not rep.get("actions"), rep
PY

step "contextd-generator: network-online only with the ec2 source"
gen="$root/usr/lib/systemd/system-generators/contextd-generator"
dropin=contextd.service.d/50-network-online.conf
gen_run() {  # policy-text -> the generator's output dir
    local d; d=$(mktemp -d "$scratch/gen.XXXX")
    printf '%s\n' "$1" >"$d.yaml"
    CONTEXTD_GENERATOR_POLICY="$d.yaml" "$py" -s "$gen" "$d" "$d.early" "$d.late" 2>"$d.err" ||
        fail "generator exited non-zero: $(cat "$d.err")"
    echo "$d"
}
d=$(gen_run "$(sed 's/^sources: .*/sources: [hepix-cdrom, ec2]/' "$root/etc/contextd/policy.yaml")")
grep -qx 'Wants=network-online.target' "$d/$dropin" || fail "ec2 in sources: no Wants=network-online.target"
d=$(gen_run "sources:
  - ec2")
[ -f "$d/$dropin" ] || fail "ec2 in a block list: no drop-in"
d=$(gen_run "$(cat "$root/etc/contextd/policy.yaml")")
[ ! -e "$d/$dropin" ] || fail "default policy: the generator must not add a drop-in"
d=$(gen_run "sources: [hepix-cdrom, file]")
[ ! -e "$d/$dropin" ] || fail "no ec2: the generator must not add a drop-in"
d=$(gen_run "sources: [ec2")
[ ! -e "$d/$dropin" ] || fail "broken policy: the generator must not add a drop-in"
grep -q "cannot read" "$d.err" || fail "broken policy: the generator must say why on stderr"

step "the packaged man pages render without warnings"
for page in "$root"/usr/share/man/man8/contextd.8* "$root"/usr/share/man/man5/contextd-*.5*; do
    warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page failed"
    [ -z "$warnings" ] || fail "man -l $page: $warnings"
done

step "systemd-analyze verify"
# verify loads every unit these refer to: the host's systemd units stand in for EL9's.
cp -rn /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
if ! SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --root="$root" \
        contextd.service contextd-report.service contextd-report.timer >"$scratch/verify.log" 2>&1; then
    cat "$scratch/verify.log" >&2
    fail "systemd-analyze verify"
fi
if grep -v "^$" "$scratch/verify.log" | grep -v "condor.service\|puppet.service\|autofs.service" | grep -q .; then
    cat "$scratch/verify.log" >&2
    fail "systemd-analyze verify complained"
fi

step "erase"
echo "# edited by the site" >>"$root/etc/contextd/policy.yaml"
rpm --root "$root" -e --nodeps contextd 2>&1 | grep -v "use Alien instead\|assuming you know what you are doing" |
    tee "$scratch/erase.log" || true
grep -qi "scriptlet failed\|error" "$scratch/erase.log" && fail "rpm -e printed errors"
[ -f "$root/etc/contextd/policy.yaml.rpmsave" ] || fail "the edited policy was not kept as .rpmsave"
[ ! -e "$root/usr/bin/contextd" ] && [ ! -e "$root$sitelib/contextd" ] ||
    fail "files left behind after rpm -e"

step "OK: $(basename "$rpmfile")"
